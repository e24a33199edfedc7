"""The lifetime cap of a guarded server: a timer that stops it at its deadline.

:class:`LifetimeCap` holds the timer and the stop at the cap for
:class:`~nbguard.hub_plugin.spawner.PolicySpawnerMixin`, which arms it from
``start_polling`` and checks the deadline again in every ``poll``; the
``server_stop`` ledger record is written here too.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from nbguard.errors import LedgerError
from nbguard.hub_plugin.spawner_lease import SpawnLease, rfc3339
from nbguard.hub_plugin.spawner_refusal import SpawnRefused

#: Seconds before trying again to stop a server whose stop at the cap failed.
STOP_RETRY = 10.0


class LifetimeCap:
    """The deadline timer and the stop at the cap (a part of the spawner mixin)."""

    # Provided by the spawner this is mixed into.
    log: Any
    name: str
    user: Any
    _log_name: str
    _nbguard_lease: SpawnLease | None
    _nbguard_stop_reason: str

    _nbguard_timer: asyncio.TimerHandle | None = None
    _nbguard_task: asyncio.Future[Any] | None = None

    def _nbguard_arm(self, delay: float | None = None) -> None:
        lease = self._nbguard_lease
        if lease is None:
            return
        self._nbguard_disarm()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop: the checks in poll still apply
        wait = max(0.0, lease.remaining()) if delay is None else delay
        self._nbguard_timer = loop.call_later(wait, self._nbguard_due)

    def _nbguard_disarm(self) -> None:
        if self._nbguard_timer is not None:
            self._nbguard_timer.cancel()
            self._nbguard_timer = None

    def _nbguard_due(self) -> None:
        self._nbguard_timer = None
        self._nbguard_task = asyncio.ensure_future(self._nbguard_enforce())

    async def _nbguard_enforce(self) -> None:
        lease = self._nbguard_lease
        try:
            # poll stops the server; poll_and_notify then tells the hub, which
            # removes the route and cleans up as for any server that stopped.
            await self.poll_and_notify()
        except Exception:
            self.log.exception("nbguard: stopping %s at its cap failed", self._log_name)
        if lease is not None and self._nbguard_lease is lease:
            remaining = lease.remaining()
            self._nbguard_arm(remaining if remaining > 0 else STOP_RETRY)

    async def _nbguard_stop_at_cap(self, lease: SpawnLease) -> None:
        self.log.warning(
            "nbguard: stopping %s: its lifetime cap (%s) has passed",
            self._log_name,
            lease.deadline_text,
        )
        self._nbguard_stop_reason = "lifetime"
        try:
            await self.stop()
        except Exception:
            self.log.exception("nbguard: could not stop %s at its cap", self._log_name)
        finally:
            self._nbguard_stop_reason = "requested"

    async def _nbguard_record_stop(self, lease: SpawnLease, reason: str) -> None:
        body = {
            "server_name": self.name[:256],
            "profile": lease.profile,
            "reason": reason,
            "correlation_id": lease.correlation_id,
            "deadline": rfc3339(lease.deadline),
            "ran_s": max(0, int(time.time()) - lease.started),
        }
        try:
            guard = self.nbguard_guard()
            await guard.ledger.append_async(
                "server_stop",
                body,
                actor=self.user.name[:256],
                session=lease.session_id or None,
            )
        except (SpawnRefused, LedgerError, OSError, RuntimeError) as error:
            # The server is stopped either way; a missing record is for the admin.
            self.log.error(
                "nbguard: server_stop record for %s not written: %s", self._log_name, error
            )
