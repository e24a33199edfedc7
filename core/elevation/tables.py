"""The elevation store's tables (prefix ``nbguard_elev_``) and rows to values.

Constraints carry the invariants replicas must not break even if code is wrong:
one decision per approver and request, at most one grant per request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from typing import Any, TypeVar

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from nbguard.elevation.models import (
    EXPIRED,
    PENDING,
    Approval,
    ElevationGrant,
    ElevationRequest,
    Lock,
)

#: A row as SQLAlchemy returns it (``RowMapping``) or a dict of column values.
Row = Mapping[Any, Any]
Value = TypeVar("Value", ElevationGrant, Lock)

metadata = MetaData()
_ID = 64
_NAME = 255

requests_table = Table(
    "nbguard_elev_requests",
    metadata,
    Column("id", String(_ID), primary_key=True),
    Column("requester", String(_NAME), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("role", String(_NAME), nullable=False),
    Column("action", String(_NAME), nullable=False),
    Column("target", String(600), nullable=False),
    Column("duration_seconds", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("environment", String(16), nullable=False),
    Column("sensitivity", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created", Float, nullable=False),
    Column("expires", Float, nullable=False),
    Column("decided", Float, nullable=True),
    Column("required_approvals", Integer, nullable=False),
    Column("grant_id", String(_ID), nullable=True),
    Column("break_glass", Boolean, nullable=False),
    Index("nbguard_elev_requests_by_requester", "requester", "created"),
    Index("nbguard_elev_requests_by_created", "created"),
)
approvals_table = Table(
    "nbguard_elev_approvals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(_ID), ForeignKey(requests_table.c.id), nullable=False),
    Column("approver", String(_NAME), nullable=False),
    Column("verdict", String(8), nullable=False),
    Column("comment", Text, nullable=False),
    Column("time", Float, nullable=False),
    UniqueConstraint("request_id", "approver", name="nbguard_elev_one_decision_each"),
)
grants_table = Table(
    "nbguard_elev_grants",
    metadata,
    Column("id", String(_ID), primary_key=True),
    Column("request_id", String(_ID), ForeignKey(requests_table.c.id), nullable=False),
    Column("user", String(_NAME), nullable=False),
    Column("role", String(_NAME), nullable=False),
    Column("action", String(_NAME), nullable=False),
    Column("target", String(600), nullable=False),
    Column("starts", Float, nullable=False),
    Column("expires", Float, nullable=False),
    Column("break_glass", Boolean, nullable=False),
    Column("revoked", Float, nullable=True),
    Column("revoked_by", String(_NAME), nullable=False, default=""),
    Column("revoke_reason", Text, nullable=False, default=""),
    Column("review_status", String(16), nullable=False),
    Column("reviewed_by", String(_NAME), nullable=False, default=""),
    Column("review_comment", Text, nullable=False, default=""),
    Column("reviewed", Float, nullable=True),
    UniqueConstraint("request_id", name="nbguard_elev_one_grant_per_request"),
    # active(user): equality on user, range on expires.
    Index("nbguard_elev_grants_by_user", "user", "expires"),
)
locks_table = Table(
    "nbguard_elev_locks",
    metadata,
    Column("id", String(_ID), primary_key=True),
    Column("kind", String(8), nullable=False),
    Column("value", String(_NAME), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_by", String(_NAME), nullable=False),
    Column("created", Float, nullable=False),
    Column("until", Float, nullable=True),
    Column("lifted", Float, nullable=True),
    Column("lifted_by", String(_NAME), nullable=False, default=""),
    Index("nbguard_elev_locks_by_value", "value", "kind"),
)


def request_from_row(row: Row, approvals: Sequence[Approval], now: float) -> ElevationRequest:
    """A request as of ``now``: pending past its expiry reads as expired, decided then."""
    status, decided = row["status"], row["decided"]
    if status == PENDING and row["expires"] <= now:
        status, decided = EXPIRED, row["expires"]
    return ElevationRequest(
        id=row["id"],
        requester=row["requester"],
        kind=row["kind"],
        role=row["role"],
        action=row["action"],
        target=row["target"],
        duration_seconds=row["duration_seconds"],
        reason=row["reason"],
        environment=row["environment"],
        sensitivity=row["sensitivity"],
        status=status,
        created=row["created"],
        decided=decided,
        required_approvals=row["required_approvals"],
        approvals=tuple(approvals),
        grant_id=row["grant_id"],
        break_glass=bool(row["break_glass"]),
        expires=row["expires"],
    )


def approvals_by_request(rows: Iterable[Row]) -> dict[str, list[Approval]]:
    """Group approval rows (in decision order) by request id."""
    grouped: dict[str, list[Approval]] = {}
    for row in rows:
        grouped.setdefault(row["request_id"], []).append(
            Approval(row["approver"], row["verdict"], row["comment"], row["time"])
        )
    return grouped


def from_row(cls: type[Value], row: Row) -> Value:
    """A grant or a lock from its row (the columns are named after the fields)."""
    return cls(**{field.name: row[field.name] for field in fields(cls)})
