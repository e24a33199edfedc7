"""Delivery from real kernels: nothing lost when the guard is down or the kernel is killed."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import pytest

from .conftest import StartKernel, StubGuard, serve, spooled

pytestmark = pytest.mark.asyncio(loop_scope="module")


def free_port() -> int:
    """A loopback port nothing listens on (for now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def spool_files(data_dir: Path) -> list[Path]:
    """The segment files left in the spool."""
    return [
        p
        for p in (data_dir / "nbguard" / "spool").glob("*/*.jsonl")
        if p.name != "quarantine.jsonl"
    ]


async def test_guard_down_then_up_delivers_everything_in_order_once(
    start_kernel: StartKernel,
) -> None:
    """Cells run while nothing listens at the guard's address arrive, in order and once,
    when it comes up; then 5xx answers delay delivery but lose nothing either."""
    port = free_port()
    stub = StubGuard()
    stub.url = f"http://127.0.0.1:{port}/hub/services/nbguard-guard/"
    kernel = await start_kernel(guard_url=stub.url, token=stub.token)
    sent = [(await kernel.run(f"n = {i}")).msg_id for i in range(6)]
    server = serve(stub, port)
    try:
        stub.wait_for(lambda records: len(records) == len(sent))
        stub.script = [503, 502, 500]
        sent += [(await kernel.run(f"m = {i}", silent=i == 1)).msg_id for i in range(4)]
        stub.wait_for(lambda records: len(records) == len(sent))
        records = stub.of_stream(kernel.kernel_id)
        assert [r["msg_id"] for r in records] == sent
        assert [r["seq"] for r in records] == list(range(len(sent)))
        assert [status for status in stub.answers if status != 200] == [503, 502, 500]
    finally:
        server.shutdown()
        server.server_close()


async def test_a_killed_kernels_records_arrive_after_a_new_kernel_starts(
    tmp_path: Path, start_kernel: StartKernel, stub_guard: StubGuard
) -> None:
    """Records spooled by a kernel killed with SIGKILL are shipped by the next kernel of
    the user (same spool), in order, and the dead kernel's spool file is removed."""
    stub_guard.script = [503] * 10_000
    dead = await start_kernel(guard_url=stub_guard.url, token=stub_guard.token)
    sent = [(await dead.run(f"d = {i}")).msg_id for i in range(5)]
    assert {r["msg_id"] for r in spooled(tmp_path / "data")} >= set(sent)
    await dead.kill()
    with stub_guard.lock:
        stub_guard.script.clear()
    heir = await start_kernel(guard_url=stub_guard.url, token=stub_guard.token)
    stub_guard.wait_for(lambda records: len([r for r in records if r["msg_id"] in sent]) == 5)
    records = stub_guard.of_stream(dead.kernel_id)
    assert [r["msg_id"] for r in records] == sent
    assert [r["seq"] for r in records] == list(range(5))
    # The dead kernel left its sources' hashes to its shipper; the heir's filled them in.
    assert [r["code_sha256"] for r in records] == [
        hashlib.sha256(f"d = {i}".encode()).hexdigest() for i in range(5)
    ]
    done = await heir.run("alive = True")
    stub_guard.wait_for(lambda records: any(r["msg_id"] == done.msg_id for r in records))
    assert not any(dead.kernel_id in p.name for p in spool_files(tmp_path / "data"))


async def test_a_refused_record_is_quarantined_and_the_rest_delivered(
    tmp_path: Path, start_kernel: StartKernel, stub_guard: StubGuard
) -> None:
    """A record the guard refuses with 400 is set aside (logged, kept in quarantine.jsonl)
    after the batch is split down to it; the records around it are delivered."""
    stub_guard.refuse = lambda record: record["code"] == "bad = 1"
    kernel = await start_kernel(guard_url=stub_guard.url, token=stub_guard.token)
    sent = [(await kernel.run(code)).msg_id for code in ("good = 0", "bad = 1", "good = 2")]
    stub_guard.wait_for(lambda records: any(r["msg_id"] == sent[2] for r in records))
    delivered = [r["msg_id"] for r in stub_guard.of_stream(kernel.kernel_id)]
    assert delivered == [sent[0], sent[2]]
    (quarantine,) = (tmp_path / "data" / "nbguard" / "spool").glob("*/quarantine.jsonl")
    (entry,) = [json.loads(line) for line in quarantine.read_text().splitlines()]
    assert entry["status"] == 400
    assert json.loads(entry["record"])["msg_id"] == sent[1]
    assert stub_guard.answers.count(400) <= 4
    later = await kernel.run("good = 3")
    stub_guard.wait_for(lambda records: any(r["msg_id"] == later.msg_id for r in records))


async def test_a_clean_exit_leaves_no_spool_file(
    tmp_path: Path, start_kernel: StartKernel, stub_guard: StubGuard
) -> None:
    """A kernel shut down normally, with everything delivered, removes its spool file."""
    kernel = await start_kernel(guard_url=stub_guard.url, token=stub_guard.token)
    done = await kernel.run("e = 1")
    stub_guard.wait_for(lambda records: any(r["msg_id"] == done.msg_id for r in records))
    assert spool_files(tmp_path / "data")
    await kernel.stop()
    assert spool_files(tmp_path / "data") == []
