"""The guard service's cross-check of the two witnesses, run every few seconds.

Each pass asks the execution store to pair what the kernel and the server
reported and to walk each stream's sequence numbers; what one witness alone
reported after ``GuardService.witness_grace_seconds``, and every gap, becomes
an ``alert`` ledger record (subject: the user), written inside the store's
transaction so that it is written exactly when the store keeps the alert.
Several replicas run passes; the store lets one at a time decide, so each
alert is raised once. Webhook receivers get ``alert.witness`` too.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from nbguard.errors import NBGuardError
from nbguard.executions.alerts import WitnessAlert

if TYPE_CHECKING:
    from nbguard.hub_plugin.guard.app import GuardService


class WitnessChecker:
    """Runs cross-check passes for a service: on a timer, or one on demand."""

    def __init__(self, guard: GuardService) -> None:
        self.guard = guard
        self._task: asyncio.Task[None] | None = None

    async def check(
        self, *, now: float | None = None, grace_seconds: float | None = None
    ) -> list[WitnessAlert]:
        """One pass (at ``now``, default the clock; with ``grace_seconds``, default the
        service's setting); the new alerts, already in the ledger.

        Raises the store's or the ledger's error; nothing is decided then.
        """
        grace = self.guard.witness_grace_seconds if grace_seconds is None else grace_seconds
        alerts = await asyncio.to_thread(
            self.guard.executions.cross_check,
            grace_seconds=grace,
            now=now,
            on_alerts=self._record,
        )
        for alert in alerts:
            self.guard.log.warning(
                "nbguard guard: %s alert for %s: %s", alert.kind, alert.user, alert.message
            )
            self.guard.notifier.notify("alert.witness", alert=alert.to_dict())
        return alerts

    def _record(self, alerts: list[WitnessAlert]) -> None:
        """Write the alerts to the ledger (in the store's transaction, on its thread)."""
        actor = self.guard.service_name
        self.guard.ledger.append_many(("alert", a.ledger_body(), actor, None) for a in alerts)

    def start(self) -> None:
        """Run a pass every ``GuardService.witness_check_interval`` seconds (in this loop)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        """Stop the timer (a pass under way finishes or rolls back on its own)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.guard.witness_check_interval)
            try:
                await self.check()
            except NBGuardError as error:
                # The store or the ledger is down: the next pass finds the same work.
                self.guard.log.error("nbguard guard: witness cross-check failed: %s", error)
            except Exception:  # a bug must not end the timer for good
                self.guard.log.exception("nbguard guard: witness cross-check failed")
