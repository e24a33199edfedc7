"""Fixtures for the kernel-hook tests: real ipykernel kernels, a stub guard, the real guard.

- ``start_kernel`` starts real IPython kernels with jupyter_client (the way a
  Jupyter server does: a connection file named ``kernel-<id>.json``) with the hooks
  loaded through ``IPKernelApp.extra_extensions``, the setting the installed
  ``etc/ipython/ipython_kernel_config.json`` makes.
- ``stub_guard`` is a small HTTP server with the guard's executions route, whose
  answers a test can script (down, 5xx, 400), for the shipper's edge cases.
- ``guard`` is the real hub, proxy and guard service of the guard-service tests
  (``tests/hub_plugin/guard/conftest.py``, loaded by path), so that ``nbguard://``
  reads hit the real broker with a real spawned server's token.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import secrets
import signal
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import pytest_asyncio

HOOKS = "nbguard.kernel_hooks"
#: Settings that make the shipper quick in tests (no wall-clock assertions rely on them).
FAST = [
    "--NBGuardKernelHooks.flush_delay=0.01",
    "--NBGuardKernelHooks.poll_interval=0.3",
    "--NBGuardKernelHooks.retry_initial=0.05",
    "--NBGuardKernelHooks.retry_max=0.4",
    "--NBGuardKernelHooks.request_timeout=5",
]


def _load(name: str, path: Path, package: str | None = None) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    if package is not None:
        module.__package__ = package
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_guard_fixtures() -> ModuleType:
    """tests/hub_plugin/guard/conftest.py, imported by path as part of a stand-in package
    (it imports ``..conftest`` relatively)."""
    package = "nbguard_kernel_tests_hub"
    root = Path(__file__).resolve().parents[1] / "hub_plugin"
    if package not in sys.modules:
        top = ModuleType(package)
        top.__path__ = [str(root)]
        sys.modules[package] = top
        guard_package = ModuleType(f"{package}.guard")
        guard_package.__path__ = [str(root / "guard")]
        sys.modules[f"{package}.guard"] = guard_package
        _load(f"{package}.conftest", root / "conftest.py", package)
    return _load(f"{package}.guard.conftest", root / "guard" / "conftest.py", f"{package}.guard")


def load_guard_witnesses() -> ModuleType:
    """tests/hub_plugin/guard/witnesses.py (ledger readers), imported by path."""
    guard_module = load_guard_fixtures()
    package = guard_module.__package__
    assert package is not None
    root = Path(__file__).resolve().parents[1] / "hub_plugin" / "guard"
    return _load(f"{package}.witnesses", root / "witnesses.py", package)


guard_fixtures = load_guard_fixtures()
#: The real hub and guard service, one per test module (see the guard tests' conftest).
guard = guard_fixtures.guard


# -- a stub guard ---------------------------------------------------------------------------


@dataclass
class StubGuard:
    """The guard's executions route and ``api/v1/me``, with scriptable answers."""

    url: str = ""
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    #: Statuses to answer the next batches with (then 200), and a predicate refusing records.
    script: list[int] = field(default_factory=list)
    refuse: Callable[[dict[str, Any]], bool] = lambda record: False
    me: dict[str, Any] = field(default_factory=lambda: {"grants": [], "elevated_roles": []})
    #: Every batch received (as sent), and the records kept once, in arrival order.
    batches: list[list[dict[str, Any]]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    def handle(self, method: str, path: str, token: str, body: bytes) -> tuple[int, Any]:
        """The answer to one request."""
        if token != f"token {self.token}":
            return 403, {"error": {"status": 403, "code": "forbidden", "message": "bad token"}}
        if method == "GET" and path.endswith("api/v1/me"):
            return 200, self.me
        if method != "POST" or not path.endswith("api/v1/executions"):
            return 404, {"error": {"status": 404, "code": "not_found", "message": path}}
        with self.changed:
            if self.script:
                status = self.script.pop(0)
                self.answers.append(status)
                return status, {"error": {"status": status, "code": "x", "message": "scripted"}}
            try:
                batch = json.loads(body)["records"]
            except (ValueError, KeyError, TypeError):
                self.answers.append(400)
                return 400, {"error": {"status": 400, "code": "bad_request", "message": "bad"}}
            self.batches.append(batch)
            for index, record in enumerate(batch):
                if self.refuse(record):
                    self.answers.append(400)
                    message = f"record {index}: refused"
                    return 400, {
                        "error": {"status": 400, "code": "bad_request", "message": message}
                    }
            keys = {(r["kernel_id"], r["instance"], r["seq"]) for r in self.records}
            fresh = [r for r in batch if (r["kernel_id"], r["instance"], r["seq"]) not in keys]
            self.records.extend(fresh)
            self.answers.append(200)
            self.changed.notify_all()
            return 200, {"accepted": len(fresh), "duplicates": len(batch) - len(fresh)}

    def wait_for(self, check: Callable[[list[dict[str, Any]]], bool], timeout: float = 30) -> None:
        """Wait until ``check(records)`` holds (fails the test after ``timeout`` seconds)."""
        with self.changed:
            if not self.changed.wait_for(lambda: check(self.records), timeout):
                raise AssertionError(f"stub guard: condition not met; got {self.records!r}")

    def of_stream(self, kernel_id: str) -> list[dict[str, Any]]:
        """The records received for ``kernel_id``, in arrival order."""
        with self.lock:
            return [r for r in self.records if r["kernel_id"] == kernel_id]


def _stub_handler(stub: StubGuard) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            token = self.headers.get("Authorization", "")
            status, value = stub.handle(self.command, self.path, token, body)
            data = json.dumps(value).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            """Quiet."""

    return Handler


def serve(stub: StubGuard, port: int = 0) -> ThreadingHTTPServer:
    """Serve ``stub`` on loopback (``port`` 0: any free one); sets ``stub.url``."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _stub_handler(stub))
    server.daemon_threads = True
    stub.url = f"http://127.0.0.1:{server.server_port}/hub/services/nbguard-guard/"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def stub_guard() -> Iterator[StubGuard]:
    """A running stub guard on loopback; its URL ends like NBGUARD_GUARD_URL does."""
    stub = StubGuard()
    server = serve(stub)
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()


# -- real kernels ---------------------------------------------------------------------------


@dataclass
class Execution:
    """One execute_request as the frontend saw it."""

    msg_id: str
    reply: dict[str, Any]
    outputs: list[dict[str, Any]]

    def stdout(self) -> str:
        """The text the cell wrote to stdout."""
        return "".join(
            o["content"]["text"]
            for o in self.outputs
            if o["msg_type"] == "stream" and o["content"]["name"] == "stdout"
        )


class Kernel:
    """A real IPython kernel started with jupyter_client, and its client."""

    def __init__(self, manager: Any, client: Any, kernel_id: str) -> None:
        self.manager = manager
        self.client = client
        self.kernel_id = kernel_id

    async def run(
        self,
        code: str,
        *,
        silent: bool = False,
        cell_id: str | None = None,
        timeout: float = 60,
    ) -> Execution:
        """Send one execute_request and collect its outputs and reply."""
        content = {
            "code": code,
            "silent": silent,
            "store_history": not silent,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        }
        message = self.client.session.msg("execute_request", content)
        if cell_id is not None:
            message["metadata"]["cellId"] = cell_id
        msg_id = message["header"]["msg_id"]
        self.client.shell_channel.send(message)
        outputs = []
        while True:
            got = await self.client.get_iopub_msg(timeout=timeout)
            if got["parent_header"].get("msg_id") != msg_id:
                continue
            if got["msg_type"] == "status":
                if got["content"]["execution_state"] == "idle":
                    break
                continue
            if got["msg_type"] != "execute_input":
                outputs.append(got)
        while True:
            reply = await self.client.get_shell_msg(timeout=timeout)
            if reply["parent_header"].get("msg_id") == msg_id:
                return Execution(msg_id, reply["content"], outputs)

    async def value(self, expression: str) -> Any:
        """The JSON value of ``expression`` in the kernel (run as a cell of its own)."""
        done = await self.run(f"import json as _j; print(_j.dumps({expression}))")
        assert done.reply["status"] == "ok", done.reply
        return json.loads(done.stdout().strip().splitlines()[-1])

    @property
    def pid(self) -> int:
        """The kernel process's id."""
        return int(self.manager.provisioner.process.pid)

    async def kill(self) -> None:
        """SIGKILL the kernel process (no atexit, no flush), and reap it."""
        process = self.manager.provisioner.process
        os.kill(process.pid, signal.SIGKILL)
        await asyncio.to_thread(process.wait, 30)
        self.client.stop_channels()
        await self.manager.cleanup_resources()

    async def stop(self) -> None:
        """Shut the kernel down as a server would."""
        self.client.stop_channels()
        if await self.manager.is_alive():
            await self.manager.shutdown_kernel(now=False)


StartKernel = Callable[..., Awaitable[Kernel]]


@pytest_asyncio.fixture(loop_scope="module")
async def start_kernel(tmp_path: Path) -> AsyncIterator[StartKernel]:
    """Start real kernels: ``await start_kernel(guard_url=..., token=..., args=[...])``."""
    from jupyter_client import AsyncKernelManager

    started: list[Kernel] = []

    async def start(
        *,
        guard_url: str | None,
        token: str | None,
        user: str = "alice",
        args: list[str] | None = None,
        hooks: bool = True,
        data_dir: Path | None = None,
        kernel_id: str | None = None,
        python: str | None = None,
    ) -> Kernel:
        kernel_id = kernel_id or str(uuid.uuid4())
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "NBGUARD_"))}
        env["JUPYTER_DATA_DIR"] = str(data_dir or tmp_path / "data")
        env["IPYTHONDIR"] = str(tmp_path / "ipython")
        env["JUPYTERHUB_USER"] = user
        env["JUPYTERHUB_BASE_URL"] = "/hub-base/"
        if guard_url is not None:
            env["NBGUARD_GUARD_URL"] = guard_url
        if token is not None:
            env["JUPYTERHUB_API_TOKEN"] = token
        manager = AsyncKernelManager(
            connection_file=str(tmp_path / f"kernel-{kernel_id}.json"), kernel_name="python3"
        )
        manager.kernel_id = kernel_id
        extra = [f"--IPKernelApp.extra_extensions={HOOKS}"] if hooks else []
        if python is not None:
            manager.kernel_spec.argv[0] = python
        log = open(tmp_path / f"kernel-{kernel_id}.log", "ab")  # noqa: SIM115
        try:
            await manager.start_kernel(
                env=env, extra_arguments=[*extra, *FAST, *(args or [])], stdout=log, stderr=log
            )
        finally:
            log.close()
        client = manager.client()
        client.start_channels()
        await client.wait_for_ready(timeout=60)
        kernel = Kernel(manager, client, kernel_id)
        started.append(kernel)
        return kernel

    yield start
    for kernel in started:
        try:
            await kernel.stop()
        except Exception:  # already killed
            kernel.client.stop_channels()


def spooled(data_dir: Path) -> list[dict[str, Any]]:
    """Every record in the spool under ``data_dir`` (JUPYTER_DATA_DIR), file by file."""
    out = []
    for path in sorted((data_dir / "nbguard" / "spool").glob("*/*.jsonl")):
        if path.name != "quarantine.jsonl":
            text = path.read_bytes().split(b"\0", 1)[0].decode()  # segments are zero-filled
            out.extend(json.loads(line) for line in text.splitlines() if line)
    return out
