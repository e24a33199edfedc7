"""The lock API: admins lock users and devices, the next decision is refused, locks lift."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from nbguard.elevation.store import ElevationStore

from ..conftest import ledger_bodies
from .conftest import Client, Guard, server_client, user_client

pytestmark = pytest.mark.asyncio(loop_scope="module")


def error_of(response: requests.Response) -> dict[str, Any]:
    """The JSON error body of a 4xx answer (it must be one)."""
    assert response.headers["Content-Type"].startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])


def lock_records(guard: Guard, lock_id: str) -> list[dict[str, Any]]:
    """The lock ledger records of one lock, in order."""
    return [b for b in ledger_bodies(guard.service.ledger, "lock") if b["lock_id"] == lock_id]


async def read_sales(client: Client) -> requests.Response:
    """The caller's decision on reading an internal dataset (allowed when not locked)."""
    return await client.call(
        "POST", "api/v1/decisions", json={"action": "dataset.read", "resource": "dataset:sales"}
    )


async def test_lock_refuses_the_next_decision_and_unlock_restores(guard: Guard) -> None:
    """A locked user's next decision is refused; lifting the lock lets them in again."""
    alice = await user_client(guard)
    assert (await read_sales(alice)).json()["allowed"] is True
    admin = await user_client(guard, "admin")
    response = await admin.call(
        "POST", "api/v1/locks", json={"kind": "user", "value": alice.name, "reason": "phished"}
    )
    assert response.status_code == 201, response.text
    lock = response.json()
    assert (lock["kind"], lock["value"], lock["created_by"]) == ("user", alice.name, admin.name)
    refused = await read_sales(alice)
    assert refused.status_code == 403
    assert error_of(refused)["decision"]["lock_id"] == lock["id"]
    assert (await alice.call("GET", "api/v1/requests")).status_code == 403
    listed = (await admin.call("GET", "api/v1/locks")).json()["locks"]
    assert lock["id"] in [item["id"] for item in listed]

    lifted = await admin.call("DELETE", f"api/v1/locks/{lock['id']}")
    assert lifted.status_code == 200, lifted.text
    assert lifted.json()["lifted_by"] == admin.name
    assert (await read_sales(alice)).json()["allowed"] is True
    assert (await admin.call("DELETE", f"api/v1/locks/{lock['id']}")).status_code == 409
    assert (await admin.call("DELETE", "api/v1/locks/lock-nope")).status_code == 404
    assert [r["event"] for r in lock_records(guard, lock["id"])] == ["lock", "unlock"]
    assert lock_records(guard, lock["id"])[0]["by"] == admin.name


async def test_lock_from_another_process_refuses_the_next_decision(guard: Guard) -> None:
    """A lock and its lifting written by another replica's store on the same SQLite file
    count on the very next decision (the service reuses no answer across a commit)."""
    alice = await user_client(guard)
    for _ in range(3):  # answered more than once, so a reusable answer exists
        assert (await read_sales(alice)).json()["allowed"] is True
    other = ElevationStore(guard.service.db_url)
    try:
        lock = other.lock(kind="user", value=alice.name, reason="elsewhere", by="admin")
        refused = await read_sales(alice)
        assert refused.status_code == 403
        assert error_of(refused)["decision"]["lock_id"] == lock.id
        other.unlock(lock.id, by="admin")
        assert (await read_sales(alice)).json()["allowed"] is True
    finally:
        other.close()


async def test_lock_with_until_and_stop_servers(guard: Guard) -> None:
    """A timed lock carries its end, and stop_servers ends the user's running server."""
    alice = await server_client(guard)
    admin = await user_client(guard, "admin")
    body = {
        "kind": "user",
        "value": alice.name,
        "reason": "leaving",
        "until": "2999-01-01T00:00:00Z",
        "stop_servers": True,
    }
    response = await admin.call("POST", "api/v1/locks", json=body)
    assert response.status_code == 201, response.text
    lock = response.json()
    assert lock["until"].startswith("2999-01-01T00:00:00")
    assert lock["stopped_servers"] == [f"{alice.name}/"]
    assert not guard.hub.users[alice.name].spawner.active
    assert lock_records(guard, lock["id"])[0]["until"].startswith("2999-01-01T00:00:00")
    await admin.call("DELETE", f"api/v1/locks/{lock['id']}")


async def test_interrupting_a_server_that_takes_no_orders_is_reported(guard: Guard) -> None:
    """The hub keeps the running server's own URL; a server there that is not nbguard's
    (JupyterHub's mock server) cannot take the order: the answer says so per server, and
    the lock is in force all the same. (Orders carried out by a real server with nbguard's
    extension and kernels: tests/server_extension/test_orders.py.)"""
    alice = await server_client(guard)
    spawner = guard.hub.users[alice.name].spawner
    running = {s.user: s for s in await guard.service.hub.running_servers()}
    assert running[alice.name].url == spawner.server.url
    admin = await user_client(guard, "admin")
    body = {"kind": "user", "value": alice.name, "reason": "phished", "interrupt_kernels": True}
    response = await admin.call("POST", "api/v1/locks", json=body)
    assert response.status_code == 201, response.text
    lock = response.json()
    try:
        [outcome] = lock["interrupted_servers"]
        assert outcome["server"] == alice.name
        assert outcome["error"].startswith("the server answered HTTP 4"), outcome
        assert lock["stopped_servers"] == []
        assert spawner.active
        assert (await read_sales(alice)).status_code == 403
    finally:
        await admin.call("DELETE", f"api/v1/locks/{lock['id']}")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        pytest.param({"kind": "room", "value": "x", "reason": "r"}, "kind must be", id="kind"),
        pytest.param({"kind": "user", "value": "", "reason": "r"}, "value is required",
                     id="empty-value"),
        pytest.param({"kind": "user", "value": "x", "reason": "r", "until": "tomorrow"},
                     "RFC 3339", id="until-text"),
        pytest.param({"kind": "user", "value": "x", "reason": "r",
                      "until": "2999-01-01T00:00:00"}, "with a zone", id="until-naive"),
        pytest.param({"kind": "user", "value": "x", "reason": "r",
                      "until": "2000-01-01T00:00:00Z"}, "future", id="until-past"),
        pytest.param({"kind": "user", "value": "x"}, "Missing field: reason", id="missing"),
        pytest.param({"kind": "user", "value": "x", "reason": "r", "stop_servers": "yes"},
                     "stop_servers must be", id="wrong-type"),
        pytest.param({"kind": "user", "value": "x", "reason": "r", "interrupt_kernels": 1},
                     "interrupt_kernels must be", id="interrupt-wrong-type"),
    ],
)  # fmt: skip
async def test_bad_lock_bodies_get_400(guard: Guard, body: dict[str, Any], words: str) -> None:
    """Bad lock bodies are refused naming the field, and lock nobody."""
    admin = await user_client(guard, "admin")
    response = await admin.call("POST", "api/v1/locks", json=body)
    assert response.status_code == 400, response.text
    assert words in error_of(response)["message"]


async def test_non_admins_cannot_lock(guard: Guard) -> None:
    """A reviewer cannot lock, list or unlock; a forged token gets 401."""
    reviewer = await user_client(guard, "reviewer")
    body = {"kind": "user", "value": reviewer.name, "reason": "x"}
    assert (await reviewer.call("POST", "api/v1/locks", json=body)).status_code == 403
    assert (await reviewer.call("GET", "api/v1/locks")).status_code == 403
    forged = Client(guard, "not-a-token", "nobody")
    assert (await forged.call("GET", "api/v1/locks")).status_code == 401
    assert (await forged.call("DELETE", "api/v1/locks/x")).status_code == 401
