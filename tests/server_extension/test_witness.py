"""The execute witness: every execute_request over a real kernel websocket reaches the real guard."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from jupyter_server.services.kernels.connection.base import (
    deserialize_msg_from_ws_v1,
    serialize_msg_to_ws_v1,
)
from tornado.httpclient import HTTPClientError

from nbguard.server_extension.witness import V1_PROTOCOL

from .conftest import GuardProcess, SpawnedServer, eventually

Fetch = Any
RFC3339_Z = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")


def sha256(text: str) -> str:
    """Hex SHA-256 of ``text`` in UTF-8."""
    return hashlib.sha256(text.encode()).hexdigest()


def packed(part: Any) -> bytes:
    """One JSON part of a v1 websocket message."""
    return json.dumps(part).encode()


@dataclass
class KernelSocket:
    """A browser's websocket to one kernel, in the JSON or the v1 binary protocol."""

    socket: Any
    kernel_id: str
    session: str
    binary: bool
    sent: list[dict[str, Any]] = field(default_factory=list)

    def message(
        self, code: str, *, cell_id: str | None = None, silent: bool = False, **header: Any
    ) -> dict[str, Any]:
        """An execute_request as JupyterLab sends it."""
        return {
            "header": {
                "msg_id": header.get("msg_id", secrets.token_hex(16)),
                "msg_type": header.get("msg_type", "execute_request"),
                "session": self.session,
                "username": "browser",
                "version": "5.3",
                "date": "2025-01-01T00:00:00.000Z",
            },
            "parent_header": {},
            "metadata": {} if cell_id is None else {"cellId": cell_id},
            "content": {
                "code": code,
                "silent": silent,
                "store_history": not silent,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
            "buffers": [],
        }

    async def send(self, msg: dict[str, Any], channel: str = "shell") -> None:
        """Send ``msg`` on ``channel``."""
        self.sent.append(msg)
        if self.binary:
            await self.socket.write_message(
                serialize_msg_to_ws_v1(msg, channel, pack=packed), binary=True
            )
        else:
            await self.socket.write_message(json.dumps({**msg, "channel": channel}))

    async def receive(self) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]:
        """The next message from the kernel: channel, header, parent header, content."""
        raw = await self.socket.read_message()
        assert raw is not None, "the websocket closed"
        if self.binary:
            channel, parts = deserialize_msg_from_ws_v1(raw)
            header, parent, _, content = (json.loads(p) for p in parts[:4])
            return channel, header, parent, content
        msg = json.loads(raw)
        return msg["channel"], msg["header"], msg["parent_header"], msg["content"]

    async def reply_to(self, msg: dict[str, Any], reply_type: str = "execute_reply") -> Any:
        """Read until the kernel's ``reply_type`` to ``msg``; its content."""
        for _ in range(500):
            _, header, parent, content = await self.receive()
            if header["msg_type"] == reply_type and parent.get("msg_id") == msg["header"]["msg_id"]:
                return content
        raise AssertionError(f"no {reply_type} to {msg['header']['msg_id']}")

    async def run(self, code: str, channel: str = "shell", **kw: Any) -> dict[str, Any]:
        """Execute ``code`` and wait for its reply; the request sent."""
        msg = self.message(code, **kw)
        await self.send(msg, channel)
        await self.reply_to(msg)
        return msg


async def open_kernel(jp_fetch: Fetch, jp_ws_fetch: Fetch, *, binary: bool) -> KernelSocket:
    """Start a kernel and open a websocket to it as JupyterLab does."""
    response = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))
    kernel_id = json.loads(response.body)["id"]
    session = f"session-{secrets.token_hex(8)}"
    socket = await jp_ws_fetch(
        "api",
        "kernels",
        kernel_id,
        "channels",
        params={"session_id": session},
        subprotocols=[V1_PROTOCOL] if binary else None,
    )
    assert (socket.selected_subprotocol == V1_PROTOCOL) is binary
    return KernelSocket(socket, kernel_id, session, binary)


def witnessed(guard: GuardProcess, user: str, kernel_id: str, witness: str = "server") -> list[Any]:
    """The guard's cell_execution records of one witness for one kernel, in stream order."""
    records = [
        r
        for r in guard.records("cell_execution", user)
        if r["kernel_id"] == kernel_id and r["witness"] == witness
    ]
    return sorted(records, key=lambda r: (r["instance"], r["seq"]))


async def all_witnessed(
    guard: GuardProcess, user: str, kernel_id: str, count: int
) -> list[dict[str, Any]]:
    """The server witness's records of ``kernel_id`` once the guard holds ``count`` of them."""

    def arrived() -> list[dict[str, Any]]:
        records = witnessed(guard, user, kernel_id)
        return records if len(records) == count else []

    found: list[dict[str, Any]] = await eventually(arrived)
    return found


def shipper_of(jp_serverapp: Any) -> Any:
    """The running extension's witness shipper."""
    return jp_serverapp.web_app.settings["nbguard"].shipper


@pytest.mark.parametrize("binary", [False, True], ids=["json-protocol", "v1-binary-protocol"])
async def test_every_execute_request_is_witnessed_with_its_fields(
    jp_fetch: Fetch,
    jp_ws_fetch: Fetch,
    jp_serverapp: Any,
    guard_process: GuardProcess,
    guard_server: SpawnedServer,
    binary: bool,
) -> None:
    """Each execute_request reaches the guard as a server-witness record with the right fields."""
    kernel = await open_kernel(jp_fetch, jp_ws_fetch, binary=binary)
    cells = [
        ("a = 6 * 7", "cell-1", False),
        ("print('héllo ✓')", "cell-2", False),
        ("a", None, True),
    ]
    sent = [await kernel.run(code, cell_id=cell, silent=silent) for code, cell, silent in cells]
    kernel.socket.close()
    user = guard_server.name
    records = await all_witnessed(guard_process, user, kernel.kernel_id, 3)
    instance = jp_serverapp.web_app.settings["nbguard"].instance
    for seq, (record, msg, (code, cell, silent)) in enumerate(
        zip(records, sent, cells, strict=True)
    ):
        assert record["instance"] == instance
        assert record["seq"] == seq
        assert record["msg_id"] == msg["header"]["msg_id"]
        assert record.get("cell_id") == cell
        assert record["jupyter_session"] == kernel.session
        assert record["code_sha256"] == sha256(code)
        assert record["silent"] is silent
        assert RFC3339_Z.fullmatch(record["received"])
        assert record["status"] == "unknown"
    assert shipper_of(jp_serverapp).pending() == 0


async def test_disabled_kernel_hooks_leave_every_execution_witnessed(
    jp_fetch: Fetch,
    jp_ws_fetch: Fetch,
    guard_process: GuardProcess,
    guard_server: SpawnedServer,
) -> None:
    """A user who unloads the kernel hooks still has every cell recorded by the server witness."""
    kernel = await open_kernel(jp_fetch, jp_ws_fetch, binary=True)
    codes = [
        "get_ipython().extension_manager.unload_extension('nbguard.kernel_hooks')",
        "import sys; hooks = [m for m in sys.modules if m.startswith('nbguard.kernel_hooks')]",
        "secret = 'read after the hooks are gone'",
    ]
    for code in codes:
        await kernel.run(code)
    check = await kernel.run("hooks")
    kernel.socket.close()
    user = guard_server.name
    records = await all_witnessed(guard_process, user, kernel.kernel_id, 4)
    assert [r["code_sha256"] for r in records] == [sha256(c) for c in [*codes, "hooks"]]
    assert records[-1]["msg_id"] == check["header"]["msg_id"]
    assert witnessed(guard_process, user, kernel.kernel_id, witness="kernel") == []


async def test_execute_on_the_control_channel_is_witnessed(
    jp_fetch: Fetch, jp_ws_fetch: Fetch, guard_process: GuardProcess, guard_server: SpawnedServer
) -> None:
    """ipykernel executes an execute_request sent on control too; the witness records it."""
    kernel = await open_kernel(jp_fetch, jp_ws_fetch, binary=False)
    msg = await kernel.run("b = 1", channel="control")
    kernel.socket.close()
    records = await all_witnessed(guard_process, guard_server.name, kernel.kernel_id, 1)
    assert [r["msg_id"] for r in records] == [msg["header"]["msg_id"]]


async def test_other_messages_are_not_witnessed(
    jp_fetch: Fetch, jp_ws_fetch: Fetch, guard_process: GuardProcess, guard_server: SpawnedServer
) -> None:
    """kernel_info and comm_info requests pass through unrecorded; the next execute is seq 0."""
    kernel = await open_kernel(jp_fetch, jp_ws_fetch, binary=True)
    for msg_type, reply in (
        ("kernel_info_request", "kernel_info_reply"),
        ("comm_info_request", "comm_info_reply"),
    ):
        msg = kernel.message("", msg_type=msg_type)
        msg["content"] = {}
        await kernel.send(msg)
        await kernel.reply_to(msg, reply)
    executed = await kernel.run("e = 5")
    kernel.socket.close()
    records = await all_witnessed(guard_process, guard_server.name, kernel.kernel_id, 1)
    assert [(r["seq"], r["msg_id"]) for r in records] == [(0, executed["header"]["msg_id"])]


async def test_odd_ids_are_digested_not_refused(
    jp_fetch: Fetch, jp_ws_fetch: Fetch, guard_process: GuardProcess, guard_server: SpawnedServer
) -> None:
    """Ids the guard would refuse become h:<digest>, so the record (and those after it) arrive."""
    kernel = await open_kernel(jp_fetch, jp_ws_fetch, binary=False)
    odd = await kernel.run("c = 3", msg_id="has spaces\nand a newline", cell_id="x" * 300)
    plain = await kernel.run("d = 4", cell_id="cell-after")
    kernel.socket.close()
    records = await all_witnessed(guard_process, guard_server.name, kernel.kernel_id, 2)
    assert records[0]["msg_id"].startswith("h:")
    assert records[0]["cell_id"].startswith("h:")
    assert odd["header"]["msg_id"] not in {r["msg_id"] for r in records}
    assert records[1]["msg_id"] == plain["header"]["msg_id"]
    assert records[1]["cell_id"] == "cell-after"


class TestLockedWhileConnected:
    """A lock reaches websockets that were opened while execution was allowed."""

    @pytest.fixture
    def nbguard_config(self, nbguard_config: dict[str, Any]) -> dict[str, Any]:
        """Background checks every half second, each asking the guard anew."""
        return {
            **nbguard_config,
            "entitlement_check_interval": 0.5,
            "entitlement_refresh_margin": 100_000.0,
        }

    @pytest.mark.parametrize("guard_server", ["admin"], indirect=True)
    @pytest.mark.parametrize("binary", [False, True], ids=["json", "v1"])
    async def test_an_open_websocket_stops_executing_once_the_user_is_locked(
        self,
        jp_fetch: Fetch,
        jp_ws_fetch: Fetch,
        jp_serverapp: Any,
        guard_process: GuardProcess,
        guard_server: SpawnedServer,
        binary: bool,
        tmp_path: Path,
    ) -> None:
        """After a lock, the next execute_request is dropped unrun: the browser is told why
        (an NBGuardRefused error, an error reply, idle, as for a failed cell, so the cell is
        not left queued) and the websocket closes with 1008; reconnecting is refused by the
        Authorizer."""
        kernel = await open_kernel(jp_fetch, jp_ws_fetch, binary=binary)
        before = await kernel.run("x = 1")
        cache = jp_serverapp.web_app.settings["nbguard"].entitlements
        lock_id = guard_process.lock(guard_server.name)
        witness_file = tmp_path / "after-lock"
        try:
            await eventually(lambda: not cache.allows_now("jupyter.kernel_execute"))
            refused = kernel.message(f"open({str(witness_file)!r}, 'w')")
            await kernel.send(refused)
            answers = []
            while True:
                try:
                    channel, header, parent, content = await kernel.receive()
                except AssertionError:  # closed
                    break
                if parent.get("msg_id") == refused["header"]["msg_id"]:
                    answers.append((channel, header["msg_type"], content))
            assert kernel.socket.close_code == 1008
            assert [(channel, kind) for channel, kind, _ in answers] == [
                ("iopub", "error"),
                ("shell", "execute_reply"),
                ("iopub", "status"),
            ]
            error, reply, status = (content for _, _, content in answers)
            assert error["ename"] == "NBGuardRefused"
            assert "no longer allowed" in error["evalue"]
            assert (reply["status"], reply["ename"]) == ("error", "NBGuardRefused")
            assert status == {"execution_state": "idle"}
            assert not witness_file.exists()
            records = await all_witnessed(guard_process, guard_server.name, kernel.kernel_id, 1)
            assert [r["msg_id"] for r in records] == [before["header"]["msg_id"]]
            with pytest.raises(HTTPClientError) as error:
                await jp_ws_fetch(
                    "api", "kernels", kernel.kernel_id, "channels", params={"session_id": "s2"}
                )
            assert error.value.code == 403
        finally:
            kernel.socket.close()
            guard_process.unlock(lock_id)
        await eventually(lambda: cache.allows_now("jupyter.kernel_execute"))
        again = await open_kernel(jp_fetch, jp_ws_fetch, binary=True)
        await again.run("y = 2")
        again.socket.close()
