"""The guard service's identity, context and decision API, through the real hub and proxy."""

from __future__ import annotations

import asyncio
import json
import time
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
import requests

from ..conftest import ledger_bodies
from .conftest import Client, Guard, age_mfa, server_client, signed_in, user_client

pytestmark = pytest.mark.asyncio(loop_scope="module")


def error_of(response: requests.Response) -> dict[str, Any]:
    """The JSON error body of a 4xx/5xx answer (it must be one)."""
    assert response.headers["Content-Type"].startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["status"] == response.status_code
    return body["error"]


def ledger_access(guard: Guard, actor: str) -> list[dict[str, Any]]:
    """The access records of ``actor`` in the shared ledger."""
    return ledger_bodies(guard.service.ledger, "access", actor)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-token"),
        pytest.param({"Authorization": "token not-a-real-token"}, id="forged-token"),
        pytest.param({"Authorization": "Basic YWxpY2U6YWxpY2U="}, id="basic-auth"),
        pytest.param({"Authorization": "token "}, id="empty-token"),
    ],
)
async def test_unauthenticated_requests_get_401_json(guard: Guard, headers: dict[str, str]) -> None:
    """Without a valid hub token every API route answers 401 with a JSON error, nothing else."""
    for method, path in (("GET", "api/v1/me"), ("POST", "api/v1/decisions")):
        response = await asyncio.to_thread(
            requests.request, method, guard.url(path), headers=headers, timeout=30
        )
        assert response.status_code == 401, response.text
        assert error_of(response)["code"] == "unauthenticated"


async def test_browser_cookie_does_not_authenticate_the_api(guard: Guard) -> None:
    """A logged-in browser's hub cookies are not accepted by the API (no CSRF surface)."""
    browser = await signed_in(guard)
    response = await asyncio.to_thread(browser.session.get, guard.url("api/v1/me"), timeout=30)
    assert response.status_code == 401


async def test_me_for_a_user_token_has_no_environment(guard: Guard) -> None:
    """A user's own API token is decided from environment none, with the login's MFA."""
    client = await user_client(guard)
    response = await client.call("GET", "api/v1/me")
    assert response.status_code == 200, response.text
    me = response.json()
    assert me["user"] == client.name
    assert me["roles"] == ["data-scientist"]
    assert me["environment"] == "none"
    assert me["server"] is None
    assert me["mfa_method"] == "totp"
    assert 0 <= me["mfa_age_seconds"] < 120
    assert me["locked"] is False
    assert me["step_up_url"].endswith("hub/nbguard/mfa/step-up")


async def test_me_for_a_server_token_has_its_profile_environment(guard: Guard) -> None:
    """The server's own token is decided in its profile's environment."""
    client = await server_client(guard)
    me = (await client.call("GET", "api/v1/me")).json()
    assert me["server"] == ""
    assert me["profile"] == "train"
    assert me["environment"] == "train"


async def test_a_self_made_server_scoped_token_is_not_the_server(guard: Guard) -> None:
    """A token the user mints with the server's scope does not get the server's environment."""
    client = await server_client(guard)
    user = guard.hub.users[client.name]
    forged = user.new_api_token(
        note="looks like a server",
        scopes=[
            f"access:servers!server={client.name}/",
            "access:services!service=nbguard-guard",
        ],
    )
    me = (await Client(guard, forged, client.name).call("GET", "api/v1/me")).json()
    assert me["server"] is None
    assert me["environment"] == "none"


async def test_allowed_decision_is_recorded_with_its_cell(guard: Guard) -> None:
    """An allowed decision answers with its policies and lands in the ledger with the cell."""
    client = await server_client(guard)
    cell = {"kernel_id": "k-1", "instance": "i-2", "cell_id": "c-7", "msg_id": "m-9", "seq": 4}
    response = await client.call(
        "POST",
        "api/v1/decisions",
        json={"action": "dataset.read", "resource": "dataset:sales"},
        headers={"X-NBGuard-Cell": json.dumps(cell)},
    )
    assert response.status_code == 200, response.text
    decision = response.json()
    assert decision["allowed"] is True
    assert decision["policy_ids"] == ["data-scientist.datasets.read"]
    records = ledger_access(guard, client.name)
    assert records[-1]["allowed"] is True
    assert records[-1]["resource"] == "dataset:sales"
    assert records[-1]["cell"] == cell


async def test_denial_says_what_would_allow_it(guard: Guard) -> None:
    """A restricted dataset is refused with machine-readable remedies, words and the step-up page."""
    client = await server_client(guard)
    await age_mfa(guard, client.name, 2000)
    response = await client.call(
        "POST", "api/v1/decisions", json={"action": "dataset.read", "resource": "dataset:customers"}
    )
    assert response.status_code == 200
    decision = response.json()
    assert decision["allowed"] is False
    kinds = {r["kind"] for remedy in decision["remedies"] for r in remedy["requirements"]}
    assert "grant" in kinds
    assert "trusted_device" in kinds
    assert "fresh_mfa" in kinds
    assert "Denied" in decision["message"]
    assert decision["step_up_url"].endswith("hub/nbguard/mfa/step-up")
    assert ledger_access(guard, client.name)[-1]["allowed"] is False


async def test_prod_data_is_refused_outside_a_prod_server(guard: Guard) -> None:
    """Environment separation holds: prod data from a train server is forbidden."""
    client = await server_client(guard, "data-scientist", teams=("risk",))
    decision = (
        await client.call(
            "POST",
            "api/v1/decisions",
            json={"action": "dataset.read", "resource": "dataset:ledger-prod"},
        )
    ).json()
    assert decision["allowed"] is False
    assert "context.environment-separation" in decision["policy_ids"]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [
        pytest.param(b"{", "application/json", 400, "not valid JSON", id="truncated"),
        pytest.param(b"[]", "application/json", 400, "JSON object", id="array"),
        pytest.param(b'{"action": 1, "resource": "dataset:x"}', "application/json", 400,
                     "action must be a string", id="wrong-type"),
        pytest.param(b'{"action": "dataset.read"}', "application/json", 400,
                     "Missing field: resource", id="missing"),
        pytest.param(b'{"action": "dataset.read", "resource": "dataset:sales", "context": {}}',
                     "application/json", 400, "Unknown field(s): context", id="context-smuggled"),
        pytest.param(b'{"action": "dataset.read", "resource": "hub:hub"}', "application/json",
                     400, "Decisions are made on", id="hub-resource"),
        pytest.param(b'{"action": "dataset.read", "resource": "nonsense"}', "application/json",
                     400, "entity", id="bad-resource"),
        pytest.param(b'{"action": "drop.tables", "resource": "dataset:sales"}',
                     "application/json", 400, "unknown action", id="unknown-action"),
        pytest.param(b"action=dataset.read", "application/x-www-form-urlencoded", 415,
                     "application/json", id="form"),
        pytest.param(b'{"a": "' + b"x" * 70000 + b'"}', "application/json", 413, "exceeds",
                     id="oversized"),
    ],
)  # fmt: skip
async def test_bad_decision_requests_get_clear_4xx(
    guard: Guard, body: bytes, content_type: str, status: int, words: str
) -> None:
    """Malformed, wrongly typed, smuggled or oversized bodies get a 4xx naming the problem."""
    client = await user_client(guard)
    response = await client.call(
        "POST", "api/v1/decisions", data=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == status, response.text
    assert words in error_of(response)["message"]


@pytest.mark.parametrize(
    "cell",
    [
        pytest.param("not json", id="not-json"),
        pytest.param('{"cell_id": "c"}', id="no-kernel"),
        pytest.param('{"kernel_id": "k", "seq": -1}', id="negative-seq"),
        pytest.param('{"kernel_id": "k\\n1"}', id="newline"),
        pytest.param('{"kernel_id": "k", "code": "rm -rf"}', id="extra-key"),
    ],
)
async def test_malformed_cell_header_is_refused(guard: Guard, cell: str) -> None:
    """A malformed X-NBGuard-Cell header is a 400, not a ledger record with junk in it."""
    client = await user_client(guard)
    response = await client.call(
        "POST",
        "api/v1/decisions",
        json={"action": "dataset.read", "resource": "dataset:sales"},
        headers={"X-NBGuard-Cell": cell},
    )
    assert response.status_code == 400
    assert "X-NBGuard-Cell" in error_of(response)["message"]


async def test_no_request_leaves_a_ledger_record_announced(guard: Guard) -> None:
    """Every API request announces its decision record to the ledger's group commit and
    settles that by the record or by its answer, whatever the answer (200, 400, 401)."""
    client = await user_client(guard)
    decision = {"action": "dataset.read", "resource": "dataset:sales"}
    answers = [
        await client.call("POST", "api/v1/decisions", json=decision),
        await client.call("POST", "api/v1/decisions", json={"action": 3}),
        await client.call("GET", "api/v1/me"),
        await asyncio.to_thread(requests.get, guard.url("api/v1/me"), timeout=30),
    ]
    assert [a.status_code for a in answers] == [200, 400, 200, 401]
    assert guard.service.ledger.expected_appends == 0


async def test_answers_carry_the_guard_headers_and_a_date(guard: Guard) -> None:
    """Every answer, allowed, refused or unauthenticated, has the no-store, nosniff and
    framing headers, JSON as its type, and an HTTP Date of now."""
    client = await user_client(guard)
    decision = {"action": "dataset.read", "resource": "dataset:sales"}
    answers = [
        await client.call("POST", "api/v1/decisions", json=decision),
        await client.call("POST", "api/v1/decisions", json={"action": 3}),
        await asyncio.to_thread(requests.get, guard.url("api/v1/me"), timeout=30),
    ]
    assert [a.status_code for a in answers] == [200, 400, 401]
    for answer in answers:
        assert answer.headers["Cache-Control"] == "no-store"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
        assert answer.headers["Content-Type"] == "application/json; charset=utf-8"
        date = parsedate_to_datetime(answer.headers["Date"])
        assert answer.headers["Date"].endswith(" GMT")
        assert abs(date.timestamp() - time.time()) < 120  # this hour, not a cached old one
