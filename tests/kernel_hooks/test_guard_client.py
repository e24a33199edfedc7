"""``nbguard://`` and execution records against the real guard service, hub and proxy.

The kernels here run with a real spawned server's hub token and the guard service's
own URL, as a notebook in a spawned server does.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import fsspec
import pytest
import pytest_asyncio

from nbguard.kernel_hooks.client import GuardClient
from nbguard.kernel_hooks.filesystem import NBGuardFileSystem
from nbguard.kernel_hooks.identity import ServerEnvironment

from .conftest import Kernel, StartKernel, guard_fixtures, load_guard_witnesses

pytestmark = pytest.mark.asyncio(loop_scope="module")
CSV = "region,amount\nnorth,10\nsouth,32\n"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(guard: Any) -> Any:
    """A data scientist's running server (profile ``train``) and its own token."""
    return await guard_fixtures.server_client(guard)


def guard_url(guard: Any) -> str:
    """The guard service's own URL, as NBGUARD_GUARD_URL has it in a spawned server."""
    service = guard.service
    return str(service.service_url + service.service_prefix)


def plant(guard: Any, dataset: str, name: str, content: bytes) -> None:
    """Put a file into a dataset's store directly."""
    path = guard.tmp / "data" / dataset / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def filesystem(guard: Any, server: Any) -> NBGuardFileSystem:
    """``nbguard://`` in this process, with the server's token."""
    environment = ServerEnvironment(guard_url(guard), server.token, server.name, "/hub-base/")
    return NBGuardFileSystem(client=GuardClient(environment))


def executions(guard: Any, kernel: Kernel) -> list[dict[str, Any]]:
    """The guard's cell_execution ledger records of ``kernel``, oldest first."""
    bodies = load_guard_witnesses().ledger_bodies(guard, "cell_execution")
    return [b for b in bodies if b["kernel_id"] == kernel.kernel_id and b["witness"] == "kernel"]


async def until(check: Callable[[], bool], timeout: float = 30) -> None:
    """Wait (letting the guard in this event loop work) until ``check()`` holds."""
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_pandas_reads_a_csv_through_the_broker_in_a_kernel(
    guard: Any, server: Any, start_kernel: StartKernel
) -> None:
    """pandas.read_csv("nbguard://sales/...") in a kernel reads through the guard; the
    cell's record names the dataset, and the guard's access record names the cell."""
    name = f"{secrets.token_hex(4)}.csv"
    plant(guard, "sales", name, CSV.encode())
    kernel = await start_kernel(guard_url=guard_url(guard), token=server.token, user=server.name)
    done = await kernel.run(
        f"import pandas as pd\ndf = pd.read_csv('nbguard://sales/{name}')\n"
        "print(df['amount'].sum(), list(df['region']))"
    )
    assert done.reply["status"] == "ok", done.reply
    assert done.stdout().strip() == "42 ['north', 'south']"
    await until(lambda: any(r["msg_id"] == done.msg_id for r in executions(guard, kernel)))
    (record,) = [r for r in executions(guard, kernel) if r["msg_id"] == done.msg_id]
    assert record["resources"] == ["dataset:sales"]
    assert record["status"] == "ok"
    accesses = load_guard_witnesses().ledger_bodies(guard, "access")
    cells = [a.get("cell", {}) for a in accesses if a["resource"] == "dataset:sales"]
    assert any(
        c.get("kernel_id") == kernel.kernel_id and c.get("msg_id") == done.msg_id for c in cells
    )


async def test_a_denial_says_what_would_allow_it_and_where(
    guard: Any, server: Any, start_kernel: StartKernel
) -> None:
    """Reading a restricted dataset raises GuardPermissionError naming the remedy, the
    elevation page, and the decision's correlation id."""
    plant(guard, "customers", "all.csv", CSV.encode())
    kernel = await start_kernel(guard_url=guard_url(guard), token=server.token, user=server.name)
    done = await kernel.run(
        "import pandas as pd\n"
        "try:\n"
        "    pd.read_csv('nbguard://customers/all.csv')\n"
        "except PermissionError as error:\n"
        "    print(type(error).__name__)\n"
        "    print(error)\n"
    )
    text = done.stdout()
    assert text.startswith(
        "GuardPermissionError\nnbguard denied reading nbguard://customers/all.csv"
    )
    assert "It would be allowed with" in text
    assert (
        "/hub-base/services/nbguard-guard/requests?action=dataset.read&resource=dataset%3Acustomers"
        in text
    )
    assert "(Decision " in text
    assert "Traceback" not in text


async def test_an_uncaught_denial_shows_its_message_not_library_frames(
    guard: Any, server: Any, start_kernel: StartKernel
) -> None:
    """A denial the cell does not catch reaches the frontend as a GuardPermissionError
    error whose traceback is the message alone, and the cell is recorded as failed."""
    plant(guard, "customers", "brief.csv", CSV.encode())
    kernel = await start_kernel(guard_url=guard_url(guard), token=server.token, user=server.name)
    done = await kernel.run("import pandas as pd\npd.read_csv('nbguard://customers/brief.csv')")
    assert done.reply["status"] == "error"
    assert done.reply["ename"] == "GuardPermissionError"
    (error,) = [o["content"] for o in done.outputs if o["msg_type"] == "error"]
    assert error["ename"] == "GuardPermissionError"
    shown = "\n".join(error["traceback"])
    assert "nbguard denied reading nbguard://customers/brief.csv" in shown
    assert "/hub-base/services/nbguard-guard/requests" in shown
    assert "pandas" not in shown  # no library frames
    assert "Traceback" not in shown
    await until(lambda: any(r["msg_id"] == done.msg_id for r in executions(guard, kernel)))
    (record,) = [r for r in executions(guard, kernel) if r["msg_id"] == done.msg_id]
    assert (record["status"], record["error_name"]) == ("error", "GuardPermissionError")

    # Other errors keep IPython's full traceback.
    other = await kernel.run("def f():\n    raise KeyError('x')\nf()")
    (error,) = [o["content"] for o in other.outputs if o["msg_type"] == "error"]
    assert "f()" in "\n".join(error["traceback"])


async def test_listing_info_ranges_writes_and_deletes(guard: Any, server: Any) -> None:
    """ls, info, ranged cat, streamed reads, put, write and rm work through the broker."""
    fs = filesystem(guard, server)
    folder = f"t{secrets.token_hex(3)}"
    plant(guard, "sales", f"{folder}/data.bin", bytes(range(256)) * 64)

    def work() -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["datasets"] = fs.ls("", detail=False)
        out["listing"] = fs.ls(f"nbguard://sales/{folder}", detail=False)
        out["info"] = fs.info(f"nbguard://sales/{folder}/data.bin")
        out["folder"] = fs.info(f"nbguard://sales/{folder}")["type"]
        out["range"] = fs.cat_file(f"sales/{folder}/data.bin", start=10, end=14)
        with fs.open(f"sales/{folder}/data.bin", "rb", block_size=1000) as file:
            head = file.read(3000)
            file.seek(16000)
            tail = file.read()
        out["read"] = (head, tail)
        fs.pipe_file(f"sales/{folder}/new.txt", b"written")
        with fs.open(f"sales/{folder}/streamed.txt", "wb") as file:
            file.write(b"line 1\n")
            file.write(b"line 2\n")
        out["new"] = fs.cat_file(f"sales/{folder}/new.txt")
        out["streamed"] = fs.cat_file(f"sales/{folder}/streamed.txt")
        fs.rm(f"sales/{folder}/new.txt")
        out["after_rm"] = sorted(fs.ls(f"sales/{folder}", detail=False))
        return out

    got = await asyncio.to_thread(work)
    content = bytes(range(256)) * 64
    assert "sales" in got["datasets"]
    assert got["listing"] == [f"sales/{folder}/data.bin"]
    assert got["info"]["size"] == len(content)
    assert got["info"]["type"] == "file"
    assert got["folder"] == "directory"
    assert got["range"] == content[10:14]
    assert got["read"] == (content[:3000], content[16000:])
    assert got["new"] == b"written"
    assert got["streamed"] == b"line 1\nline 2\n"
    assert got["after_rm"] == [f"sales/{folder}/data.bin", f"sales/{folder}/streamed.txt"]


async def test_a_failed_with_block_uploads_nothing(guard: Any, server: Any) -> None:
    """An exception inside ``with fs.open(..., "wb")`` leaves no file behind."""
    fs = filesystem(guard, server)
    name = f"sales/{secrets.token_hex(4)}.txt"

    def work() -> bool:
        with contextlib.suppress(RuntimeError), fs.open(name, "wb") as file:
            file.write(b"half")
            raise RuntimeError("stop")
        return bool(fs.exists(name))

    assert await asyncio.to_thread(work) is False


async def test_fsspec_finds_the_protocol_from_the_environment(
    guard: Any, server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsspec.open("nbguard://...") works by the entry point, with the server's environment."""
    plant(guard, "sales", "env.csv", CSV.encode())
    monkeypatch.setenv("NBGUARD_GUARD_URL", guard_url(guard))
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", server.token)

    def read() -> bytes:
        with fsspec.open("nbguard://sales/env.csv", "rb") as file:
            data: bytes = file.read()
            return data

    assert await asyncio.to_thread(read) == CSV.encode()


class Switch:
    """A TCP relay to the guard service that can be turned off (connections refused)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.port = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def up(self) -> None:
        """Listen (again, on the same port)."""
        self.server = await asyncio.start_server(
            self._relay, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self.server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        """Stop listening and cut every open connection."""
        if self.server is not None:
            self.server.close()
            for task in list(self.tasks):
                task.cancel()
            await self.server.wait_closed()
            self.server = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

            async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
                with contextlib.suppress(OSError):
                    while data := await source.read(65536):
                        sink.write(data)
                        await sink.drain()
                sink.close()

            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except (OSError, asyncio.CancelledError):
            writer.close()
        finally:
            self.tasks.discard(task)


@pytest_asyncio.fixture(loop_scope="module")
async def switch(guard: Any) -> AsyncIterator[Switch]:
    """A relay in front of the guard service, up."""
    from urllib.parse import urlsplit

    relay = Switch(int(urlsplit(guard.service.service_url).port or 80))
    await relay.up()
    yield relay
    await relay.down()


async def test_guard_down_then_up_every_record_arrives_in_order_once(
    guard: Any, server: Any, start_kernel: StartKernel, switch: Switch
) -> None:
    """With the guard unreachable, cells still run and their records wait in the spool;
    once it is back, the guard has every record of the stream, in order, exactly once."""
    url = f"http://127.0.0.1:{switch.port}{guard.service.service_prefix}"
    kernel = await start_kernel(guard_url=url, token=server.token, user=server.name)
    sent = [(await kernel.run("a = 0")).msg_id]
    await until(lambda: len(executions(guard, kernel)) == 1)
    await switch.down()
    sent += [(await kernel.run(f"b = {i}", silent=i == 2)).msg_id for i in range(5)]
    await asyncio.sleep(0.5)  # the shipper tries and backs off meanwhile
    assert len(executions(guard, kernel)) == 1
    await switch.up()
    await until(lambda: len(executions(guard, kernel)) >= len(sent))
    await asyncio.sleep(0.3)  # a duplicate would arrive now
    records = executions(guard, kernel)
    assert [r["msg_id"] for r in records] == sent
    assert [r["seq"] for r in records] == list(range(len(sent)))
