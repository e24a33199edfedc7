"""Cell capture in real kernels: what each record holds, and that the stream has no holes."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from .conftest import Kernel, StartKernel, StubGuard, spooled

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def recording_kernel(start_kernel: StartKernel, stub: StubGuard, *args: str) -> Kernel:
    """A kernel with the hooks, shipping to ``stub``."""
    return await start_kernel(guard_url=stub.url, token=stub.token, args=list(args))


def by_msg(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Records keyed by the execute_request's message id."""
    return {r["msg_id"]: r for r in records}


def sha(text: str) -> str:
    """SHA-256 hex of UTF-8 ``text``."""
    return hashlib.sha256(text.encode()).hexdigest()


async def test_every_execution_is_recorded_silent_and_blank_ones_too(
    start_kernel: StartKernel, stub_guard: StubGuard
) -> None:
    """Normal, silent and blank executions each get a record with their request's ids."""
    kernel = await recording_kernel(start_kernel, stub_guard)
    cell = str(uuid.uuid4())
    normal = await kernel.run("x = 41 + 1", cell_id=cell)
    silent = await kernel.run("y = x", silent=True)
    blank = await kernel.run("   ")
    stub_guard.wait_for(lambda records: blank.msg_id in by_msg(records))
    got = by_msg(stub_guard.of_stream(kernel.kernel_id))
    assert got[normal.msg_id]["code"] == "x = 41 + 1"
    assert got[normal.msg_id]["cell_id"] == cell
    assert got[normal.msg_id]["silent"] is False
    assert got[normal.msg_id]["execution_count"] == normal.reply["execution_count"]
    assert got[normal.msg_id]["code_sha256"] == sha("x = 41 + 1")
    assert got[silent.msg_id]["silent"] is True
    assert got[silent.msg_id]["code"] == "y = x"
    assert got[blank.msg_id]["code"] == "   "
    for record in got.values():
        assert record["status"] == "ok"
        assert record["kernel_id"] == kernel.kernel_id
        assert record["started"].endswith("Z")
        assert record["privileged"] is False


async def test_seq_counts_from_zero_without_gaps_in_order(
    start_kernel: StartKernel, stub_guard: StubGuard
) -> None:
    """A kernel's records carry seq 0, 1, 2, ... in the order the cells ran."""
    kernel = await recording_kernel(start_kernel, stub_guard)
    sent = [(await kernel.run(f"v = {i}", silent=i % 3 == 0)).msg_id for i in range(12)]
    stub_guard.wait_for(lambda records: sent[-1] in by_msg(records))
    records = stub_guard.of_stream(kernel.kernel_id)
    assert [r["seq"] for r in records] == list(range(len(records)))
    assert [r["msg_id"] for r in records] == sent
    assert len({r["instance"] for r in records}) == 1


async def test_errors_and_aborted_requests_are_recorded(
    start_kernel: StartKernel, stub_guard: StubGuard
) -> None:
    """A failing cell has status error and its exception's name; a request the kernel
    aborted after it (stop_on_error) is recorded as aborted."""
    kernel = await recording_kernel(start_kernel, stub_guard)
    failing = kernel.client.execute("1 / 0", stop_on_error=True)
    skipped = kernel.client.execute("z = 1", stop_on_error=True)
    replies = {}
    while len(replies) < 2:
        reply = await kernel.client.get_shell_msg(timeout=60)
        replies[reply["parent_header"]["msg_id"]] = reply["content"]
    assert replies[skipped]["status"] == "aborted"
    syntax = await kernel.run("def broken(:")
    stub_guard.wait_for(lambda records: syntax.msg_id in by_msg(records))
    got = by_msg(stub_guard.of_stream(kernel.kernel_id))
    assert got[failing]["status"] == "error"
    assert got[failing]["error_name"] == "ZeroDivisionError"
    assert got[skipped]["status"] == "aborted"
    assert got[skipped]["code"] == "z = 1"
    assert got[syntax.msg_id]["error_name"] == "SyntaxError"


async def test_cells_with_top_level_await_are_recorded(
    start_kernel: StartKernel, stub_guard: StubGuard
) -> None:
    """A cell ipykernel runs as a coroutine (top-level await) is recorded like any other."""
    kernel = await recording_kernel(start_kernel, stub_guard)
    done = await kernel.run("import asyncio\nawait asyncio.sleep(0)\nprint('awaited')")
    assert done.stdout() == "awaited\n"
    stub_guard.wait_for(lambda records: done.msg_id in by_msg(records))
    record = by_msg(stub_guard.of_stream(kernel.kernel_id))[done.msg_id]
    assert record["status"] == "ok"
    assert record["code"].startswith("import asyncio")


async def test_a_cell_run_by_another_cell_has_a_record_without_a_request(
    start_kernel: StartKernel, stub_guard: StubGuard
) -> None:
    """Code run with get_ipython().run_cell gets its own record, with msg_id "" (it had no
    execute_request), so only the outer record pairs with the server's witness."""
    kernel = await recording_kernel(start_kernel, stub_guard)
    done = await kernel.run("get_ipython().run_cell('inner = 1')\nouter = 2")
    stub_guard.wait_for(lambda records: done.msg_id in by_msg(records))
    records = stub_guard.of_stream(kernel.kernel_id)
    inner = [r for r in records if r["code"] == "inner = 1"]
    assert [r["msg_id"] for r in inner] == [""]
    assert by_msg(records)[done.msg_id]["code"].endswith("outer = 2")
    assert inner[0]["seq"] + 1 == by_msg(records)[done.msg_id]["seq"]


async def test_output_digest_follows_the_documented_canonical_form(
    start_kernel: StartKernel, stub_guard: StubGuard
) -> None:
    """The digest is SHA-256 over one line per output item (streams merged, bundles as
    canonical JSON), as docs/kernel-hooks.md describes, whatever the chunking."""
    kernel = await recording_kernel(start_kernel, stub_guard)
    code = (
        "import sys\n"
        "from IPython.display import display\n"
        "print('a', end=''); sys.stdout.flush(); print('b')\n"
        "display({'text/plain': 'shown'}, raw=True)\n"
        "print('c', file=sys.stderr)\n"
        "'é'"
    )
    done = await kernel.run(code)
    stub_guard.wait_for(lambda records: done.msg_id in by_msg(records))
    record = by_msg(stub_guard.of_stream(kernel.kernel_id))[done.msg_id]

    def line(kind: str, name: str, content: bytes) -> bytes:
        return f"{kind} {name} {hashlib.sha256(content).hexdigest()}\n".encode()

    def canonical(bundle: dict[str, Any]) -> bytes:
        return json.dumps(
            bundle, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()

    result = next(o for o in done.outputs if o["msg_type"] == "execute_result")["content"]["data"]
    expected = hashlib.sha256(
        line("stream", "stdout", b"ab\n")
        + line("display_data", "-", canonical({"text/plain": "shown"}))
        + line("stream", "stderr", b"c\n")
        + line("execute_result", "-", canonical(result))
    ).hexdigest()
    assert record["output_digest"] == expected
    assert "output_text" not in record


async def test_output_text_is_truncated_and_redacted(
    start_kernel: StartKernel, stub_guard: StubGuard
) -> None:
    """With output text on, the hub token and password-like values never reach the record."""
    kernel = await recording_kernel(
        start_kernel,
        stub_guard,
        "--NBGuardKernelHooks.record_output_text=True",
        "--NBGuardKernelHooks.output_text_limit=200",
    )
    done = await kernel.run(
        "import os\n"
        "print('token is', os.environ['JUPYTERHUB_API_TOKEN'])\n"
        "print('db password = hunter2hunter2')\n"
        "print('x' * 500)"
    )
    stub_guard.wait_for(lambda records: done.msg_id in by_msg(records))
    text = by_msg(stub_guard.of_stream(kernel.kernel_id))[done.msg_id]["output_text"]
    assert stub_guard.token not in text
    assert "[REDACTED:hub-token]" in text
    assert "hunter2" not in text
    assert "password = [REDACTED:secret-assignment]" in text
    assert "more characters of output not recorded" in text


async def test_privileged_follows_the_users_grants(
    start_kernel: StartKernel, stub_guard: StubGuard
) -> None:
    """Records are marked privileged while GET api/v1/me shows an elevated grant."""
    stub_guard.me = {"grants": [{"action": "dataset.read", "resource": "dataset:customers"}]}
    kernel = await recording_kernel(
        start_kernel, stub_guard, "--NBGuardKernelHooks.privilege_cache_seconds=0"
    )
    first = await kernel.run("a = 1")
    stub_guard.wait_for(lambda records: first.msg_id in by_msg(records))
    done = await kernel.run("b = 2")
    stub_guard.wait_for(lambda records: done.msg_id in by_msg(records))
    assert by_msg(stub_guard.of_stream(kernel.kernel_id))[done.msg_id]["privileged"] is True


async def test_unloading_the_hooks_stops_kernel_capture(
    start_kernel: StartKernel, stub_guard: StubGuard
) -> None:
    """After %unload_ext the kernel records nothing more (the server witness covers it);
    the unloading cell itself and what was spooled still arrive."""
    kernel = await recording_kernel(start_kernel, stub_guard)
    before = await kernel.run("p = 1")
    unload = await kernel.run("%unload_ext nbguard.kernel_hooks")
    after = await kernel.run("q = 2")
    status = await kernel.value("__import__('nbguard.kernel_hooks').kernel_hooks.status()")
    assert status["active"] is False
    stub_guard.wait_for(lambda records: unload.msg_id in by_msg(records))
    got = by_msg(stub_guard.of_stream(kernel.kernel_id))
    assert before.msg_id in got
    assert got[unload.msg_id]["code"] == "%unload_ext nbguard.kernel_hooks"
    assert after.msg_id not in got


async def test_input_guard_rejects_listed_names_and_records_it(
    start_kernel: StartKernel, stub_guard: StubGuard
) -> None:
    """A cell using a name the admin listed does not run; its record says InputRejected."""
    kernel = await recording_kernel(
        start_kernel, stub_guard, "--NBGuardKernelHooks.rejected_names=subprocess.*"
    )
    refused = await kernel.run("import subprocess\nran = subprocess.run(['true'])")
    assert refused.reply["status"] == "error"
    assert refused.reply["ename"] == "InputRejected"
    assert await kernel.value("'ran' in globals()") is False
    allowed = await kernel.run("import os\nok = 1")
    assert allowed.reply["status"] == "ok"
    stub_guard.wait_for(lambda records: allowed.msg_id in by_msg(records))
    got = by_msg(stub_guard.of_stream(kernel.kernel_id))
    assert got[refused.msg_id]["status"] == "error"
    assert got[refused.msg_id]["error_name"] == "InputRejected"


async def test_records_are_spooled_before_the_reply(
    tmp_path: Path, start_kernel: StartKernel, stub_guard: StubGuard
) -> None:
    """When the kernel answers a cell, its record is already in the spool on disk."""
    stub_guard.script = [503] * 10_000  # the guard refuses everything: nothing leaves
    kernel = await recording_kernel(start_kernel, stub_guard)
    done = await kernel.run("w = 3")
    assert done.msg_id in by_msg(spooled(tmp_path / "data"))
