"""The elevation API end to end: ask, approve, use, revoke, and the attacks on each step."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import pytest_asyncio
import requests

from nbguard.elevation.rules import ApprovalRules

from ..conftest import ledger_bodies
from .conftest import Client, Guard, server_client, user_client

pytestmark = pytest.mark.asyncio(loop_scope="module")

RULES = [
    {"match": {"kind": "role", "role": "ml-engineer"}, "max_duration_seconds": 3600,
     "break_glass": True},
    {"match": {"kind": "role", "role": "data-engineer"}, "approvals": 2},
]  # fmt: skip
DEFAULT_RULE = {"approvals": 1, "max_duration_seconds": 14400}
FEATURES = {"action": "dataset.read", "resource": "dataset:features"}


class Receiver:
    """A loopback webhook receiver that keeps every JSON payload posted to it."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.raw.append(body)
                receiver.payloads.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self, name: str) -> list[dict[str, Any]]:
        """The payloads of one event."""
        return [p for p in self.payloads if p["event"] == name]

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def hook() -> Iterator[Receiver]:
    """The webhook receiver of this module."""
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module", autouse=True)
async def elevation_setup(guard: Guard, hook: Receiver) -> AsyncIterator[None]:
    """This module's approval rules and webhook URL on the running service."""
    service = guard.service
    saved = service.rules, service.notifier.url
    service.rules = ApprovalRules(RULES, default=DEFAULT_RULE)
    service.notifier.url = hook.url
    yield
    await service.notifier.drain()
    service.rules, service.notifier.url = saved


def error_of(response: requests.Response) -> dict[str, Any]:
    """The JSON error body of a 4xx answer (it must be one)."""
    assert response.headers["Content-Type"].startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["status"] == response.status_code
    return dict(body["error"])


def elevation_records(guard: Guard, request_id: str) -> list[dict[str, Any]]:
    """The elevation ledger records about one request, in order."""
    return [
        body
        for body in ledger_bodies(guard.service.ledger, "elevation")
        if body["request_id"] == request_id
    ]


async def decide(client: Client, resource: str = "dataset:features") -> dict[str, Any]:
    """The caller's decision on reading ``resource``."""
    response = await client.call(
        "POST", "api/v1/decisions", json={"action": "dataset.read", "resource": resource}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def ask(client: Client, status: int = 201, **body: Any) -> dict[str, Any]:
    """POST a request (default: two hours of reading dataset:features) expecting ``status``."""
    payload = {**FEATURES, "duration_seconds": 7200, "reason": "churn model", **body}
    payload = {k: v for k, v in payload.items() if v is not None}
    response = await client.call("POST", "api/v1/requests", json=payload)
    assert response.status_code == status, response.text
    return dict(response.json())


async def verdict(client: Client, request_id: str, status: int = 200, **body: Any) -> Any:
    """POST a decision on a request expecting ``status``."""
    payload = {"verdict": "approve", "comment": "ok", **body}
    response = await client.call("POST", f"api/v1/requests/{request_id}/decision", json=payload)
    assert response.status_code == status, response.text
    return response.json()


async def test_ask_approve_use_revoke(guard: Guard, hook: Receiver) -> None:
    """Denied, asks, a reviewer approves, allowed, an admin revokes, denied on the next call."""
    alice = await server_client(guard, teams=("risk",))
    denied = await decide(alice)
    assert denied["allowed"] is False
    kinds = {r["kind"] for remedy in denied["remedies"] for r in remedy["requirements"]}
    assert "grant" in kinds

    request = await ask(alice)
    assert request["status"] == "pending"
    assert request["requester"] == alice.name
    assert (request["environment"], request["sensitivity"]) == ("train", "confidential")
    assert request["target"] == "dataset:features"

    reviewer = await user_client(guard, "reviewer", teams=("risk",))
    approvable = (await reviewer.call("GET", "api/v1/requests?scope=approvable")).json()
    assert request["id"] in [r["id"] for r in approvable["requests"]]
    approved = await verdict(reviewer, request["id"], comment="looks fine")
    assert approved["status"] == "approved"
    assert approved["grant_id"]
    assert (await decide(alice))["allowed"] is True

    mine = (await alice.call("GET", "api/v1/grants")).json()["grants"]
    assert [g["id"] for g in mine] == [approved["grant_id"]]
    admin = await user_client(guard, "admin")
    revoked = await admin.call(
        "POST", f"api/v1/grants/{approved['grant_id']}/revoke", json={"reason": "incident"}
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_by"] == admin.name
    assert (await decide(alice))["allowed"] is False

    records = elevation_records(guard, request["id"])
    assert [r["event"] for r in records] == ["request", "approve", "revoke"]
    assert records[1]["approver"] == reviewer.name
    assert records[1]["grant_id"] == approved["grant_id"]
    assert records[1]["expires_at"].endswith("Z")
    await guard.service.notifier.drain()
    names = [p["event"] for p in hook.payloads if request["id"] in json.dumps(p)]
    assert names == ["request.created", "request.approved", "grant.revoked"]
    for raw in hook.raw:
        for token in (alice.token, reviewer.token, admin.token, guard.service.api_token):
            assert token.encode() not in raw
        assert b"churn model" not in raw


async def test_self_approval_is_forbidden(guard: Guard) -> None:
    """A reviewer never approves their own request (policy: separation of duties)."""
    reviewer = await user_client(guard, "reviewer")
    request = await ask(reviewer, role="data-scientist", action=None, resource=None)
    response = await reviewer.call(
        "POST", f"api/v1/requests/{request['id']}/decision", json={"verdict": "approve"}
    )
    assert response.status_code == 403, response.text
    assert "sod.no-self-approval" in error_of(response)["decision"]["policy_ids"]


async def test_second_decision_by_one_approver_conflicts(guard: Guard) -> None:
    """One approver counts once; a decided request takes no further decision."""
    alice = await user_client(guard)
    request = await ask(alice, role="data-engineer", action=None, resource=None)
    assert request["required_approvals"] == 2
    first = await user_client(guard, "reviewer")
    second = await user_client(guard, "reviewer")
    assert (await verdict(first, request["id"]))["status"] == "pending"
    assert "already decided" in error_of_json(await verdict(first, request["id"], 409))
    assert (await verdict(second, request["id"]))["status"] == "approved"
    third = await user_client(guard, "admin")
    assert "already approved" in error_of_json(await verdict(third, request["id"], 409))


def error_of_json(body: dict[str, Any]) -> str:
    """The message of a JSON error body."""
    return str(body["error"]["message"])


async def test_requests_are_private(guard: Guard) -> None:
    """Another data scientist sees neither the request nor can approve it; unknown ids are 404."""
    alice = await user_client(guard)
    request = await ask(alice)
    mallory = await user_client(guard)
    for path in (f"api/v1/requests/{request['id']}", "api/v1/requests/req-nope"):
        response = await mallory.call("GET", path)
        assert response.status_code == 404, response.text
        assert error_of(response)["code"] == "not_found"
    assert (await alice.call("GET", f"api/v1/requests/{request['id']}")).status_code == 200
    response = await mallory.call(
        "POST", f"api/v1/requests/{request['id']}/decision", json={"verdict": "approve"}
    )
    assert response.status_code == 403
    listed = (await mallory.call("GET", "api/v1/requests?scope=approvable")).json()
    assert listed == {"requests": []}
    assert (await verdict(mallory, "req-nope", 404))["error"]["code"] == "not_found"
    response = await mallory.call("POST", f"api/v1/requests/{request['id']}/cancel")
    assert response.status_code == 404


async def test_cancel_by_the_requester_only(guard: Guard) -> None:
    """The requester cancels a pending request once; an approver may not cancel it."""
    alice = await user_client(guard)
    request = await ask(alice)
    reviewer = await user_client(guard, "reviewer")
    path = f"api/v1/requests/{request['id']}/cancel"
    assert (await reviewer.call("POST", path)).status_code == 403
    response = await alice.call("POST", path)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert (await alice.call("POST", path)).status_code == 409
    assert (await verdict(reviewer, request["id"], 409))["error"]["code"] == "conflict"
    assert [r["event"] for r in elevation_records(guard, request["id"])] == ["request", "cancel"]


async def test_a_denied_request_leaves_nothing(guard: Guard) -> None:
    """Asking for admin is refused by policy and stores no request."""
    alice = await user_client(guard)
    response = await alice.call(
        "POST",
        "api/v1/requests",
        json={"role": "admin", "duration_seconds": 60, "reason": "please"},
    )
    assert response.status_code == 403, response.text
    mine = (await alice.call("GET", "api/v1/requests")).json()
    assert mine == {"requests": []}


async def test_an_expired_grant_stops_working(guard: Guard) -> None:
    """A two-second grant allows, then denies once it has run out."""
    alice = await server_client(guard, teams=("risk",))
    request = await ask(alice, duration_seconds=2)
    reviewer = await user_client(guard, "reviewer")
    approved = await verdict(reviewer, request["id"])
    assert (await decide(alice))["allowed"] is True
    await asyncio.sleep(2.2)
    assert (await decide(alice))["allowed"] is False
    admin = await user_client(guard, "admin")
    response = await admin.call(
        "POST", f"api/v1/grants/{approved['grant_id']}/revoke", json={"reason": "late"}
    )
    assert response.status_code == 409
    assert "expired" in error_of(response)["message"]


async def test_revoking_twice_and_by_others(guard: Guard) -> None:
    """The holder may give a grant up once; a third user may not revoke it; unknown is 404."""
    alice = await user_client(guard, teams=("risk",))
    request = await ask(alice)
    approved = await verdict(await user_client(guard, "reviewer"), request["id"])
    path = f"api/v1/grants/{approved['grant_id']}/revoke"
    mallory = await user_client(guard)
    assert (await mallory.call("POST", path, json={"reason": "x"})).status_code == 403
    response = await alice.call("POST", path, json={"reason": "done early"})
    assert response.status_code == 200, response.text
    assert response.json()["stopped_servers"] == []
    assert (await alice.call("POST", path, json={"reason": "again"})).status_code == 409
    response = await alice.call("POST", "api/v1/grants/grant-nope/revoke", json={"reason": "x"})
    assert response.status_code == 404


async def test_revoke_can_stop_the_holders_servers(guard: Guard) -> None:
    """stop_servers ends the holder's running server through the hub."""
    alice = await server_client(guard, teams=("risk",))
    request = await ask(alice)
    approved = await verdict(await user_client(guard, "reviewer"), request["id"])
    admin = await user_client(guard, "admin")
    response = await admin.call(
        "POST",
        f"api/v1/grants/{approved['grant_id']}/revoke",
        json={"reason": "suspicious", "stop_servers": True},
    )
    assert response.status_code == 200, response.text
    assert response.json()["stopped_servers"] == [f"{alice.name}/"]
    assert not guard.hub.users[alice.name].spawner.active


async def test_revoke_can_order_the_holders_servers_to_interrupt(guard: Guard) -> None:
    """interrupt_kernels sends the holder's running server (and nobody else's) an order; a
    server without nbguard's extension answers with an error, reported, and keeps running."""
    alice = await server_client(guard, teams=("risk",))
    bystander = await server_client(guard)
    request = await ask(alice)
    approved = await verdict(await user_client(guard, "reviewer"), request["id"])
    response = await alice.call(
        "POST",
        f"api/v1/grants/{approved['grant_id']}/revoke",
        json={"reason": "done", "interrupt_kernels": True},
    )
    assert response.status_code == 200, response.text
    [outcome] = response.json()["interrupted_servers"]
    assert outcome["server"] == alice.name != bystander.name
    assert "error" in outcome
    assert guard.hub.users[alice.name].spawner.active


async def test_break_glass_is_granted_and_reviewed(guard: Guard, hook: Receiver) -> None:
    """Break-glass grants at once where the rule allows, notifies, and is reviewed by another."""
    alice = await user_client(guard)
    body = {"role": "ml-engineer", "duration_seconds": 600, "reason": "prod incident"}
    response = await alice.call("POST", "api/v1/break-glass", json=body)
    assert response.status_code == 201, response.text
    grant = response.json()
    assert grant["break_glass"] is True
    assert grant["review_status"] == "required"
    me = (await alice.call("GET", "api/v1/me")).json()
    assert me["elevated_roles"] == ["ml-engineer"]
    path = f"api/v1/grants/{grant['id']}/review"
    own = await alice.call("POST", path, json={"comment": "fine by me"})
    assert own.status_code == 403
    reviewer = await user_client(guard, "reviewer")
    reviewed = await reviewer.call("POST", path, json={"comment": "checked the incident"})
    assert reviewed.status_code == 200, reviewed.text
    assert reviewed.json()["review_status"] == "reviewed"
    again = await reviewer.call("POST", path, json={"comment": "again"})
    assert again.status_code == 409
    events = [r["event"] for r in elevation_records(guard, grant["request_id"])]
    assert events == ["break-glass", "review"]
    await guard.service.notifier.drain()
    assert [p["grant"]["id"] for p in hook.events("break-glass")][-1] == grant["id"]


async def test_break_glass_where_the_rule_does_not_allow_it(guard: Guard) -> None:
    """No break-glass for a grant whose rule does not allow it: 403, nothing granted."""
    alice = await user_client(guard, teams=("risk",))
    body = {**FEATURES, "duration_seconds": 600, "reason": "hurry"}
    response = await alice.call("POST", "api/v1/break-glass", json=body)
    assert response.status_code == 403
    assert "Break-glass is not allowed" in error_of(response)["message"]
    assert (await alice.call("GET", "api/v1/grants")).json() == {"grants": []}


@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [
        pytest.param(b"{", "application/json", 400, "not valid JSON", id="truncated"),
        pytest.param(b"[]", "application/json", 400, "JSON object", id="array"),
        pytest.param(b'{"role": 1, "duration_seconds": 60, "reason": "r"}', "application/json",
                     400, "role must be a string", id="wrong-type"),
        pytest.param(b'{"role": "ml-engineer", "duration_seconds": true, "reason": "r"}',
                     "application/json", 400, "duration_seconds must be a whole number",
                     id="bool-duration"),
        pytest.param(b'{"role": "ml-engineer", "duration_seconds": 60}', "application/json",
                     400, "Missing field: reason", id="missing"),
        pytest.param(b'{"role": "ml-engineer", "duration_seconds": 60, "reason": "r", '
                     b'"environment": "prod"}', "application/json", 400, "Unknown field(s)",
                     id="environment-smuggled"),
        pytest.param(b'{"role": "ml-engineer", "action": "dataset.read", "duration_seconds": 60, '
                     b'"reason": "r"}', "application/json", 400, "either", id="both"),
        pytest.param(b'{"duration_seconds": 60, "reason": "r"}', "application/json", 400,
                     "Ask for a role", id="neither"),
        pytest.param(b'{"role": "wizard", "duration_seconds": 60, "reason": "r"}',
                     "application/json", 400, "Unknown role", id="unknown-role"),
        pytest.param(b'{"action": "dataset.read", "resource": "dataset:nope", '
                     b'"duration_seconds": 60, "reason": "r"}', "application/json", 400,
                     "Unknown resource", id="unknown-resource"),
        pytest.param(b'{"action": "dataset.read", "resource": "dataset:features", '
                     b'"duration_seconds": 99999, "reason": "r"}', "application/json", 400,
                     "from 1 to 14400", id="too-long"),
        pytest.param(b'{"role": "ml-engineer", "duration_seconds": 7200, "reason": "r"}',
                     "application/json", 400, "from 1 to 3600", id="too-long-for-rule"),
        pytest.param(b'{"role": "ml-engineer", "duration_seconds": 60, "reason": "  "}',
                     "application/json", 400, "reason is required", id="blank-reason"),
        pytest.param(b"role=ml-engineer", "application/x-www-form-urlencoded", 415,
                     "application/json", id="form"),
        pytest.param(b'{"a": "' + b"x" * 70000 + b'"}', "application/json", 413, "exceeds",
                     id="oversized"),
    ],
)  # fmt: skip
async def test_bad_requests_get_clear_4xx(
    guard: Guard, body: bytes, content_type: str, status: int, words: str
) -> None:
    """Malformed, wrongly typed, smuggled, oversized or too long asks get a 4xx naming it."""
    client = await user_client(guard)
    for path in ("api/v1/requests", "api/v1/break-glass"):
        response = await client.call(
            "POST", path, data=body, headers={"Content-Type": content_type}
        )
        assert response.status_code == status, response.text
        assert words in error_of(response)["message"]
    assert (await client.call("GET", "api/v1/requests")).json() == {"requests": []}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        pytest.param({"verdict": "maybe"}, "verdict must be", id="bad-verdict"),
        pytest.param(
            {"verdict": "deny", "comment": "  "}, "comment is required", id="deny-without-comment"
        ),
        pytest.param({"verdict": "approve", "comment": 5}, "comment must be", id="wrong-type"),
        pytest.param({"verdict": "approve", "grant": "all"}, "Unknown field", id="extra"),
    ],
)
async def test_bad_decisions_get_400(guard: Guard, body: dict[str, Any], words: str) -> None:
    """Bad verdict bodies are refused and leave the request pending."""
    alice = await user_client(guard)
    request = await ask(alice)
    reviewer = await user_client(guard, "reviewer")
    answer = await verdict(reviewer, request["id"], 400, **body)
    assert words in error_of_json(answer)
    fetched = (await alice.call("GET", f"api/v1/requests/{request['id']}")).json()
    assert fetched["status"] == "pending"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("GET", "api/v1/requests?scope=all", None, id="all-requests"),
        pytest.param("GET", "api/v1/grants?scope=all", None, id="all-grants"),
        pytest.param("GET", "api/v1/locks", None, id="locks"),
        pytest.param("POST", "api/v1/locks",
                     {"kind": "user", "value": "bob", "reason": "x"}, id="lock"),
        pytest.param("DELETE", "api/v1/locks/lock-x", None, id="unlock"),
    ],
)  # fmt: skip
async def test_admin_routes_refuse_others(
    guard: Guard, method: str, path: str, body: dict[str, Any] | None
) -> None:
    """Admin-only routes answer 403 to a reviewer."""
    reviewer = await user_client(guard, "reviewer")
    response = await reviewer.call(method, path, json=body)
    assert response.status_code == 403, response.text
    assert error_of(response)["code"] == "access_denied"


async def test_admin_lists_everything(guard: Guard) -> None:
    """An admin lists every request and grant; scope and status are checked."""
    alice = await user_client(guard)
    request = await ask(alice)
    admin = await user_client(guard, "admin")
    listed = (await admin.call("GET", "api/v1/requests?scope=all&status=pending")).json()
    assert request["id"] in [r["id"] for r in listed["requests"]]
    assert (await admin.call("GET", "api/v1/grants?scope=all&active=0")).status_code == 200
    assert (await admin.call("GET", f"api/v1/requests/{request['id']}")).status_code == 200
    for query in ("scope=everyone", "status=weird", "scope=approvable&status=denied"):
        response = await admin.call("GET", f"api/v1/requests?{query}")
        assert response.status_code == 400, query
    assert (await admin.call("GET", "api/v1/grants?active=yes")).status_code == 400


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-token"),
        pytest.param({"Authorization": "token not-a-real-token"}, id="forged-token"),
    ],
)
async def test_unauthenticated_calls_get_401(guard: Guard, headers: dict[str, str]) -> None:
    """Every elevation route refuses a missing or forged token with a JSON 401."""
    for method, path in (
        ("GET", "api/v1/requests"),
        ("POST", "api/v1/requests"),
        ("GET", "api/v1/requests/req-x"),
        ("POST", "api/v1/requests/req-x/decision"),
        ("POST", "api/v1/requests/req-x/cancel"),
        ("POST", "api/v1/break-glass"),
        ("GET", "api/v1/grants"),
        ("POST", "api/v1/grants/g/revoke"),
        ("POST", "api/v1/grants/g/review"),
    ):
        response = await asyncio.to_thread(
            requests.request, method, guard.url(path), headers=headers, timeout=30
        )
        assert response.status_code == 401, (method, path)
        assert error_of(response)["code"] == "unauthenticated"


async def test_request_entities_do_not_pile_up(guard: Guard) -> None:
    """Each ask and each request decided on puts an ElevationRequest entity into the policy
    engine; past ``keep`` the idle ones are dropped, and a request whose entity was dropped
    is decided as before (its entity is built again from the store)."""
    from nbguard.policy import EntityRef

    held = guard.service.request_entities
    engine = guard.service.engine
    saved, held.keep = held.keep, 2
    try:
        askers = [await server_client(guard, teams=("risk",)) for _ in range(5)]
        requests_made = [await ask(asker) for asker in askers]
        reviewer = await user_client(guard, "reviewer", teams=("risk",))
        listed = (await reviewer.call("GET", "api/v1/requests?scope=approvable")).json()
        ids = [r["id"] for r in requests_made]
        assert set(ids) <= {r["id"] for r in listed["requests"]}
        assert held.held <= 2
        in_engine = [i for i in ids if EntityRef.of("ElevationRequest", i) in engine.entities]
        assert len(in_engine) <= 2
        dropped = next(i for i in ids if i not in in_engine)
        approved = await verdict(reviewer, dropped)
        assert approved["status"] == "approved"
        holder = askers[ids.index(dropped)]
        assert (await decide(holder))["allowed"] is True
        assert held.held <= 2
    finally:
        held.keep = saved
