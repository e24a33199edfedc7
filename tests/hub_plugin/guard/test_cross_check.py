"""The guard's cross-check end to end: what one witness alone saw becomes one alert, in the
ledger, the admin API and the sessions page, whichever replica finds it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from nbguard.executions.alerts import WitnessAlert

from .conftest import Client, Guard, server_client, signed_in, user_client
from .witnesses import Kernel, ledger_bodies, send

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def alice(guard: Guard) -> AsyncIterator[Client]:
    """One data scientist's running server, shared by this module's tests."""
    yield await server_client(guard)


async def check_now(guard: Guard, service: Any = None) -> list[WitnessAlert]:
    """One cross-check pass with no grace period (by ``service``, default the main one)."""
    return await (service or guard.service).witness_checker.check(grace_seconds=0)


def alerts_of(guard: Guard, kernel: Kernel) -> list[dict[str, Any]]:
    """The ``alert`` ledger bodies about one kernel, oldest first."""
    return [
        body
        for body in ledger_bodies(guard, "alert")
        if body.get("details", {}).get("kernel_id") == kernel.kernel_id
    ]


async def test_agreeing_witnesses_raise_no_alert(guard: Guard, alice: Client) -> None:
    """Kernel and server report the same cells without gaps: nothing to alert on."""
    kernel = Kernel()
    await send(alice, "kernel", *(kernel.kernel_record(seq) for seq in range(3)))
    await send(alice, "server", *(kernel.server_record(seq) for seq in range(3)))
    await check_now(guard)
    assert alerts_of(guard, kernel) == []


async def test_a_silenced_kernel_is_alerted_on(guard: Guard, alice: Client) -> None:
    """Cells the server saw and the kernel never reported (hooks unloaded): one alert each."""
    kernel = Kernel()
    await send(alice, "kernel", kernel.kernel_record(0))
    await send(alice, "server", *(kernel.server_record(seq) for seq in range(3)))
    await check_now(guard)
    found = alerts_of(guard, kernel)
    assert [(b["alert"], b["details"]["reason"], b["details"]["msg_id"]) for b in found] == [
        ("witness-mismatch", "only-server", kernel.msg_id(1)),
        ("witness-mismatch", "only-server", kernel.msg_id(2)),
    ]
    assert {b["subject"] for b in found} == {alice.name}
    assert found[0]["details"]["witness"] == "server"
    assert found[0]["severity"] == "warning"


async def test_code_that_bypassed_the_server_is_alerted_on(guard: Guard, alice: Client) -> None:
    """A cell the kernel ran that never crossed the server's websocket: an only-kernel alert."""
    kernel = Kernel()
    await send(alice, "kernel", kernel.kernel_record(0))
    await check_now(guard)
    [alert] = alerts_of(guard, kernel)
    assert (alert["details"]["reason"], alert["details"]["witness"]) == ("only-kernel", "kernel")


async def test_a_gap_in_a_stream_is_alerted_on(guard: Guard, alice: Client) -> None:
    """Kernel records 0 and 3 arrive, 1 and 2 never do: one kernel-seq-gap alert with the range."""
    kernel = Kernel()
    await send(alice, "kernel", kernel.kernel_record(0), kernel.kernel_record(3))
    await send(alice, "server", kernel.server_record(0), kernel.server_record(1))
    await check_now(guard)
    gaps = [b for b in alerts_of(guard, kernel) if b["alert"] == "kernel-seq-gap"]
    assert [gap["details"] for gap in gaps] == [
        {"reason": "seq-gap", "server": "", "witness": "kernel", "kernel_id": kernel.kernel_id,
         "instance": kernel.kernel_instance, "first_seq": 1, "last_seq": 2},
    ]  # fmt: skip
    assert gaps[0]["subject"] == alice.name


async def test_passes_and_replicas_raise_each_alert_once(guard: Guard, alice: Client) -> None:
    """Three passes at once on this service and a second replica on the same database and
    ledger, then more: every alert is in the ledger exactly once."""
    from nbguard.hub_plugin.guard.app import GuardService

    replica = GuardService(config=guard.service.config)
    await asyncio.to_thread(replica.init_components)
    try:
        kernel = Kernel()
        await send(alice, "server", *(kernel.server_record(seq) for seq in (0, 2, 4)))
        found = await asyncio.gather(
            check_now(guard), check_now(guard), check_now(guard, replica), check_now(guard, replica)
        )
        await check_now(guard, replica)
        mine = [a for alerts in found for a in alerts if a.kernel_id == kernel.kernel_id]
        assert len(mine) == 5  # three lone server records, two gaps
        assert len(alerts_of(guard, kernel)) == 5
    finally:
        replica.close()


async def test_admins_list_alerts_and_see_them_on_the_sessions_page(
    guard: Guard, alice: Client
) -> None:
    """GET /api/v1/alerts lists the newest first for admins; the sessions page shows them;
    others are refused."""
    kernel = Kernel()
    await send(alice, "server", kernel.server_record(0))
    await check_now(guard)
    admin = await user_client(guard, "admin")
    response = await admin.call("GET", f"api/v1/alerts?user={alice.name}&limit=1")
    assert response.status_code == 200, response.text
    [listed] = response.json()["alerts"]
    assert (listed["alert"], listed["kernel_id"], listed["user"]) == (
        "witness-mismatch", kernel.kernel_id, alice.name
    )  # fmt: skip
    assert listed["created"].endswith("Z")
    assert (await admin.call("GET", "api/v1/alerts?limit=0")).status_code == 400
    assert (await admin.call("GET", "api/v1/alerts?limit=²")).status_code == 400
    assert (await alice.call("GET", "api/v1/alerts")).status_code == 403

    browser = await signed_in(guard, "admin")
    page = await browser.get(guard.url("sessions"))
    assert page.status == 200, page.text
    assert "Witness alerts" in page.text
    assert f'data-alert="{listed["id"]}"' in page.text
    assert kernel.kernel_id in page.text


async def test_the_timer_runs_passes_on_its_own(guard: Guard, alice: Client) -> None:
    """With a short interval and no grace the running service alerts without being asked."""
    service = guard.service
    saved = service.witness_grace_seconds, service.witness_check_interval
    service.witness_checker.stop()
    service.witness_grace_seconds, service.witness_check_interval = 0.0, 0.1
    service.witness_checker.start()
    try:
        kernel = Kernel()
        await send(alice, "server", kernel.server_record(0))
        for _ in range(100):
            if alerts_of(guard, kernel):
                break
            await asyncio.sleep(0.1)
        assert [b["details"]["reason"] for b in alerts_of(guard, kernel)] == ["only-server"]
    finally:
        service.witness_checker.stop()
        service.witness_grace_seconds, service.witness_check_interval = saved
        service.witness_checker.start()
