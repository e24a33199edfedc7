"""Elevation values: requests, approvals, grants, locks and what a user holds now.

Frozen dataclasses, built by the store from its rows. Times are ``time.time()``
seconds (floats) in the values and RFC 3339 UTC strings ending in ``Z`` in
``to_dict()``, the JSON form the guard service returns.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from nbguard.policy.context import Grant

#: Request states. ``pending`` is the only one that changes; the others are final.
PENDING, APPROVED, DENIED, CANCELLED, EXPIRED = (
    "pending",
    "approved",
    "denied",
    "cancelled",
    "expired",
)
STATUSES = (PENDING, APPROVED, DENIED, CANCELLED, EXPIRED)
#: Request kinds: a role for a while, or one action on one resource for a while.
KINDS = ("role", "grant")
#: Review states of a grant; only break-glass grants need a review.
REVIEW_NOT_REQUIRED, REVIEW_REQUIRED, REVIEWED = ("not_required", "required", "reviewed")
#: What a lock applies to.
LOCK_KINDS = ("user", "device")


def rfc3339(seconds: float | None) -> str | None:
    """``time.time()`` seconds as ``2025-01-01T17:00:00.123456Z`` (None stays None)."""
    if seconds is None:
        return None
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _to_dict(value: Any, times: tuple[str, ...], **replace: Any) -> dict[str, Any]:
    data = {field.name: getattr(value, field.name) for field in fields(value)}
    data.update({name: rfc3339(data[name]) for name in times}, **replace)
    return data


@dataclass(frozen=True, slots=True)
class Approval:
    """One approver's decision on a request: ``verdict`` is ``approve`` or ``deny``."""

    approver: str
    verdict: str
    comment: str
    time: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form."""
        return _to_dict(self, ("time",))


@dataclass(frozen=True, slots=True)
class ElevationRequest:
    """A request for a role (``kind="role"``) or one action on one target (``"grant"``).

    ``status`` is as of the read: a pending request past ``expires`` reads as
    ``expired``. ``required_approvals`` is 0 for break-glass, which needs none.
    """

    id: str
    requester: str
    kind: str
    role: str
    action: str
    target: str
    duration_seconds: int
    reason: str
    environment: str
    sensitivity: str
    status: str
    created: float
    decided: float | None
    required_approvals: int
    approvals: tuple[Approval, ...]
    grant_id: str | None
    break_glass: bool
    #: When a still-pending request stops being decidable.
    expires: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form."""
        return _to_dict(
            self, ("created", "decided", "expires"), approvals=[a.to_dict() for a in self.approvals]
        )


@dataclass(frozen=True, slots=True)
class ElevationGrant:
    """What an approved request (or break-glass) gave: a role, or ``action`` on ``target``."""

    id: str
    request_id: str
    user: str
    role: str
    action: str
    target: str
    starts: float
    expires: float
    break_glass: bool
    revoked: float | None
    revoked_by: str
    revoke_reason: str
    review_status: str
    reviewed_by: str
    review_comment: str
    reviewed: float | None

    def active(self, now: float) -> bool:
        """Whether the grant is in force at ``now``: started, not expired, not revoked."""
        return self.revoked is None and self.starts <= now < self.expires

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form."""
        return _to_dict(self, ("starts", "expires", "revoked", "reviewed"))


@dataclass(frozen=True, slots=True)
class Lock:
    """A lock on a user or a device: while active, the guard service refuses it everything."""

    id: str
    kind: str
    value: str
    reason: str
    created_by: str
    created: float
    until: float | None
    lifted: float | None
    lifted_by: str

    def active(self, now: float) -> bool:
        """Whether the lock holds at ``now``: not lifted and not past ``until``."""
        return self.lifted is None and (self.until is None or now < self.until)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form."""
        return _to_dict(self, ("created", "until", "lifted"))


@dataclass(frozen=True, slots=True)
class ActiveElevation:
    """What a user holds right now, for ``RequestContext(elevated_roles=..., grants=...)``."""

    roles: frozenset[str]
    grants: frozenset[Grant]
    grant_ids: frozenset[str]

    @classmethod
    def of(cls, grants: list[ElevationGrant]) -> ActiveElevation:
        """Collect the roles and resource grants of active grants."""
        return cls(
            roles=frozenset(g.role for g in grants if g.role),
            grants=frozenset(Grant(g.action, g.target) for g in grants if not g.role),
            grant_ids=frozenset(g.id for g in grants),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form."""
        return {
            "roles": sorted(self.roles),
            "grants": [
                {"action": g.action, "resource": g.resource}
                for g in sorted(self.grants, key=lambda g: (g.action, g.resource))
            ],
            "grant_ids": sorted(self.grant_ids),
        }
