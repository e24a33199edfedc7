"""Webhook notifications: a JSON POST per elevation or lock event, never blocking the API.

Each event is delivered in the background with a few retries and back-off; a
notification that still fails is logged, and the event itself is in the ledger
either way. The payload carries ids, names and times, never a token or a
storage location.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

#: Seconds to wait before each retry.
RETRY_DELAYS = (1.0, 4.0, 15.0)


class Notifier:
    """Posts events to ``url`` (no-op when empty)."""

    def __init__(self, url: str, *, log: logging.Logger | None = None, timeout: float = 10) -> None:
        self.url = url
        self.timeout = timeout
        self.log = log or logging.getLogger("nbguard.guard")
        self._tasks: set[asyncio.Task[None]] = set()

    def notify(self, event: str, **fields: Any) -> None:
        """Queue ``{"event": event, "time": ..., **fields}`` for delivery."""
        if not self.url:
            return
        payload = {
            "source": "nbguard",
            "event": event,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **fields,
        }
        task = asyncio.ensure_future(self._deliver(payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, payload: dict[str, Any]) -> None:
        request = HTTPRequest(
            self.url,
            method="POST",
            body=json.dumps(payload),
            headers={"Content-Type": "application/json", "User-Agent": "nbguard-guard"},
            request_timeout=self.timeout,
        )
        client = AsyncHTTPClient()
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS)):
            if delay:
                await asyncio.sleep(delay)
            try:
                await client.fetch(request)
                return
            except (HTTPClientError, OSError) as error:
                self.log.warning(
                    "nbguard guard: webhook %s attempt %d failed: %s",
                    payload["event"],
                    attempt + 1,
                    error,
                )
        self.log.error("nbguard guard: webhook %s not delivered", payload["event"])

    async def drain(self) -> None:
        """Wait for queued deliveries (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
