"""Pending logins: a primary login that succeeded and waits for its second factor.

The auth model stays in the hub's memory; the browser holds only a random
token in a signed, HttpOnly cookie. A pending login is bound to that browser
(token, User-Agent, client address), lives ``ttl`` seconds, is used once, and
is dropped after too many wrong codes. Nothing in it reaches the browser.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nbguard.hub_plugin.request_context import Observation

#: Upper bound on pending logins held at once; the oldest go first past it.
MAX_PENDING = 10_000


@dataclass
class PendingLogin:
    """One primary login waiting for a second factor."""

    token: str
    username: str
    auth_model: dict[str, Any]
    observation: Observation
    risk: str
    next_url: str
    created: float
    session_id: str = field(default_factory=lambda: secrets.token_hex(16))
    failures: int = 0
    #: The TOTP secret offered at enrolment, until the user confirms it.
    enrol_secret: str | None = None
    #: The queued ledger record of the primary login (a ``PendingReceipt``),
    #: awaited before the login completes.
    primary_record: Any = None

    def binds(self, observation: Observation) -> bool:
        """True when ``observation`` comes from the browser that started this login."""
        return hmac.compare_digest(
            observation.user_agent.encode(), self.observation.user_agent.encode()
        ) and (observation.client_ip == self.observation.client_ip)


class PendingLogins:
    """The hub's pending logins, by token."""

    def __init__(self, *, ttl: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._items: dict[str, PendingLogin] = {}
        self._lock = threading.Lock()

    def create(
        self,
        *,
        username: str,
        auth_model: dict[str, Any],
        observation: Observation,
        risk: str,
        next_url: str,
        session_id: str = "",
        primary_record: Any = None,
    ) -> PendingLogin:
        """Hold a new pending login and return it (its ``token`` goes in the cookie).

        ``session_id`` is the login session the primary login was recorded in (a
        new one is drawn when empty); ``primary_record`` the receipt of that record.
        """
        now = self._clock()
        pending = PendingLogin(
            token=secrets.token_urlsafe(32),
            username=username,
            auth_model=auth_model,
            observation=observation,
            risk=risk,
            next_url=next_url,
            created=now,
            primary_record=primary_record,
            **({"session_id": session_id} if session_id else {}),
        )
        with self._lock:
            self._expire(now)
            while len(self._items) >= MAX_PENDING:
                self._items.pop(next(iter(self._items)))
            self._items[pending.token] = pending
        return pending

    def get(self, token: str | None) -> PendingLogin | None:
        """The live pending login for ``token``, or None (unknown, expired or used)."""
        if not token:
            return None
        with self._lock:
            self._expire(self._clock())
            return self._items.get(token)

    def discard(self, token: str) -> PendingLogin | None:
        """Remove a pending login (used, abandoned or failed too often); return it."""
        with self._lock:
            return self._items.pop(token, None)

    def remaining(self, pending: PendingLogin) -> int:
        """Seconds left before ``pending`` expires."""
        return max(0, int(pending.created + self.ttl - self._clock()))

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._items)

    def _expire(self, now: float) -> None:
        # Insertion order is creation order, so expired entries are at the front.
        while self._items:
            token, oldest = next(iter(self._items.items()))
            if now - oldest.created < self.ttl:
                break
            del self._items[token]
