"""Witness records survive a guard outage and a server restart: all arrive, in order, once."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import Any

from nbguard.server_extension.guard_client import GuardClient
from nbguard.server_extension.shipper import WitnessShipper
from nbguard.server_extension.spool import WitnessSpool

from .conftest import GuardProcess, SpawnedServer, eventually
from .test_witness import all_witnessed, open_kernel, shipper_of, witnessed

Fetch = Any


def shipper(spool_file: Path, guard_url: str, token: str) -> WitnessShipper:
    """A shipper as a server process makes one: its own instance, fast retries."""
    return WitnessShipper(
        WitnessSpool(str(spool_file)),
        GuardClient(guard_url, token, timeout=5),
        instance=f"s-{secrets.token_hex(8)}",
        retry_min=0.05,
        retry_max=0.2,
    )


def record_cells(witness: WitnessShipper, kernel_id: str, count: int) -> list[str]:
    """Witness ``count`` execute requests on ``kernel_id``; their message ids."""
    msg_ids = [f"m-{secrets.token_hex(6)}" for _ in range(count)]
    for n, msg_id in enumerate(msg_ids):
        witness.record(
            kernel_id=kernel_id,
            msg_id=msg_id,
            cell_id=f"cell-{n}",
            session="session-1",
            code_sha256=hashlib.sha256(f"x = {n}".encode()).hexdigest(),
            silent=False,
        )
    return msg_ids


async def test_guard_outage_loses_nothing(
    jp_fetch: Fetch,
    jp_ws_fetch: Fetch,
    jp_serverapp: Any,
    guard_process: GuardProcess,
    guard_server: SpawnedServer,
) -> None:
    """Cells run while the guard is down are spooled, then delivered in order, once."""
    kernel = await open_kernel(jp_fetch, jp_ws_fetch, binary=True)
    first = await kernel.run("before = 1")
    await eventually(lambda: witnessed(guard_process, guard_server.name, kernel.kernel_id))
    guard_process.down()
    try:
        during = [await kernel.run(f"during = {n}") for n in range(3)]
        waiting = shipper_of(jp_serverapp)
        await eventually(lambda: waiting.pending() == 3)
    finally:
        guard_process.up()
    kernel.socket.close()
    records = await all_witnessed(guard_process, guard_server.name, kernel.kernel_id, 4)
    assert [r["msg_id"] for r in records] == [m["header"]["msg_id"] for m in [first, *during]]
    assert [r["seq"] for r in records] == [0, 1, 2, 3]
    await eventually(lambda: shipper_of(jp_serverapp).pending() == 0)


async def test_restarted_server_ships_what_the_last_run_left(
    tmp_path: Path, guard_process: GuardProcess, guard_server: SpawnedServer
) -> None:
    """Records spooled by a server that stopped while the guard was down arrive from its next run."""
    spool_file = tmp_path / "nbguard-witness-default.sqlite"
    kernel_id = f"k-{secrets.token_hex(6)}"
    closed_port = "http://127.0.0.1:9/services/nbguard-guard/"
    first_run = shipper(spool_file, closed_port, guard_server.token)
    msg_ids = record_cells(first_run, kernel_id, 5)
    await first_run.stop()
    second_run = shipper(spool_file, guard_server.guard_url, guard_server.token)
    second_run.start()
    try:
        await eventually(lambda: second_run.pending() == 0)
    finally:
        await second_run.stop()
    records = witnessed(guard_process, guard_server.name, kernel_id)
    assert [r["msg_id"] for r in records] == msg_ids
    assert {r["instance"] for r in records} == {first_run.instance}
    assert [r["seq"] for r in records] == list(range(5))


async def test_malformed_record_is_set_aside_and_the_rest_delivered(
    tmp_path: Path, guard_process: GuardProcess, guard_server: SpawnedServer
) -> None:
    """A record the guard refuses (400) goes to the rejected table; those around it arrive."""
    witness = shipper(tmp_path / "spool.sqlite", guard_server.guard_url, guard_server.token)
    kernel_id = f"k-{secrets.token_hex(6)}"
    before = record_cells(witness, kernel_id, 2)
    bad = {"kernel_id": kernel_id, "instance": witness.instance, "seq": 99, "msg_id": "m"}
    witness.spool.append(bad)
    after = record_cells(witness, kernel_id, 2)
    try:
        await eventually(lambda: witness.pending() == 0)
        rejected = witness.spool.rejected()
    finally:
        await witness.stop()
    assert [record for record, _ in rejected] == [bad]
    assert "record 0" in rejected[0][1]
    records = witnessed(guard_process, guard_server.name, kernel_id)
    assert [r["msg_id"] for r in records] == before + after
