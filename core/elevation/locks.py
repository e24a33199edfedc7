"""Locks on a user or a device: everything is refused to them while a lock holds."""

from __future__ import annotations

from sqlalchemy import and_, bindparam, insert, or_, select

from nbguard.elevation import checks
from nbguard.elevation.models import Lock
from nbguard.elevation.storage import StoreBase, conflict, new_id
from nbguard.elevation.tables import from_row, locks_table

#: A lock holds at ``:now``: not lifted, and without an end or before it.
LOCK_HOLDS = (
    locks_table.c.lifted.is_(None),
    or_(locks_table.c.until.is_(None), locks_table.c.until > bindparam("now")),
)
#: Locks holding at ``:now`` on user ``:user`` or on device ``:device`` (built once:
#: the guard service reads it on every request).
HOLDING_LOCKS = select(locks_table).where(
    or_(
        and_(locks_table.c.kind == "user", locks_table.c.value == bindparam("user")),
        and_(locks_table.c.kind == "device", locks_table.c.value == bindparam("device")),
    ),
    *LOCK_HOLDS,
)


class LockStore(StoreBase):
    """Lock, lift and list locks."""

    def lock(
        self, *, kind: str, value: str, reason: str, by: str, until: float | None = None
    ) -> Lock:
        """Lock a user or a device until ``until`` (``time.time()`` seconds) or until lifted."""
        now = self.clock()
        values = {
            "id": new_id("lock"),
            "kind": checks.lock_kind(kind),
            "value": checks.name("value", value),
            "reason": checks.text("reason", reason, required=True),
            "created_by": checks.name("by", by),
            "created": now,
            "until": until,
            "lifted": None,
            "lifted_by": "",
        }
        if until is not None and (
            not isinstance(until, int | float) or isinstance(until, bool) or until <= now
        ):
            raise checks.refuse("until must be a time in the future, or none")
        with self.write("locking") as connection:
            connection.execute(insert(locks_table).values(**values))
        return from_row(Lock, values)

    def unlock(self, lock_id: str, *, by: str) -> Lock:
        """Lift an active lock; ConflictError if it was lifted or has run out."""
        by = checks.name("by", by)
        with self.write("unlocking") as connection:
            now = self.clock()
            lock = from_row(Lock, self.row(connection, locks_table, lock_id, "lock", lock=True))
            if not lock.active(now):
                raise conflict("this lock is no longer active")
            self.change(
                connection,
                locks_table,
                lock.id,
                locks_table.c.lifted.is_(None),
                lifted=now,
                lifted_by=by,
            )
            return from_row(Lock, self.row(connection, locks_table, lock.id, "lock", lock=False))

    def list_locks(self, *, active_only: bool = True) -> list[Lock]:
        """Locks newest first; with ``active_only`` those holding now."""
        query = select(locks_table).order_by(locks_table.c.created.desc(), locks_table.c.id)
        if active_only:
            query = query.where(*LOCK_HOLDS)
        with self.read("listing locks") as connection:
            rows = connection.execute(query, {"now": self.clock()}).mappings()
            return [from_row(Lock, row) for row in rows]

    def locks_for(self, *, user: str, device_id: str = "") -> list[Lock]:
        """Active locks on ``user`` or on ``device_id`` (one indexed query)."""
        with self.read("reading locks") as connection:
            rows = connection.execute(HOLDING_LOCKS, self.lock_keys(user, device_id)).mappings()
            return [from_row(Lock, row) for row in rows]

    def lock_keys(self, user: str, device_id: str) -> dict[str, object]:
        """Parameters of ``HOLDING_LOCKS`` now."""
        # Locked names are printable (checks.name): a newline matches no device lock.
        return {"user": user, "device": device_id or "\n", "now": self.clock()}
