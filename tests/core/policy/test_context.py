"""Request contexts and references: bad values are refused with the field's name."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from nbguard.errors import RequestError
from nbguard.policy import EntityRef, Grant, RequestContext
from nbguard.policy.refs import parse_action


@pytest.mark.parametrize(
    ("values", "field"),
    [
        pytest.param({"mfa_age_seconds": -1}, "mfa_age_seconds", id="negative-age"),
        pytest.param({"mfa_age_seconds": True}, "mfa_age_seconds", id="bool-age"),
        pytest.param({"mfa_age_seconds": 1.5}, "mfa_age_seconds", id="float-age"),
        pytest.param({"hour": 24}, "hour", id="hour-range"),
        pytest.param({"weekday": 7}, "weekday", id="weekday-range"),
        pytest.param({"risk": "none"}, "risk", id="risk-vocabulary"),
        pytest.param({"mfa_method": "sms"}, "mfa_method", id="mfa-method-vocabulary"),
        pytest.param({"environment": "staging"}, "environment", id="environment-vocabulary"),
        pytest.param({"device_trusted": "yes"}, "device_trusted", id="device-trusted-string"),
        pytest.param({"network_zone": 10}, "network_zone", id="zone-number"),
        pytest.param({"elevated_roles": "admin"}, "elevated_roles", id="roles-string"),
        pytest.param(
            {"grants": [{"action": "dataset.read"}]}, "grants", id="grant-missing-resource"
        ),
        pytest.param(
            {"grants": [{"action": "a", "resource": "b", "extra": 1}]},
            "grants",
            id="grant-extra-key",
        ),
        pytest.param({"admin": True}, "unknown context field", id="unknown-field"),
    ],
)
def test_bad_context_values_are_refused(values: dict[str, object], field: str) -> None:
    """A context with a wrong value raises RequestError naming the field."""
    with pytest.raises(RequestError, match=field):
        RequestContext.from_mapping(values)


def test_context_round_trips_through_json_form() -> None:
    """to_dict and from_mapping are inverses."""
    ctx = RequestContext.from_mapping(
        {"hour": 3, "weekday": 4, "grants": [{"action": "dataset.read", "resource": "dataset:x"}]}
    )
    assert RequestContext.from_mapping(ctx.to_dict()) == ctx
    assert ctx.grants == frozenset({Grant("dataset.read", "dataset:x")})


def test_context_at_uses_the_moments_local_time() -> None:
    """RequestContext.at takes hour and weekday from an aware datetime in its own zone."""
    moment = datetime(2026, 11, 23, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    ctx = RequestContext.at(moment)
    assert (ctx.hour, ctx.weekday) == (23, 0)
    with pytest.raises(RequestError):
        RequestContext.at(datetime(2026, 11, 23, 23, 30))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("user:alice", EntityRef("User", "alice"), id="short"),
        pytest.param(
            "ModelVersion:fraud/3", EntityRef("ModelVersion", "fraud/3"), id="short-mixed-case"
        ),
        pytest.param('nbguard::User::"alice"', EntityRef("User", "alice"), id="cedar-namespaced"),
        pytest.param('Dataset::"a:b"', EntityRef("Dataset", "a:b"), id="cedar-without-namespace"),
        pytest.param("server:alice:gpu", EntityRef("Server", "alice:gpu"), id="colon-in-id"),
    ],
)
def test_entity_refs_parse(text: str, expected: EntityRef) -> None:
    """Entity references are accepted in the short and the Cedar forms."""
    assert EntityRef.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("dataset.read", id="name"),
        pytest.param('nbguard::Action::"dataset.read"', id="cedar"),
        pytest.param('Action::"dataset.read"', id="cedar-no-namespace"),
    ],
)
def test_actions_parse(text: str) -> None:
    """Actions are accepted by name or in Cedar form."""
    assert parse_action(text) == "dataset.read"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('nbguard::User::"dataset.read"', id="not-an-action"),
        pytest.param("read", id="no-group"),
        pytest.param("dataset.read; drop", id="injection"),
    ],
)
def test_bad_actions_are_refused(text: str) -> None:
    """Anything that is not an action name is refused."""
    with pytest.raises(RequestError):
        parse_action(text)
