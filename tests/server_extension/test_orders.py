"""The guard's orders: a lock that interrupts kernels stops a running cell in a real kernel.

The Jupyter server and its kernels are real (pytest-jupyter's), and so is the
guard (its own process, see guard_process.py): orders are signed with the
guard's own key, and the lock goes through the guard's real lock API, which
posts the order to this server at the address the hub keeps for it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tornado.httpclient import AsyncHTTPClient

from nbguard.entitlements import EntitlementSigner

from .conftest import eventually
from .guard_process import GuardProcess, SpawnedServer
from .test_witness import KernelSocket, open_kernel

Fetch = Any
#: A cell that runs for a minute unless interrupted.
SLOW_CELL = "import time\nfor _ in range(600):\n    time.sleep(0.1)"


async def post_order(jp_serverapp: Any, body: bytes | str) -> tuple[int, dict[str, Any]]:
    """POST ``body`` to the order route with no Jupyter credentials at all; status and JSON."""
    response = await AsyncHTTPClient().fetch(
        jp_serverapp.connection_url + "nbguard/api/orders",
        method="POST",
        body=body,
        headers={"Content-Type": "application/json"},
        raise_error=False,
    )
    return response.code, json.loads(response.body or b"{}")


async def busy_kernel(
    jp_fetch: Fetch, jp_ws_fetch: Fetch, jp_serverapp: Any
) -> tuple[KernelSocket, dict[str, Any]]:
    """A kernel running :data:`SLOW_CELL`, once the server sees it busy; the request sent."""
    kernel = await open_kernel(jp_fetch, jp_ws_fetch, binary=False)
    slow = kernel.message(SLOW_CELL)
    await kernel.send(slow)
    manager = jp_serverapp.kernel_manager
    await eventually(lambda: manager.get_kernel(kernel.kernel_id).execution_state == "busy")
    return kernel, slow


async def test_only_the_guards_order_for_this_server_interrupts_and_only_once(
    jp_fetch: Fetch,
    jp_ws_fetch: Fetch,
    jp_serverapp: Any,
    guard_process: GuardProcess,
    guard_server: SpawnedServer,
) -> None:
    """Forged, misdirected, malformed and replayed orders change nothing; the guard's own
    order interrupts the running cell (KeyboardInterrupt) and is refused the second time."""
    kernel, slow = await busy_kernel(jp_fetch, jp_ws_fetch, jp_serverapp)
    name = guard_server.name
    impostor = EntitlementSigner(Ed25519PrivateKey.generate(), issuer="nbguard-guard", ttl=60)
    entitlement = guard_server.guard_call("GET", "api/v1/entitlements").json()["token"]
    forged = impostor.order(user=name, server=name, order="interrupt", reason="forged")
    refused = [
        (b"", 400),
        (b"[]", 400),
        (json.dumps({"order": 1}), 400),
        (json.dumps({"order": "x", "also": 1}), 400),
        (json.dumps({"order": "x" * 9000}), 400),
        (json.dumps({"order": "not.a.token"}), 403),
        (json.dumps({"order": entitlement}), 403),
        (json.dumps({"order": guard_process.order(name, f"{name}/gpu")}), 403),
        (json.dumps({"order": forged}), 403),
    ]
    for body, status in refused:
        code, answer = await post_order(jp_serverapp, body)
        assert (code, answer["error"]["status"]) == (status, status), (body, answer)
    manager = jp_serverapp.kernel_manager
    assert manager.get_kernel(kernel.kernel_id).execution_state == "busy"

    order = json.dumps({"order": guard_process.order(name, name)})
    code, answer = await post_order(jp_serverapp, order)
    assert code == 200, answer
    assert answer == {"order": "interrupt", "interrupted_kernels": [kernel.kernel_id]}
    reply = await kernel.reply_to(slow)
    assert (reply["status"], reply["ename"]) == ("error", "KeyboardInterrupt")
    code, answer = await post_order(jp_serverapp, order)
    assert (code, answer["error"]["code"]) == (409, "conflict")
    z = kernel.message("z = 3")  # the user was not locked: execution goes on
    await kernel.send(z)
    assert (await kernel.reply_to(z))["status"] == "ok"
    kernel.socket.close()


@pytest.mark.parametrize("guard_server", ["admin"], indirect=True)
async def test_a_lock_with_interrupt_kernels_stops_the_running_cell(
    jp_fetch: Fetch,
    jp_ws_fetch: Fetch,
    jp_serverapp: Any,
    guard_process: GuardProcess,
    guard_server: SpawnedServer,
) -> None:
    """Locking the user through the guard's API with ``interrupt_kernels`` interrupts the
    cell running now, the answer says so, and the server stops allowing execution at once."""
    name = guard_server.name
    guard_process.point_server(name, jp_serverapp.connection_url)
    kernel, slow = await busy_kernel(jp_fetch, jp_ws_fetch, jp_serverapp)
    cache = jp_serverapp.web_app.settings["nbguard"].entitlements
    # The guard posts its order to this server, whose loop must keep running meanwhile.
    status, lock = await asyncio.to_thread(guard_process.admin_lock, name, interrupt_kernels=True)
    try:
        assert status == 201, lock
        assert lock["interrupted_servers"] == [{"server": name, "interrupted_kernels": 1}]
        assert lock["stopped_servers"] == []
        reply = await kernel.reply_to(slow)
        assert (reply["status"], reply["ename"]) == ("error", "KeyboardInterrupt")
        assert not cache.allows_now("jupyter.kernel_execute")  # asked anew, and refused
    finally:
        kernel.socket.close()
        guard_process.unlock(lock["id"])
