"""Elevation storage: requests, approvals, grants and locks in one SQL database.

SQLite (WAL) embedded, PostgreSQL for several guard-service replicas. Every
change is one locked, conditional write transaction (see
:mod:`nbguard.elevation.storage`; locks live in :mod:`nbguard.elevation.locks`).
Unique constraints (one decision per approver and
request, one grant per request) back this up. So replicas racing on one request
serialise: at most ``required_approvals`` approvals count, exactly one grant is
made, and every loser gets a ConflictError.

The store enforces invariants (no self-approval, no second decision, no change
to a decided request), not roles: who may approve, review, revoke or lock is the
caller's policy check (see docs/elevation.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, bindparam, false, insert, or_, select, update

from nbguard.elevation import checks
from nbguard.elevation.locks import HOLDING_LOCKS, LockStore
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
from nbguard.elevation.storage import ElevationStoreError, conflict, new_id
from nbguard.elevation.tables import (
    approvals_by_request,
    approvals_table,
    from_row,
    grants_table,
    request_from_row,
    requests_table,
)
from nbguard.errors import ConfigError

__all__ = ["ElevationStore", "ElevationStoreError", "Standing"]

_MAX_LIMIT = 1000

#: A grant is in force at ``:now``: not revoked, started and not yet expired.
GRANT_IN_FORCE = (
    grants_table.c.revoked.is_(None),
    grants_table.c.starts <= bindparam("now"),
    grants_table.c.expires > bindparam("now"),
)
# What every guard request reads (``ElevationStore.standing``), built once: building
# SQLAlchemy expressions per call cost as much as running them.
#: Grants of ``:user`` that are or will be in force after ``:now`` (those not started
#: yet too, so that a reader knows when its answer changes with time alone).
_UNEXPIRED_GRANTS = select(grants_table).where(
    grants_table.c.user == bindparam("user"),
    grants_table.c.revoked.is_(None),
    grants_table.c.expires > bindparam("now"),
)


@dataclass(frozen=True, slots=True)
class Standing:
    """What a user holds and the locks on them or their device, as read at ``read_at``.

    The answer stays true until ``until`` (a grant expires or starts, a lock
    ends) unless the database changes first.
    """

    elevation: ActiveElevation
    locks: tuple[Lock, ...]
    read_at: float
    until: float


class ElevationStore(LockStore):
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
        super().__init__(url, clock=clock)
        self.request_ttl_seconds = request_ttl_seconds

    def _load_request(
        self, connection: Connection, request_id: str, now: float, *, lock: bool = False
    ) -> ElevationRequest:
        row = self.row(connection, requests_table, request_id, "elevation request", lock=lock)
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
        with self.write("creating a request") as connection:
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
            "id": new_id("req"),
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
        with self.read("reading a request") as connection:
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
        with self.read("listing requests") as connection:
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
        with self.write("deciding a request") as connection:
            now = self.clock()
            request = self._load_request(connection, request_id, now, lock=True)
            if checks.same_person(approver, request.requester):
                raise conflict("you cannot decide your own elevation request")
            if request.status != PENDING:
                raise conflict(f"this elevation request is already {request.status}")
            if any(checks.same_person(approver, a.approver) for a in request.approvals):
                raise conflict("you have already decided this elevation request")
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
                self.change(
                    connection,
                    requests_table,
                    request.id,
                    still_pending,
                    status=DENIED,
                    decided=now,
                )
            elif approvals >= request.required_approvals:
                grant_id = self._insert_grant(connection, request, now, review=REVIEW_NOT_REQUIRED)
                self.change(
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
        grant_id = new_id("grant")
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
        with self.write("cancelling a request") as connection:
            now = self.clock()
            request = self._load_request(connection, request_id, now, lock=True)
            if not checks.same_person(by, request.requester):
                raise conflict("only the requester can cancel an elevation request")
            if request.status != PENDING:
                raise conflict(f"this elevation request is already {request.status}")
            self.change(
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
        with self.write("break-glass") as connection:
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
            ElevationGrant, self.row(connection, grants_table, grant_id, "grant", lock=lock)
        )

    def get_grant(self, grant_id: str) -> ElevationGrant:
        """The grant; NotFoundError if there is none."""
        with self.read("reading a grant") as connection:
            return self._grant(connection, grant_id, lock=False)

    def list_grants(
        self,
        *,
        user: str | None = None,
        active_only: bool = True,
        review_status: str | None = None,
        now: float | None = None,
    ) -> list[ElevationGrant]:
        """Grants newest first, of one user or all, with ``review_status`` if given; with
        ``active_only`` those in force at ``now`` (default: the clock)."""
        now = self.clock() if now is None else now
        query = select(grants_table).order_by(grants_table.c.starts.desc(), grants_table.c.id)
        if user is not None:
            query = query.where(grants_table.c.user == user)
        if review_status is not None:
            query = query.where(grants_table.c.review_status == review_status)
        if active_only:
            query = query.where(*GRANT_IN_FORCE)
        with self.read("listing grants") as connection:
            rows = connection.execute(query, {"now": now}).mappings()
            return [from_row(ElevationGrant, row) for row in rows]

    def active(self, user: str) -> ActiveElevation:
        """The roles and grants ``user`` holds now."""
        return self.standing(user)[0]

    def standing(self, user: str, *, device_id: str = "") -> tuple[ActiveElevation, list[Lock]]:
        """What ``user`` holds now and the locks on them or ``device_id``, in one read.

        The guard service asks this on every request (so a revocation or a lock
        counts on the next one, on every replica); one connection, two indexed
        queries built once.
        """
        found = self.standing_until(user, device_id=device_id)
        return found.elevation, list(found.locks)

    def standing_until(self, user: str, *, device_id: str = "") -> Standing:
        """Like :meth:`standing`, with the time from which the answer may change by itself."""
        now = self.clock()
        values = self.lock_keys(user, device_id) | {"now": now}
        with self.read("reading grants and locks") as connection:
            rows = connection.execute(_UNEXPIRED_GRANTS, values).mappings()
            grants = [from_row(ElevationGrant, row) for row in rows]
            rows = connection.execute(HOLDING_LOCKS, values).mappings()
            locks = tuple(from_row(Lock, row) for row in rows)
        active = [g for g in grants if g.starts <= now]
        changes = [g.expires for g in active]
        changes += [g.starts for g in grants if g.starts > now]
        changes += [lock.until for lock in locks if lock.until is not None]
        return Standing(ActiveElevation.of(active), locks, now, min(changes, default=math.inf))

    def review(self, grant_id: str, *, reviewer: str, comment: str) -> ElevationGrant:
        """Mark a break-glass grant reviewed (comment required); never by its own user."""
        reviewer = checks.name("reviewer", reviewer)
        comment = checks.text("comment", comment, required=True)
        with self.write("reviewing a grant") as connection:
            grant = self._grant(connection, grant_id, lock=True)
            if grant.review_status != REVIEW_REQUIRED:
                raise conflict(
                    "this grant was already reviewed"
                    if grant.review_status == REVIEWED
                    else "only break-glass grants are reviewed"
                )
            if checks.same_person(reviewer, grant.user):
                raise conflict("you cannot review your own break-glass grant")
            self.change(
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
        with self.write("revoking a grant") as connection:
            now = self.clock()
            grant = self._grant(connection, grant_id, lock=True)
            if grant.revoked is not None:
                raise conflict("this grant is already revoked")
            if grant.expires <= now:
                raise conflict("this grant has already expired")
            self.change(
                connection,
                grants_table,
                grant.id,
                grants_table.c.revoked.is_(None),
                revoked=now,
                revoked_by=by,
                revoke_reason=reason,
            )
            return self._grant(connection, grant.id, lock=False)
