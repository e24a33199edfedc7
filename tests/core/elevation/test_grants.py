"""Grants: break-glass and its review, revocation, expiry, and what a user holds now."""

from __future__ import annotations

from typing import Any

import pytest

from nbguard.elevation.models import ActiveElevation
from nbguard.elevation.store import ElevationStore
from nbguard.errors import ConflictError, NotFoundError, RequestError
from nbguard.policy.context import Grant, RequestContext

from .conftest import ONE, TWO, Clock, new_request, request_values


def approved_grant(store: ElevationStore, **overrides: Any) -> str:
    """Create and approve a request; return its grant id."""
    request = new_request(store, **overrides)
    grant_id = store.decide(request.id, approver="bob", approve=True, comment="").grant_id
    assert grant_id is not None
    return grant_id


def break_glass_values(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments of a valid break-glass call."""
    values = request_values(**{"rule": TWO, **overrides})
    values.setdefault("user", values.pop("requester"))
    return values


def test_break_glass_grants_at_once(store: ElevationStore, clock: Clock) -> None:
    """Break-glass grants now, records an approved break-glass request, and needs review."""
    grant = store.break_glass(
        **break_glass_values(role="sre", action="", target="", sensitivity="")
    )
    assert grant.active(clock.now)
    assert (grant.role, grant.break_glass, grant.review_status) == ("sre", True, "required")
    assert grant.id.startswith("grant-")
    request = store.get_request(grant.request_id)
    assert (request.status, request.break_glass, request.grant_id) == ("approved", True, grant.id)
    assert (request.required_approvals, request.approvals) == (0, ())
    assert store.active("alice").roles == frozenset({"sre"})


def test_break_glass_not_allowed(store: ElevationStore) -> None:
    """Break-glass under a rule that does not allow it is refused and records nothing."""
    with pytest.raises(RequestError, match="break-glass is not allowed"):
        store.break_glass(**break_glass_values(rule=ONE))
    assert store.list_requests() == []


def test_break_glass_checks_input(store: ElevationStore) -> None:
    """Break-glass checks its input like a request, the duration against the rule."""
    with pytest.raises(RequestError, match="duration_seconds"):
        store.break_glass(**break_glass_values(duration_seconds=7201))
    with pytest.raises(RequestError, match="user is required"):
        store.break_glass(**break_glass_values(user=""))


def test_review(store: ElevationStore, clock: Clock) -> None:
    """Someone other than the grant's user reviews a break-glass grant once, with a comment."""
    grant = store.break_glass(**break_glass_values())
    with pytest.raises(ConflictError, match="your own"):
        store.review(grant.id, reviewer="ALICE", comment="fine by me")
    with pytest.raises(RequestError, match="comment is required"):
        store.review(grant.id, reviewer="carol", comment=" ")
    clock.advance(30)
    reviewed = store.review(grant.id, reviewer="carol", comment="justified: incident 42")
    assert (reviewed.review_status, reviewed.reviewed_by) == ("reviewed", "carol")
    assert (reviewed.review_comment, reviewed.reviewed) == ("justified: incident 42", clock.now)
    with pytest.raises(ConflictError, match="already reviewed"):
        store.review(grant.id, reviewer="dave", comment="again")


def test_review_only_break_glass(store: ElevationStore) -> None:
    """An approved grant needs no review and cannot be given one."""
    grant_id = approved_grant(store)
    with pytest.raises(ConflictError, match="only break-glass"):
        store.review(grant_id, reviewer="carol", comment="x")


def test_revoke(store: ElevationStore, clock: Clock) -> None:
    """Revocation ends a grant at once, records who and why, and happens only once."""
    grant_id = approved_grant(store)
    clock.advance(10)
    revoked = store.revoke(grant_id, by="carol", reason="suspicious export")
    assert (revoked.revoked, revoked.revoked_by, revoked.revoke_reason) == (
        clock.now,
        "carol",
        "suspicious export",
    )
    assert not revoked.active(clock.now)
    assert store.active("alice") == ActiveElevation(frozenset(), frozenset(), frozenset())
    with pytest.raises(ConflictError, match="already revoked"):
        store.revoke(grant_id, by="dave", reason="again")


def test_revoke_expired(store: ElevationStore, clock: Clock) -> None:
    """An expired grant cannot be revoked."""
    grant_id = approved_grant(store)
    clock.advance(600)
    with pytest.raises(ConflictError, match="already expired"):
        store.revoke(grant_id, by="carol", reason="late")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"by": "", "reason": "x"}, "by is required", id="no-by"),
        pytest.param({"by": "carol", "reason": ""}, "reason is required", id="no-reason"),
        pytest.param({"by": "carol", "reason": "x" * 2001}, "reason is longer", id="long-reason"),
    ],
)
def test_bad_revocations(store: ElevationStore, kwargs: dict[str, Any], message: str) -> None:
    """Revocation needs a sane name and a reason."""
    grant_id = approved_grant(store)
    with pytest.raises(RequestError, match=message):
        store.revoke(grant_id, **kwargs)
    assert store.get_grant(grant_id).revoked is None


@pytest.mark.parametrize("grant_id", ["grant-nope", 3], ids=["unknown", "int"])
def test_unknown_grant(store: ElevationStore, grant_id: Any) -> None:
    """Unknown grant ids are NotFoundError for every grant operation."""
    with pytest.raises(NotFoundError):
        store.get_grant(grant_id)
    with pytest.raises(NotFoundError):
        store.revoke(grant_id, by="carol", reason="x")
    with pytest.raises(NotFoundError):
        store.review(grant_id, reviewer="carol", comment="x")


def test_active_and_expiry(store: ElevationStore, clock: Clock) -> None:
    """active() holds unexpired, unrevoked grants of that user only, roles and resources apart."""
    role = approved_grant(store, role="ml-engineer", action="", target="", sensitivity="")
    read = approved_grant(store, duration_seconds=1200)
    revoked = approved_grant(store, action="dataset.write")
    store.revoke(revoked, by="carol", reason="x")
    approved_grant(store, requester="mallory")
    now = store.active("alice")
    assert now.roles == frozenset({"ml-engineer"})
    assert now.grants == frozenset({Grant("dataset.read", "dataset:customers")})
    assert now.grant_ids == frozenset({role, read})
    context = RequestContext(elevated_roles=now.roles, grants=now.grants)
    assert context.to_cedar()["grants"] == [
        {"action": "dataset.read", "resource": "dataset:customers"}
    ]
    clock.advance(600)
    assert store.active("alice").grant_ids == frozenset({read})
    clock.advance(600)
    assert store.active("alice").grant_ids == frozenset()
    assert store.active("nobody").to_dict() == {"roles": [], "grants": [], "grant_ids": []}


def test_list_grants(store: ElevationStore, clock: Clock) -> None:
    """list_grants filters by user and, by default, to grants in force at ``now``."""
    first = approved_grant(store)
    clock.advance(1)
    second = approved_grant(store, requester="mallory", duration_seconds=3600)
    assert [g.id for g in store.list_grants()] == [second, first]
    assert [g.id for g in store.list_grants(user="alice")] == [first]
    assert [g.id for g in store.list_grants(now=clock.now + 1000)] == [second]
    clock.advance(5000)
    assert store.list_grants() == []
    assert [g.id for g in store.list_grants(active_only=False)] == [second, first]


def test_grant_to_dict(store: ElevationStore) -> None:
    """A grant's JSON form has RFC 3339 times and null for times not reached."""
    data = store.get_grant(approved_grant(store)).to_dict()
    assert data["starts"] == "2025-06-15T15:06:40.000000Z"
    assert data["expires"] == "2025-06-15T15:16:40.000000Z"
    assert (data["revoked"], data["reviewed"], data["review_status"]) == (
        None,
        None,
        "not_required",
    )


def test_list_grants_by_review_status(store: ElevationStore) -> None:
    """Grants waiting for review are listed apart, and leave the list once reviewed."""
    approved = approved_grant(store)
    glass = store.break_glass(**break_glass_values()).id
    waiting = store.list_grants(active_only=False, review_status="required")
    assert [g.id for g in waiting] == [glass]
    assert approved not in [g.id for g in waiting]
    store.review(glass, reviewer="carol", comment="justified")
    assert store.list_grants(active_only=False, review_status="required") == []
