"""Elevation storage: requests, approvals, grants and locks in one SQL database.

SQLite (WAL) embedded, PostgreSQL for several guard-service replicas. Every
change runs in one write transaction that first locks the row it decides on
(``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite the transaction already holds
the database's write lock), re-reads the state under that lock, and changes it
with a conditional UPDATE. Unique constraints (one decision per approver and
request, one grant per request) back this up. So replicas racing on one request
serialise: at most ``required_approvals`` approvals count, exactly one grant is
made, and every loser gets a ConflictError.

The store enforces invariants (no self-approval, no second decision, no change
to a decided request), not roles: who may approve, review, revoke or lock is the
caller's policy check (see docs/elevation.md).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Table, and_, bindparam, false, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from nbguard.database import create_tables, normalise_url, open_engine, write_transaction
from nbguard.elevation import checks
from nbguard.elevation.models import (
    APPROVED,
    CANCELLED,
    DENIED,
    EXPIRED,
    PENDING,
    REVIEW_NOT_REQUIRED,
    REVIEW_REQUIRED,
    REVIEWED,
    STATUSES,
    ActiveElevation,
    ElevationGrant,
    ElevationRequest,
    Lock,
)
from nbguard.elevation.rules import ApprovalRule
from nbguard.elevation.tables import (
    Row,
    approvals_by_request,
    approvals_table,
    from_row,
    grants_table,
    locks_table,
    metadata,
    request_from_row,
    requests_table,
)
from nbguard.errors import ConfigError, ConflictError, NBGuardError, NotFoundError

# Any constant: serialises table creation between replicas (pg_advisory_xact_lock).
_SCHEMA_LOCK = 0x6E62656C6576
_MAX_LIMIT = 1000

# What every guard request reads (``ElevationStore.standing``), built once: building
# SQLAlchemy expressions per call cost as much as running them.
_ACTIVE_GRANTS = select(grants_table).where(
    grants_table.c.user == bindparam("user"),
    grants_table.c.revoked.is_(None),
    grants_table.c.starts <= bindparam("now"),
    grants_table.c.expires > bindparam("now"),
)
_HOLDING_LOCKS = select(locks_table).where(
    or_(
        and_(locks_table.c.kind == "user", locks_table.c.value == bindparam("user")),
        and_(locks_table.c.kind == "device", locks_table.c.value == bindparam("device")),
    ),
    locks_table.c.lifted.is_(None),
    or_(locks_table.c.until.is_(None), locks_table.c.until > bindparam("now")),
)


class ElevationStoreError(NBGuardError):
    """The elevation database failed; ``str()`` has the cause, ``user_message`` does not."""

    default_user_message = "Elevation is unavailable right now; try again shortly."


def _conflict(message: str) -> ConflictError:
    return ConflictError(message, user_message=message)


def _new_id(prefix: str) -> str:
    # 144 random bits; url-safe characters are valid Cedar entity ids.
    return f"{prefix}-{secrets.token_urlsafe(18)}"


class ElevationStore:
    """Requests, approvals, grants and locks. Thread-safe; any number per database."""

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        request_ttl_seconds: int = 86400,
    ) -> None:
        """Open (creating missing tables in) the database at ``url``.

        ``request_ttl_seconds``: how long a request stays pending before it reads
        as expired; each request stores its own deadline, so replicas configured
        differently still agree on every existing request.
        """
        if (
            not isinstance(request_ttl_seconds, int)
            or isinstance(request_ttl_seconds, bool)
            or request_ttl_seconds < 1
        ):
            raise ConfigError("request_ttl_seconds must be a whole number of at least 1")
        self.url = normalise_url(url, what="the elevation store")
        self.clock = clock
        self.request_ttl_seconds = request_ttl_seconds
        self.engine = open_engine(self.url)
        try:
            create_tables(self.engine, metadata, lock_key=_SCHEMA_LOCK)
        except SQLAlchemyError as error:
            self.engine.dispose()
            raise ElevationStoreError(f"cannot open the elevation database: {error}") from error

    def close(self) -> None:
        """Release every database connection."""
        self.engine.dispose()

    # -- transactions -------------------------------------------------------------

    @contextmanager
    def _storage(self, doing: str) -> Iterator[None]:
        try:
            yield
        except IntegrityError as error:
            # A constraint caught what the row lock should have: someone else won.
            raise _conflict(f"this {doing} conflicts with a change made at the same time") from (
                error
            )
        except SQLAlchemyError as error:
            raise ElevationStoreError(f"elevation store: {doing} failed: {error}") from error

    @contextmanager
    def _write(self, doing: str) -> Iterator[Connection]:
        with self._storage(doing), write_transaction(self.engine) as connection:
            yield connection

    @contextmanager
    def _read(self, doing: str) -> Iterator[Connection]:
        with self._storage(doing), self.engine.connect() as connection:
            yield connection

    @staticmethod
    def _row(connection: Connection, table: Table, row_id: Any, what: str, *, lock: bool) -> Row:
        if not isinstance(row_id, str) or len(row_id) > 64:
            raise NotFoundError(f"no {what} {row_id!r}", user_message=f"No such {what}.")
        query = select(table).where(table.c.id == row_id)
        if lock:
            query = query.with_for_update()
        row = connection.execute(query).mappings().first()
        if row is None:
            raise NotFoundError(f"no {what} {row_id!r}", user_message=f"No such {what}.")
        return row

    @staticmethod
    def _change(
        connection: Connection, table: Table, row_id: str, when: Any, **values: Any
    ) -> None:
        """UPDATE one row only if ``when`` still holds; anything else is a lost race."""
        result = connection.execute(
            update(table).where(table.c.id == row_id, when).values(**values)
        )
        if result.rowcount != 1:
            raise _conflict("this changed at the same time; reload and try again")

    def _load_request(
        self, connection: Connection, request_id: str, now: float, *, lock: bool = False
    ) -> ElevationRequest:
        row = self._row(connection, requests_table, request_id, "elevation request", lock=lock)
        approvals = connection.execute(
            select(approvals_table)
            .where(approvals_table.c.request_id == request_id)
            .order_by(approvals_table.c.id)
        ).mappings()
        return request_from_row(row, approvals_by_request(approvals).get(request_id, []), now)

    # -- requests -----------------------------------------------------------------

    def create_request(
        self,
        *,
        requester: str,
        role: str = "",
        action: str = "",
        target: str = "",
        duration_seconds: int,
        reason: str,
        environment: str,
        sensitivity: str,
        rule: ApprovalRule,
    ) -> ElevationRequest:
        """Record a pending request needing ``rule.approvals`` approvals.

        ``rule`` must come from ``ApprovalRules.rule_for`` on these same values.
        Raises RequestError naming the field for bad input.
        """
        values = self._request_values(
            requester, role, action, target, duration_seconds, reason, environment, sensitivity
        )
        checks.duration(duration_seconds, rule)
        values.update(status=PENDING, required_approvals=rule.approvals, break_glass=False)
        with self._write("creating a request") as connection:
            connection.execute(insert(requests_table).values(**values))
        return request_from_row(values, (), values["created"])

    def _request_values(
        self,
        requester: Any,
        role: Any,
        action: Any,
        target: Any,
        duration_seconds: Any,
        reason: Any,
        environment: Any,
        sensitivity: Any,
        *,
        who: str = "requester",
    ) -> dict[str, Any]:
        now = self.clock()
        return {
            "id": _new_id("req"),
            "requester": checks.name(who, requester),
            "kind": checks.what(role, action, target, sensitivity),
            "role": role,
            "action": action,
            "target": target,
            "duration_seconds": duration_seconds,
            "reason": checks.text("reason", reason, required=True),
            "environment": checks.environment(environment),
            "sensitivity": sensitivity,
            "created": now,
            "expires": now + self.request_ttl_seconds,
            "decided": None,
            "grant_id": None,
        }

    def get_request(self, request_id: str) -> ElevationRequest:
        """The request as of now; NotFoundError if there is none."""
        with self._read("reading a request") as connection:
            return self._load_request(connection, request_id, self.clock())

    def list_requests(
        self,
        *,
        requester: str | None = None,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[ElevationRequest]:
        """Requests newest first, optionally of one requester and in one status (as of now);
        ``limit`` is capped at 1000."""
        if status is not None:
            checks.choice("status", status, STATUSES)
        for field, value, low in (("limit", limit, 1), ("offset", offset, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value:
                raise checks.refuse(f"{field} must be a whole number of at least {low}")
        now = self.clock()
        table = requests_table
        query = select(table).order_by(table.c.created.desc(), table.c.id)
        if requester is not None:
            query = query.where(table.c.requester == requester)
        if status == PENDING:
            query = query.where(table.c.status == PENDING, table.c.expires > now)
        elif status == EXPIRED:
            query = query.where(
                or_(
                    table.c.status == EXPIRED,
                    and_(table.c.status == PENDING, table.c.expires <= now),
                )
            )
        elif status is not None:
            query = query.where(table.c.status == status)
        query = query.limit(min(limit, _MAX_LIMIT)).offset(offset)
        with self._read("listing requests") as connection:
            rows = connection.execute(query).mappings().all()
            ids = [row["id"] for row in rows]
            approvals = approvals_by_request(
                connection.execute(
                    select(approvals_table)
                    .where(approvals_table.c.request_id.in_(ids) if ids else false())
                    .order_by(approvals_table.c.id)
                ).mappings()
            )
        return [request_from_row(row, approvals.get(row["id"], []), now) for row in rows]

    def decide(
        self, request_id: str, *, approver: str, approve: bool, comment: str
    ) -> ElevationRequest:
        """Record ``approver``'s approval or denial; return the request after it.

        A denial (comment required) ends the request; the approval that reaches
        ``required_approvals`` approves it and creates its one grant, from now for
        ``duration_seconds``. ConflictError for the requester deciding, a second
        decision by one approver, or a request no longer pending.
        """
        approver = checks.name("approver", approver)
        if not isinstance(approve, bool):
            raise checks.refuse("approve must be true or false")
        comment = checks.text("comment", comment, required=not approve)
        with self._write("deciding a request") as connection:
            now = self.clock()
            request = self._load_request(connection, request_id, now, lock=True)
            if checks.same_person(approver, request.requester):
                raise _conflict("you cannot decide your own elevation request")
            if request.status != PENDING:
                raise _conflict(f"this elevation request is already {request.status}")
            if any(checks.same_person(approver, a.approver) for a in request.approvals):
                raise _conflict("you have already decided this elevation request")
            connection.execute(
                insert(approvals_table).values(
                    request_id=request.id,
                    approver=approver,
                    verdict="approve" if approve else "deny",
                    comment=comment,
                    time=now,
                )
            )
            still_pending = and_(requests_table.c.status == PENDING, requests_table.c.expires > now)
            approvals = 1 + sum(a.verdict == "approve" for a in request.approvals)
            if not approve:
                self._change(
                    connection,
                    requests_table,
                    request.id,
                    still_pending,
                    status=DENIED,
                    decided=now,
                )
            elif approvals >= request.required_approvals:
                grant_id = self._insert_grant(connection, request, now, review=REVIEW_NOT_REQUIRED)
                self._change(
                    connection,
                    requests_table,
                    request.id,
                    still_pending,
                    status=APPROVED,
                    decided=now,
                    grant_id=grant_id,
                )
            return self._load_request(connection, request.id, now)

    @staticmethod
    def _insert_grant(
        connection: Connection, request: ElevationRequest, now: float, *, review: str
    ) -> str:
        grant_id = _new_id("grant")
        connection.execute(
            insert(grants_table).values(
                id=grant_id,
                request_id=request.id,
                user=request.requester,
                role=request.role,
                action=request.action,
                target=request.target,
                starts=now,
                expires=now + request.duration_seconds,
                break_glass=request.break_glass,
                revoked=None,
                review_status=review,
            )
        )
        return grant_id

    def cancel(self, request_id: str, *, by: str) -> ElevationRequest:
        """Cancel a pending request; only its requester may (ConflictError otherwise)."""
        by = checks.name("by", by)
        with self._write("cancelling a request") as connection:
            now = self.clock()
            request = self._load_request(connection, request_id, now, lock=True)
            if not checks.same_person(by, request.requester):
                raise _conflict("only the requester can cancel an elevation request")
            if request.status != PENDING:
                raise _conflict(f"this elevation request is already {request.status}")
            self._change(
                connection,
                requests_table,
                request.id,
                requests_table.c.status == PENDING,
                status=CANCELLED,
                decided=now,
            )
            return self._load_request(connection, request.id, now)

    def break_glass(
        self,
        *,
        user: str,
        role: str = "",
        action: str = "",
        target: str = "",
        duration_seconds: int,
        reason: str,
        environment: str,
        sensitivity: str,
        rule: ApprovalRule,
    ) -> ElevationGrant:
        """Grant at once, without approval, where ``rule.break_glass`` allows it.

        Recorded as an approved break-glass request; the grant's review status is
        ``required`` until someone else reviews it. RequestError if not allowed.
        """
        values = self._request_values(
            user,
            role,
            action,
            target,
            duration_seconds,
            reason,
            environment,
            sensitivity,
            who="user",
        )
        if not rule.break_glass:
            raise checks.refuse("break-glass is not allowed for this; request approval instead")
        checks.duration(duration_seconds, rule)
        now = values["created"]
        values.update(status=APPROVED, required_approvals=0, break_glass=True, decided=now)
        with self._write("break-glass") as connection:
            connection.execute(insert(requests_table).values(**values))
            request = request_from_row(values, (), now)
            grant_id = self._insert_grant(connection, request, now, review=REVIEW_REQUIRED)
            connection.execute(
                update(requests_table)
                .where(requests_table.c.id == values["id"])
                .values(grant_id=grant_id)
            )
            return self._grant(connection, grant_id, lock=False)

    # -- grants -------------------------------------------------------------------

    def _grant(self, connection: Connection, grant_id: str, *, lock: bool) -> ElevationGrant:
        return from_row(
            ElevationGrant, self._row(connection, grants_table, grant_id, "grant", lock=lock)
        )

    def get_grant(self, grant_id: str) -> ElevationGrant:
        """The grant; NotFoundError if there is none."""
        with self._read("reading a grant") as connection:
            return self._grant(connection, grant_id, lock=False)

    def list_grants(
        self, *, user: str | None = None, active_only: bool = True, now: float | None = None
    ) -> list[ElevationGrant]:
        """Grants newest first, of one user or all; with ``active_only`` those in force at
        ``now`` (default: the clock)."""
        now = self.clock() if now is None else now
        query = select(grants_table).order_by(grants_table.c.starts.desc(), grants_table.c.id)
        if user is not None:
            query = query.where(grants_table.c.user == user)
        if active_only:
            query = query.where(*self._in_force(now))
        with self._read("listing grants") as connection:
            return [from_row(ElevationGrant, row) for row in connection.execute(query).mappings()]

    @staticmethod
    def _in_force(now: float) -> tuple[Any, ...]:
        return (
            grants_table.c.revoked.is_(None),
            grants_table.c.starts <= now,
            grants_table.c.expires > now,
        )

    def active(self, user: str) -> ActiveElevation:
        """The roles and grants ``user`` holds now."""
        return self.standing(user)[0]

    def standing(self, user: str, *, device_id: str = "") -> tuple[ActiveElevation, list[Lock]]:
        """What ``user`` holds now and the locks on them or ``device_id``, in one read.

        The guard service asks this on every request (so a revocation or a lock
        counts on the next one, on every replica); one connection, two indexed
        queries built once.
        """
        # Locked names are printable (checks.name): a newline matches no device lock.
        values = {"user": user, "device": device_id or "\n", "now": self.clock()}
        with self._read("reading grants and locks") as connection:
            grants = connection.execute(_ACTIVE_GRANTS, values).mappings()
            active = ActiveElevation.of([from_row(ElevationGrant, row) for row in grants])
            locks = connection.execute(_HOLDING_LOCKS, values).mappings()
            return active, [from_row(Lock, row) for row in locks]

    def review(self, grant_id: str, *, reviewer: str, comment: str) -> ElevationGrant:
        """Mark a break-glass grant reviewed (comment required); never by its own user."""
        reviewer = checks.name("reviewer", reviewer)
        comment = checks.text("comment", comment, required=True)
        with self._write("reviewing a grant") as connection:
            grant = self._grant(connection, grant_id, lock=True)
            if grant.review_status != REVIEW_REQUIRED:
                raise _conflict(
                    "this grant was already reviewed"
                    if grant.review_status == REVIEWED
                    else "only break-glass grants are reviewed"
                )
            if checks.same_person(reviewer, grant.user):
                raise _conflict("you cannot review your own break-glass grant")
            self._change(
                connection,
                grants_table,
                grant.id,
                grants_table.c.review_status == REVIEW_REQUIRED,
                review_status=REVIEWED,
                reviewed_by=reviewer,
                review_comment=comment,
                reviewed=self.clock(),
            )
            return self._grant(connection, grant.id, lock=False)

    def revoke(self, grant_id: str, *, by: str, reason: str) -> ElevationGrant:
        """End a grant now; ConflictError if it is already revoked or expired."""
        by = checks.name("by", by)
        reason = checks.text("reason", reason, required=True)
        with self._write("revoking a grant") as connection:
            now = self.clock()
            grant = self._grant(connection, grant_id, lock=True)
            if grant.revoked is not None:
                raise _conflict("this grant is already revoked")
            if grant.expires <= now:
                raise _conflict("this grant has already expired")
            self._change(
                connection,
                grants_table,
                grant.id,
                grants_table.c.revoked.is_(None),
                revoked=now,
                revoked_by=by,
                revoke_reason=reason,
            )
            return self._grant(connection, grant.id, lock=False)

    # -- locks --------------------------------------------------------------------

    def lock(
        self, *, kind: str, value: str, reason: str, by: str, until: float | None = None
    ) -> Lock:
        """Lock a user or a device until ``until`` (``time.time()`` seconds) or until lifted."""
        now = self.clock()
        values = {
            "id": _new_id("lock"),
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
        with self._write("locking") as connection:
            connection.execute(insert(locks_table).values(**values))
        return from_row(Lock, values)

    def unlock(self, lock_id: str, *, by: str) -> Lock:
        """Lift an active lock; ConflictError if it was lifted or has run out."""
        by = checks.name("by", by)
        with self._write("unlocking") as connection:
            now = self.clock()
            lock = from_row(Lock, self._row(connection, locks_table, lock_id, "lock", lock=True))
            if not lock.active(now):
                raise _conflict("this lock is no longer active")
            self._change(
                connection,
                locks_table,
                lock.id,
                locks_table.c.lifted.is_(None),
                lifted=now,
                lifted_by=by,
            )
            return from_row(Lock, self._row(connection, locks_table, lock.id, "lock", lock=False))

    def list_locks(self, *, active_only: bool = True) -> list[Lock]:
        """Locks newest first; with ``active_only`` those holding now."""
        query = select(locks_table).order_by(locks_table.c.created.desc(), locks_table.c.id)
        if active_only:
            query = query.where(*self._holding(self.clock()))
        with self._read("listing locks") as connection:
            return [from_row(Lock, row) for row in connection.execute(query).mappings()]

    @staticmethod
    def _holding(now: float) -> tuple[Any, ...]:
        return (
            locks_table.c.lifted.is_(None),
            or_(locks_table.c.until.is_(None), locks_table.c.until > now),
        )

    def locks_for(self, *, user: str, device_id: str = "") -> list[Lock]:
        """Active locks on ``user`` or on ``device_id``."""
        return self.standing(user, device_id=device_id)[1]
