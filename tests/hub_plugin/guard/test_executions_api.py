"""The execution records API: a server's witnesses report cells; kernels that lie get nowhere."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from nbguard.elevation.rules import ApprovalRule

from .conftest import Client, Guard, server_client, user_client
from .witnesses import Kernel, executions_of, ledger_bodies, now_text, send

pytestmark = pytest.mark.asyncio(loop_scope="module")

BREAK_GLASS = ApprovalRule(approvals=1, max_duration_seconds=3600, break_glass=True)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def alice(guard: Guard) -> AsyncIterator[Client]:
    """One data scientist's running server, shared by this module's tests."""
    yield await server_client(guard)


def error_message(response: Any) -> str:
    """The message of a JSON error answer."""
    body = response.json()
    assert set(body) == {"error"}, body
    return str(body["error"]["message"])


async def test_a_batch_is_stored_and_recorded_in_the_ledger(guard: Guard, alice: Client) -> None:
    """Each record of both witnesses becomes one cell_execution record of the token's user."""
    kernel = Kernel()
    response = await send(alice, "kernel", *(kernel.kernel_record(seq) for seq in range(3)))
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 3, "duplicates": 0}
    response = await send(alice, "server", kernel.server_record(0))
    assert response.json() == {"accepted": 1, "duplicates": 0}
    bodies = executions_of(guard, kernel)
    assert [(b["witness"], b["seq"]) for b in bodies] == [
        ("kernel", 0), ("kernel", 1), ("kernel", 2), ("server", 0)
    ]  # fmt: skip
    first = bodies[0]
    assert first["code"] == kernel.code(0)
    assert (first["instance"], first["msg_id"], first["server"]) == (
        kernel.kernel_instance, kernel.msg_id(0), ""
    )  # fmt: skip
    assert (first["privileged"], first["claimed_privileged"]) == (False, False)
    assert (bodies[3]["status"], bodies[3]["jupyter_session"]) == ("unknown", "sess-1")


async def test_a_retried_batch_is_recorded_once(guard: Guard, alice: Client) -> None:
    """Sending a batch again answers with duplicates and writes nothing more."""
    kernel = Kernel()
    records = [kernel.kernel_record(seq) for seq in range(4)]
    assert (await send(alice, "kernel", *records[:2])).json() == {"accepted": 2, "duplicates": 0}
    again = await send(alice, "kernel", *records)
    assert again.json() == {"accepted": 2, "duplicates": 2}
    assert (await send(alice, "kernel", *records)).json() == {"accepted": 0, "duplicates": 4}
    assert [b["seq"] for b in executions_of(guard, kernel)] == [0, 1, 2, 3]


async def test_a_users_own_token_is_refused(guard: Guard) -> None:
    """A token the user minted (not their server's) cannot write execution records."""
    client = await user_client(guard)
    kernel = Kernel()
    response = await send(client, "kernel", kernel.kernel_record(0))
    assert response.status_code == 403
    assert "server's own token" in error_message(response)
    assert guard.service.executions.count(user=client.name) == 0


async def test_another_users_server_cannot_write_for_this_server(
    guard: Guard, alice: Client
) -> None:
    """Mallory's server sending alice's kernel ids writes mallory's records, never alice's,
    and takes none of alice's stream positions; naming a user in the body is refused."""
    mallory = await server_client(guard)
    kernel = Kernel()
    forged = kernel.kernel_record(0, code="print('alice did it')", code_sha256=hashlib.sha256(
        b"print('alice did it')").hexdigest())  # fmt: skip
    assert (await send(mallory, "kernel", forged)).json() == {"accepted": 1, "duplicates": 0}
    named = {**kernel.kernel_record(1), "user": alice.name}
    response = await send(mallory, "kernel", named)
    assert response.status_code == 400
    assert "unknown field user" in error_message(response)
    assert (await send(alice, "kernel", kernel.kernel_record(0))).json() == {
        "accepted": 1, "duplicates": 0
    }  # fmt: skip
    mallorys = ledger_bodies(guard, "cell_execution", mallory.name)
    alices = [b for b in ledger_bodies(guard, "cell_execution", alice.name)
              if b["kernel_id"] == kernel.kernel_id]  # fmt: skip
    assert [b["code"] for b in mallorys] == ["print('alice did it')"]
    assert [b["code"] for b in alices] == [kernel.code(0)]


def _kernel_with(**changes: Any) -> dict[str, Any]:
    return {**Kernel().kernel_record(1), **changes}


def _kernel_without(name: str) -> dict[str, Any]:
    record = Kernel().kernel_record(1)
    del record[name]
    return record


@pytest.mark.parametrize(
    ("witness", "record", "field"),
    [
        pytest.param("kernel", _kernel_with(seq=-1), "seq", id="negative-seq"),
        pytest.param("kernel", _kernel_with(seq="1"), "seq", id="text-seq"),
        pytest.param("kernel", _kernel_without("instance"), "instance", id="no-instance"),
        pytest.param("kernel", _kernel_with(kernel_id="k\n1"), "kernel_id", id="newline-kernel"),
        pytest.param("kernel", _kernel_with(code_sha256="0" * 64), "code_sha256",
                     id="hash-not-of-code"),
        pytest.param("kernel", _kernel_with(started="yesterday"), "started", id="bad-time"),
        pytest.param("kernel", _kernel_with(status="fine"), "status", id="bad-status"),
        pytest.param("kernel", _kernel_with(privileged="no"), "privileged", id="text-claim"),
        pytest.param("kernel", _kernel_with(resources=[1]), "resources", id="number-resource"),
        pytest.param("kernel", _kernel_with(server="gpu"), "server", id="server-in-body"),
        pytest.param("server", Kernel().server_record(1, msg_id=""), "msg_id",
                     id="server-empty-msg"),
        pytest.param("server", Kernel().kernel_record(1), "code", id="kernel-fields-as-server"),
    ],
)  # fmt: skip
async def test_a_malformed_record_refuses_the_whole_batch(
    guard: Guard, alice: Client, witness: str, record: dict[str, Any], field: str
) -> None:
    """One bad record: 400 naming its index and field, and nothing of the batch is kept."""
    before = guard.service.executions.count(user=alice.name)
    kernel = Kernel()
    good = kernel.kernel_record(0) if witness == "kernel" else kernel.server_record(0)
    response = await send(alice, witness, good, record)
    assert response.status_code == 400, response.text
    message = error_message(response)
    assert message.startswith("record 1: ")
    assert field in message
    assert guard.service.executions.count(user=alice.name) == before
    assert executions_of(guard, kernel) == []


@pytest.mark.parametrize(
    ("body", "words"),
    [
        pytest.param({"records": []}, "exactly witness and records", id="no-witness"),
        pytest.param({"witness": "proxy", "records": []}, "witness must be", id="bad-witness"),
        pytest.param({"witness": "kernel", "records": [{}] * 501}, "at most 500", id="501"),
        pytest.param([], "must be a JSON object", id="list"),
    ],
)  # fmt: skip
async def test_malformed_batches_get_400(alice: Client, body: Any, words: str) -> None:
    """The batch's own shape is checked too."""
    response = await alice.call("POST", "api/v1/executions", json=body)
    assert response.status_code == 400, response.text
    assert words in error_message(response)


async def test_an_oversized_body_is_413_and_a_non_json_body_415(
    guard: Guard, alice: Client
) -> None:
    """More than 1 MiB of JSON is refused with 413; another content type with 415."""
    kernel = Kernel()
    code = "#" * (1024 * 1024)
    big = kernel.kernel_record(0, code=code, code_sha256=hashlib.sha256(code.encode()).hexdigest())
    response = await send(alice, "kernel", big)
    assert response.status_code == 413, response.text
    response = await alice.call("POST", "api/v1/executions", data=b"{}",
                                headers={"Content-Type": "text/plain"})  # fmt: skip
    assert response.status_code == 415
    assert executions_of(guard, kernel) == []


async def test_privileged_comes_from_grants_not_from_the_kernel(
    guard: Guard, alice: Client
) -> None:
    """Without a grant a claim of privilege is kept but not believed; with one, a kernel
    that denies it is overruled; a clock set back into a grant only marks more."""
    kernel = Kernel()
    response = await send(alice, "kernel", kernel.kernel_record(0, privileged=True))
    assert response.status_code == 200, response.text
    grant = guard.service.elevations.break_glass(
        user=alice.name, role="ml-engineer", duration_seconds=600, reason="incident 7",
        environment="train", sensitivity="internal", rule=BREAK_GLASS,
    )  # fmt: skip
    await send(alice, "kernel", kernel.kernel_record(1, privileged=False))
    await send(alice, "server", kernel.server_record(1))
    guard.service.elevations.revoke(grant.id, by=alice.name, reason="done")
    await send(
        alice,
        "kernel",
        kernel.kernel_record(2),
        kernel.kernel_record(3, started=now_text(-3600)),
    )
    flags = [(b["witness"], b["seq"], b["privileged"], b.get("claimed_privileged"))
             for b in executions_of(guard, kernel)]  # fmt: skip
    assert flags == [
        ("kernel", 0, False, True),
        ("kernel", 1, True, False),
        ("server", 1, True, None),
        ("kernel", 2, False, False),
        ("kernel", 3, True, False),
    ]


async def test_a_locked_users_executions_are_still_recorded(guard: Guard) -> None:
    """A lock refuses access, not evidence: a locked user's kernels are still recorded."""
    bob = await server_client(guard)
    lock = guard.service.elevations.lock(kind="user", value=bob.name, reason="x", by="admin")
    try:
        kernel = Kernel()
        response = await send(bob, "kernel", kernel.kernel_record(0))
        assert response.json() == {"accepted": 1, "duplicates": 0}
    finally:
        guard.service.elevations.unlock(lock.id, by="admin")


async def test_the_ledger_must_not_be_the_services_own_sqlite_file(guard: Guard) -> None:
    """Records are written to the ledger inside the store's transaction, so one SQLite file
    for both would lock itself: the service refuses to start so configured."""
    from nbguard.errors import ConfigError
    from nbguard.hub_plugin.guard.app import GuardService

    config = guard.service.config.copy()
    config.GuardService.db_url = config.Ledger.url
    with pytest.raises(ConfigError, match="same SQLite file"):
        GuardService(config=config).init_components()
