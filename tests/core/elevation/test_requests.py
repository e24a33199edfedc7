"""Elevation requests: input checks, approvals, denials, cancellation, expiry, listing."""

from __future__ import annotations

import re
from typing import Any

import pytest

from nbguard.elevation.store import ElevationStore
from nbguard.errors import ConflictError, NotFoundError, RequestError
from nbguard.policy.refs import EntityRef

from .conftest import ONE, TWO, Clock, new_request, request_values


def test_create_pending_request(store: ElevationStore, clock: Clock) -> None:
    """A new request is pending, stored as given, with an unguessable Cedar-valid id."""
    request = new_request(store, reason="  incident 42\n")
    assert request.status == "pending"
    assert request.kind == "grant"
    assert request.reason == "incident 42"
    assert request.required_approvals == 1
    assert (request.created, request.expires, request.decided) == (
        clock.now,
        clock.now + 3600,
        None,
    )
    assert re.fullmatch(r"req-[A-Za-z0-9_-]{24}", request.id)
    assert EntityRef.of("ElevationRequest", request.id).id == request.id
    assert store.get_request(request.id) == request
    assert new_request(store).id != request.id


def test_role_request_stored(store: ElevationStore) -> None:
    """A role request is kind "role" with empty action, target and sensitivity."""
    request = new_request(store, role="ml-engineer", action="", target="", sensitivity="")
    assert (request.kind, request.role, request.action, request.target) == (
        "role",
        "ml-engineer",
        "",
        "",
    )


def test_to_dict_is_json_ready(store: ElevationStore) -> None:
    """to_dict gives RFC 3339 UTC times ending in Z and approvals as dicts."""
    request = new_request(store)
    decided = store.decide(request.id, approver="carol", approve=True, comment="ok")
    data = decided.to_dict()
    assert data["created"] == "2025-06-15T15:06:40.000000Z"
    assert data["decided"] == data["created"]
    assert data["approvals"] == [
        {"approver": "carol", "verdict": "approve", "comment": "ok", "time": data["created"]}
    ]
    assert data["status"] == "approved"
    assert data["grant_id"] == decided.grant_id


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"requester": ""}, "requester is required", id="requester-empty"),
        pytest.param({"requester": 7}, "requester is required", id="requester-not-text"),
        pytest.param({"requester": "alice "}, "requester must be printable", id="requester-space"),
        pytest.param({"requester": "al\x00ice"}, "requester must be printable", id="requester-nul"),
        pytest.param({"requester": "a" * 256}, "requester is longer", id="requester-long"),
        pytest.param({"role": "admin"}, "either a role, or an action", id="role-and-action"),
        pytest.param(
            {"role": "admin", "action": "", "target": "dataset:x"},
            "either a role",
            id="role-and-target",
        ),
        pytest.param(
            {"action": "", "target": ""}, "ask for a role, or for an action", id="nothing-asked"
        ),
        pytest.param({"target": ""}, "action together with its target", id="action-without-target"),
        pytest.param({"action": ""}, "action together with its target", id="target-without-action"),
        pytest.param(
            {"role": "r\n", "action": "", "target": ""}, "role must be printable", id="role-control"
        ),
        pytest.param(
            {"role": "r" * 129, "action": "", "target": ""}, "role is longer", id="role-long"
        ),
        pytest.param({"role": 5, "action": "", "target": ""}, "must be text", id="role-not-text"),
        pytest.param({"action": "read"}, "action must be an action name", id="action-bare"),
        pytest.param(
            {"action": 'Action::"dataset.read"'},
            "action must be an action name",
            id="action-cedar-form",
        ),
        pytest.param(
            {"action": " dataset.read"}, "action must be an action name", id="action-space"
        ),
        pytest.param({"target": "customers"}, "target must be a resource key", id="target-no-type"),
        pytest.param(
            {"target": "planet:earth"}, "target must be a resource key", id="target-unknown-type"
        ),
        pytest.param(
            {"target": 'Dataset::"customers"'},
            "target must be a resource key",
            id="target-cedar-form",
        ),
        pytest.param(
            {"target": "dataset:customers "}, "target must be a resource key", id="target-space"
        ),
        pytest.param(
            {"duration_seconds": 0},
            "duration_seconds must be a whole number from 1 to 3600",
            id="duration-zero",
        ),
        pytest.param({"duration_seconds": 3601}, "duration_seconds", id="duration-over-rule"),
        pytest.param({"duration_seconds": 60.0}, "duration_seconds", id="duration-float"),
        pytest.param({"duration_seconds": True}, "duration_seconds", id="duration-bool"),
        pytest.param({"reason": "   "}, "reason is required", id="reason-blank"),
        pytest.param({"reason": None}, "reason must be text", id="reason-none"),
        pytest.param({"reason": "x" * 2001}, "reason is longer than 2000", id="reason-long"),
        pytest.param({"reason": "a\x1b[31mred"}, "reason contains control", id="reason-escape"),
        pytest.param(
            {"environment": "staging"}, "environment must be one of", id="environment-unknown"
        ),
        pytest.param(
            {"sensitivity": "secret"}, "sensitivity must be one of", id="sensitivity-unknown"
        ),
        pytest.param(
            {"sensitivity": ""}, "sensitivity must be one of", id="grant-needs-sensitivity"
        ),
    ],
)
def test_bad_input_refused(store: ElevationStore, overrides: dict[str, Any], field: str) -> None:
    """Each bad field is a RequestError whose user message says which field and why."""
    with pytest.raises(RequestError) as caught:
        new_request(store, **overrides)
    assert field in caught.value.user_message
    assert store.list_requests() == []


def test_reason_at_limit_accepted(store: ElevationStore) -> None:
    """A 2000-character reason with line breaks is accepted."""
    reason = ("x" * 99 + "\n") * 20
    assert new_request(store, reason=reason).reason == reason.strip()


def test_two_approvals(store: ElevationStore, clock: Clock) -> None:
    """A request needing two approvals stays pending after one and is approved by the second."""
    request = new_request(store, rule=TWO, duration_seconds=7200)
    first = store.decide(request.id, approver="bob", approve=True, comment="")
    assert (first.status, first.grant_id, len(first.approvals)) == ("pending", None, 1)
    clock.advance(60)
    second = store.decide(request.id, approver="carol", approve=True, comment="fine")
    assert second.status == "approved"
    assert second.decided == clock.now
    assert [a.approver for a in second.approvals] == ["bob", "carol"]
    assert second.grant_id is not None
    grant = store.get_grant(second.grant_id)
    assert (grant.user, grant.action, grant.target) == (
        "alice",
        "dataset.read",
        "dataset:customers",
    )
    assert (grant.starts, grant.expires) == (clock.now, clock.now + 7200)
    assert (grant.request_id, grant.review_status, grant.break_glass) == (
        request.id,
        "not_required",
        False,
    )


def test_denial_ends_request(store: ElevationStore) -> None:
    """One denial ends a request even after an approval; no grant is made."""
    request = new_request(store, rule=TWO)
    store.decide(request.id, approver="bob", approve=True, comment="")
    denied = store.decide(request.id, approver="carol", approve=False, comment="not now")
    assert (denied.status, denied.grant_id) == ("denied", None)
    assert denied.approvals[-1].verdict == "deny"
    assert store.list_grants(active_only=False) == []


@pytest.mark.parametrize(
    ("approver", "message"),
    [
        pytest.param("alice", "your own", id="self"),
        pytest.param("Alice", "your own", id="self-other-case"),
        pytest.param("bob", "already decided", id="same-approver-twice"),
        pytest.param("BOB", "already decided", id="same-approver-other-case"),
    ],
)
def test_refused_approvers(store: ElevationStore, approver: str, message: str) -> None:
    """The requester never decides their own request, and nobody decides twice."""
    request = new_request(store, rule=TWO)
    store.decide(request.id, approver="bob", approve=True, comment="")
    for approve in (True, False):
        with pytest.raises(ConflictError, match=message):
            store.decide(request.id, approver=approver, approve=approve, comment="x")
    assert len(store.get_request(request.id).approvals) == 1


def test_self_approval_through_second_store(sqlite_url: str, store: ElevationStore) -> None:
    """Another store (a second replica) refuses self-approval just the same."""
    request = new_request(store)
    other = ElevationStore(sqlite_url)
    try:
        with pytest.raises(ConflictError, match="your own"):
            other.decide(request.id, approver="alice", approve=True, comment="")
    finally:
        other.close()


@pytest.mark.parametrize(
    "end",
    [
        pytest.param("approved", id="approved"),
        pytest.param("denied", id="denied"),
        pytest.param("cancelled", id="cancelled"),
        pytest.param("expired", id="expired"),
    ],
)
def test_no_decision_after_the_end(store: ElevationStore, clock: Clock, end: str) -> None:
    """A request that is no longer pending cannot be approved, denied or cancelled again."""
    request = new_request(store)
    if end == "approved":
        store.decide(request.id, approver="bob", approve=True, comment="")
    elif end == "denied":
        store.decide(request.id, approver="bob", approve=False, comment="no")
    elif end == "cancelled":
        store.cancel(request.id, by="alice")
    else:
        clock.advance(3600)
    assert store.get_request(request.id).status == end
    for approve in (True, False):
        with pytest.raises(ConflictError, match=f"already {end}"):
            store.decide(request.id, approver="dave", approve=approve, comment="revive")
    with pytest.raises(ConflictError, match=f"already {end}"):
        store.cancel(request.id, by="alice")
    assert len(store.list_grants(active_only=False)) == (end == "approved")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"approve": False, "comment": " "}, "comment is required", id="deny-without-comment"
        ),
        pytest.param(
            {"approve": True, "comment": "x" * 2001}, "comment is longer", id="comment-long"
        ),
        pytest.param(
            {"approve": "yes", "comment": ""},
            "approve must be true or false",
            id="approve-not-bool",
        ),
        pytest.param({"approve": True, "comment": None}, "comment must be text", id="comment-none"),
    ],
)
def test_bad_decisions(store: ElevationStore, kwargs: dict[str, Any], message: str) -> None:
    """Malformed decisions are RequestErrors and record nothing."""
    request = new_request(store)
    with pytest.raises(RequestError, match=message):
        store.decide(request.id, approver="bob", **kwargs)
    assert store.get_request(request.id).approvals == ()


def test_bad_approver_name(store: ElevationStore) -> None:
    """An approver name with control characters is refused."""
    request = new_request(store)
    with pytest.raises(RequestError, match="approver must be printable"):
        store.decide(request.id, approver="bob\n", approve=True, comment="")


@pytest.mark.parametrize(
    "request_id", ["req-nope", "", 5, "x" * 100], ids=["unknown", "empty", "int", "long"]
)
def test_unknown_request(store: ElevationStore, request_id: Any) -> None:
    """Unknown ids are NotFoundError for reads, decisions and cancellation."""
    with pytest.raises(NotFoundError):
        store.get_request(request_id)
    with pytest.raises(NotFoundError):
        store.decide(request_id, approver="bob", approve=True, comment="")
    with pytest.raises(NotFoundError):
        store.cancel(request_id, by="alice")


def test_cancel(store: ElevationStore, clock: Clock) -> None:
    """The requester cancels a pending request; nobody else can."""
    request = new_request(store)
    with pytest.raises(ConflictError, match="only the requester"):
        store.cancel(request.id, by="bob")
    clock.advance(5)
    cancelled = store.cancel(request.id, by="alice")
    assert (cancelled.status, cancelled.decided) == ("cancelled", clock.now)


def test_expiry_is_read_consistently(store: ElevationStore, clock: Clock) -> None:
    """A pending request reads as expired at its deadline, in get and in every list filter."""
    request = new_request(store)
    clock.advance(3599)
    assert store.get_request(request.id).status == "pending"
    assert [r.id for r in store.list_requests(status="pending")] == [request.id]
    clock.advance(1)
    expired = store.get_request(request.id)
    assert (expired.status, expired.decided) == ("expired", request.expires)
    assert store.list_requests(status="pending") == []
    assert store.list_requests(status="expired") == [expired]


def test_ttl_is_fixed_at_creation(sqlite_url: str, store: ElevationStore, clock: Clock) -> None:
    """A replica with another TTL still reads an existing request's own deadline."""
    request = new_request(store)
    other = ElevationStore(sqlite_url, clock=clock, request_ttl_seconds=10)
    try:
        clock.advance(60)
        assert other.get_request(request.id).status == "pending"
    finally:
        other.close()


def test_list_requests(store: ElevationStore, clock: Clock) -> None:
    """Lists are newest first, filtered by requester and status, paged by limit and offset."""
    ids = []
    for requester in ("alice", "bob", "alice", "carol"):
        ids.append(new_request(store, requester=requester).id)
        clock.advance(1)
    store.decide(ids[0], approver="dave", approve=True, comment="")
    assert [r.id for r in store.list_requests()] == ids[::-1]
    assert [r.id for r in store.list_requests(requester="alice")] == [ids[2], ids[0]]
    assert [r.id for r in store.list_requests(status="approved")] == [ids[0]]
    assert store.list_requests(status="approved")[0].approvals[0].approver == "dave"
    assert [r.id for r in store.list_requests(limit=2, offset=1)] == [ids[2], ids[1]]
    assert store.list_requests(requester="nobody") == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"status": "done"}, "status must be one of", id="status"),
        pytest.param({"limit": 0}, "limit must be", id="limit-zero"),
        pytest.param({"limit": "5"}, "limit must be", id="limit-text"),
        pytest.param({"offset": -1}, "offset must be", id="offset-negative"),
    ],
)
def test_bad_list_arguments(store: ElevationStore, kwargs: dict[str, Any], message: str) -> None:
    """Bad list filters are RequestErrors."""
    with pytest.raises(RequestError, match=message):
        store.list_requests(**kwargs)


def test_rule_values_used(store: ElevationStore) -> None:
    """The rule passed in sets the required approvals and the duration cap."""
    assert new_request(store, rule=TWO, duration_seconds=7200).required_approvals == 2
    with pytest.raises(RequestError):
        store.create_request(**request_values(rule=ONE, duration_seconds=7200))
