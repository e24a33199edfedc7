"""Lock API: admins lock a user or a device, and lift locks.

While a lock holds, the guard service refuses the user or device everything
(the decider checks locks first, and contexts read them on every request, on
every replica). ``stop_servers`` also ends what is running now: the user's
servers, or those of users whose current login came from the locked device;
``interrupt_kernels`` interrupts those servers' busy kernels instead (see
:mod:`~nbguard.hub_plugin.guard.server_orders`).
"""

from __future__ import annotations

from datetime import datetime

from nbguard.hub_plugin.guard.elevation_records import (
    ElevationEvents,
    in_store,
)
from nbguard.hub_plugin.guard.handlers.base import APIHandler, GuardError, require_fields
from nbguard.hub_plugin.guard.handlers.elevation import query_choice
from nbguard.hub_plugin.guard.server_orders import end_what_runs

LOCK_FIELDS: dict[str, type] = {
    "kind": str,
    "value": str,
    "reason": str,
    "until": str,
    "stop_servers": bool,
    "interrupt_kernels": bool,
}
#: The optional fields of a new lock.
LOCK_OPTIONS = ("until", "stop_servers", "interrupt_kernels")


def parse_until(text: str) -> float:
    """An RFC 3339 time with a zone (``2025-01-01T17:00:00Z``) as ``time.time()`` seconds."""
    try:
        moment = datetime.fromisoformat(text) if len(text) <= 40 else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise GuardError(
            400, "bad_request", "until must be an RFC 3339 time with a zone, e.g. ...T17:00:00Z."
        )
    return moment.timestamp()


class LocksHandler(APIHandler):
    """``/api/v1/locks``: list locks (GET), lock a user or device (POST). Admins only."""

    async def get(self) -> None:
        """``active=1`` (default): locks holding now; ``active=0``: every lock."""
        who = await self.caller_context()
        active = query_choice(self, "active", ("1", "0"), "1") == "1"
        await self.require_admin(who)
        locks = await in_store(self.guard.elevations.list_locks, active_only=active)
        self.write_json({"locks": [lock.to_dict() for lock in locks]})

    async def post(self) -> None:
        """Lock; 201 with the lock and the servers stopped or interrupted, as asked."""
        body = self.json_body()
        require_fields(body, LOCK_FIELDS, optional=LOCK_OPTIONS)
        until = parse_until(body["until"]) if "until" in body else None
        who = await self.require_admin(await self.caller_context())
        lock = await in_store(
            self.guard.elevations.lock,
            kind=body["kind"],
            value=body["value"],
            reason=body["reason"],
            by=who.name,
            until=until,
        )
        await ElevationEvents(self.guard).lock(who, "lock", lock, notify="lock.created")
        hub = self.guard.hub

        async def holds(name: str) -> bool:
            if lock.kind == "user":
                return name == lock.value
            state = await hub.user_state(name, max_age=0)
            mfa = state.mfa if state is not None else None
            return mfa is not None and mfa.device_id == lock.value

        ended = await end_what_runs(self.guard, body, holds, f"lock {lock.id}")
        self.write_json({**lock.to_dict(), **ended}, status=201)


class LockHandler(APIHandler):
    """``DELETE /api/v1/locks/{id}``: lift a lock. Admins only."""

    async def delete(self, lock_id: str) -> None:
        """Lift; 200 with the lock, 409 if it no longer holds, 404 if unknown."""
        who = await self.require_admin(await self.caller_context())
        lock = await in_store(self.guard.elevations.unlock, lock_id, by=who.name)
        await ElevationEvents(self.guard).lock(who, "unlock", lock, notify="lock.lifted")
        self.write_json(lock.to_dict())
