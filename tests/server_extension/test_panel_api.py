"""The lab panel's routes forward to the real guard service and pass its answers back."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from .conftest import SpawnedServer

Fetch = Any


async def answer(jp_fetch: Fetch, *parts: str, **kw: Any) -> tuple[int, Any]:
    """``(status, JSON body)`` of a call to the server, errors included."""
    try:
        response = await jp_fetch(*parts, **kw)
    except HTTPClientError as error:
        if error.response is None:
            raise
        response = error.response
    assert response.headers["Content-Type"].startswith("application/json")
    return response.code, json.loads(response.body)


def without_correlation(body: Any) -> Any:
    """``body`` less the ids that differ between two identical calls."""
    if isinstance(body, dict):
        return {
            k: without_correlation(v)
            for k, v in body.items()
            if k not in ("correlation_id", "mfa_age_seconds", "mfa_age")
        }
    if isinstance(body, list):
        return [without_correlation(v) for v in body]
    return body


async def test_context_is_the_guards_me(jp_fetch: Fetch, guard_server: SpawnedServer) -> None:
    """GET context answers the guard's api/v1/me for the server's user."""
    status, body = await answer(jp_fetch, "nbguard", "api", "context")
    direct = guard_server.guard_call("GET", "api/v1/me").json()
    assert status == 200
    assert without_correlation(body) == without_correlation(direct)
    assert guard_server.name in json.dumps(body)
    assert "data-scientist" in body["roles"]


@pytest.mark.parametrize(
    ("route", "guard_path"),
    [
        pytest.param("catalog", "api/v1/datasets", id="catalog"),
        # This guard fronts no model registry: its 404 and JSON error come back as they are.
        pytest.param("models", "api/v1/models", id="models-without-a-registry"),
        pytest.param("grants", "api/v1/grants", id="grants"),
        pytest.param("requests", "api/v1/requests", id="requests"),
    ],
)
async def test_route_returns_the_guards_answer(
    jp_fetch: Fetch, guard_server: SpawnedServer, route: str, guard_path: str
) -> None:
    """GET catalog, models, grants and requests answer what the guard answers the server's token."""
    status, body = await answer(jp_fetch, "nbguard", "api", route)
    direct = guard_server.guard_call("GET", guard_path)
    assert (status, body) == (direct.status_code, direct.json())


async def test_catalog_lists_what_a_data_scientist_may_see(jp_fetch: Fetch) -> None:
    """The catalog through the panel holds the guard's datasets, not an empty stand-in."""
    _, body = await answer(jp_fetch, "nbguard", "api", "catalog")
    names = {d["name"] for d in body["datasets"]}
    assert {"weather", "sales"} <= names


async def test_post_request_creates_it_at_the_guard(
    jp_fetch: Fetch, guard_server: SpawnedServer
) -> None:
    """POST requests asks the guard for a grant; 201, and the guard lists it as the user's."""
    ask = {
        "action": "dataset.read",
        "resource": "dataset:customers",
        "duration_seconds": 600,
        "reason": "churn analysis for the quarterly review",
    }
    status, created = await answer(
        jp_fetch, "nbguard", "api", "requests", method="POST", body=json.dumps(ask)
    )
    assert status == 201, created
    assert created["requester"] == guard_server.name
    mine = guard_server.guard_call("GET", "api/v1/requests").json()["requests"]
    assert created["id"] in [r["id"] for r in mine]
    _, listed = await answer(jp_fetch, "nbguard", "api", "requests", params={"scope": "mine"})
    assert listed["requests"] == mine


async def test_guard_denial_keeps_status_and_body(
    jp_fetch: Fetch, guard_server: SpawnedServer
) -> None:
    """A request the policy refuses comes back with the guard's 403 and its JSON body."""
    ask = {"role": "admin", "duration_seconds": 600, "reason": "I would like to be admin"}
    status, body = await answer(
        jp_fetch, "nbguard", "api", "requests", method="POST", body=json.dumps(ask)
    )
    direct = guard_server.guard_call("POST", "api/v1/requests", json=ask)
    assert status == direct.status_code == 403
    assert body["error"]["code"] == "access_denied"
    assert "decision" in body["error"]
    assert without_correlation(body) == without_correlation(direct.json())


async def test_guard_bad_request_is_passed_back_unchanged(
    jp_fetch: Fetch, guard_server: SpawnedServer
) -> None:
    """A query the guard refuses (400) reaches the browser with the same status and body."""
    status, body = await answer(
        jp_fetch, "nbguard", "api", "requests", params={"scope": "everyone"}
    )
    direct = guard_server.guard_call("GET", "api/v1/requests", params={"scope": "everyone"})
    assert (status, body) == (direct.status_code, direct.json())
    assert status == 400


@pytest.mark.parametrize(
    ("body", "words"),
    [
        pytest.param("not json", "JSON", id="not-json"),
        pytest.param("[]", "object", id="not-an-object"),
        pytest.param(
            '{"role": "data-scientist", "duration_seconds": 60}', "reason", id="no-reason"
        ),
        pytest.param(
            '{"role": "ml-engineer", "action": "dataset.read", "resource": "dataset:sales",'
            ' "duration_seconds": 60, "reason": "x"}',
            "either",
            id="role-and-action",
        ),
        pytest.param(
            '{"action": "dataset.read", "duration_seconds": 60, "reason": "x"}',
            "resource",
            id="action-without-resource",
        ),
        pytest.param(
            '{"role": "ml-engineer", "duration_seconds": 0, "reason": "x"}',
            "duration",
            id="zero-duration",
        ),
        pytest.param(
            '{"role": "ml-engineer", "duration_seconds": true, "reason": "x"}',
            "duration_seconds",
            id="bool-duration",
        ),
        pytest.param(
            '{"role": "ml-engineer", "duration_seconds": 60, "reason": "  "}',
            "reason",
            id="blank-reason",
        ),
        pytest.param(
            '{"role": "ml-engineer", "duration_seconds": 60, "reason": "x", "user": "bob"}',
            "user",
            id="unknown-field",
        ),
    ],
)
async def test_bad_request_body_is_refused_before_the_guard(
    jp_fetch: Fetch, guard_server: SpawnedServer, body: str, words: str
) -> None:
    """A malformed POST requests body is 400 in the guard's error shape and is not forwarded."""
    before = guard_server.guard_call("GET", "api/v1/requests").json()["requests"]
    status, answer_body = await answer(
        jp_fetch, "nbguard", "api", "requests", method="POST", body=body
    )
    assert status == 400
    assert answer_body["error"]["code"] == "bad_request"
    assert answer_body["error"]["status"] == 400
    assert words in answer_body["error"]["message"]
    assert guard_server.guard_call("GET", "api/v1/requests").json()["requests"] == before
