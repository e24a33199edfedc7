"""A real MLflow tracking server, and a hub whose guard service fronts it.

``mlflow server`` runs on loopback with a SQLite backend store and a local
artifact root served through its artifact proxy (``--serve-artifacts``), in a
process group of its own: it starts uvicorn workers, and teardown kills the whole
group. Tests drive it with the real MLflow client, in a worker thread (the hub and
the service run in the test's event loop), pointed at the gateway through the
hub's proxy with a user's hub token as ``MLFLOW_TRACKING_TOKEN``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio
import requests

from .conftest import Guard, running_guard, signed_in

T = TypeVar("T")

#: One MLflow client call at a time: its URI and token come from the environment.
_CLIENT_LOCK = threading.Lock()


@dataclass
class MLflowServer:
    """A running ``mlflow server``."""

    url: str
    process: subprocess.Popen[bytes]
    root: Path


def free_port() -> int:
    """A free TCP port on loopback."""
    from jupyterhub.utils import random_port

    port: int = random_port()
    return port


def start_mlflow(root: Path) -> MLflowServer:
    """Start ``mlflow server`` under ``root`` in a new process group; wait for /health."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with (root / "mlflow.log").open("wb") as log:  # the child keeps its own copy
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=root
        )
    server = MLflowServer(url, process, root)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {(root / 'mlflow.log').read_text()[-2000:]}")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.3)
    stop_mlflow(server)
    raise RuntimeError("mlflow server did not start in 120 s")


def stop_mlflow(server: MLflowServer) -> None:
    """Kill the server's whole process group (it starts workers of its own)."""
    try:
        os.killpg(server.process.pid, signal.SIGTERM)
        server.process.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=20)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MLflowServer]:
    """One real MLflow tracking server for the session."""
    server = start_mlflow(tmp_path_factory.mktemp("mlflow"))
    try:
        yield server
    finally:
        stop_mlflow(server)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mlflow_guard(
    tmp_path_factory: pytest.TempPathFactory, mlflow_server: MLflowServer
) -> AsyncIterator[Guard]:
    """A MockHub with the guard service fronting the session's MLflow server."""
    tmp = tmp_path_factory.mktemp("guard")
    # No attribute cache: tests change tags and look at once.
    settings = {"mlflow_tracking_uri": mlflow_server.url, "mlflow_cache_seconds": 0.0}
    async with running_guard(tmp, **settings) as env:
        yield env


@dataclass
class Person:
    """A signed-in hub user with an API token, as the MLflow client sees them."""

    guard: Guard
    name: str
    token: str

    @property
    def tracking_uri(self) -> str:
        """The gateway's URL (what the spawner sets as ``MLFLOW_TRACKING_URI``)."""
        return self.guard.url("mlflow")

    async def run(self, work: Callable[[], T]) -> T:
        """Run MLflow client code as this person, in a worker thread."""

        def call() -> T:
            import mlflow

            with _CLIENT_LOCK:
                os.environ["MLFLOW_TRACKING_TOKEN"] = self.token
                os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
                mlflow.set_tracking_uri(self.tracking_uri)
                mlflow.set_registry_uri(self.tracking_uri)
                try:
                    return work()
                finally:
                    os.environ.pop("MLFLOW_TRACKING_TOKEN", None)

        return await asyncio.to_thread(call)

    async def call(self, method: str, path: str, **kw: Any) -> requests.Response:
        """A raw HTTP call to the gateway with this person's token (as Bearer)."""
        headers = {"Authorization": f"Bearer {self.token}", **kw.pop("headers", {})}
        url = f"{self.tracking_uri}/{path}"
        return await asyncio.to_thread(
            requests.request, method, url, headers=headers, timeout=60, **kw
        )


async def person(guard: Guard, role: str, team: str) -> Person:
    """A new signed-in user (second factor just done) with ``role`` in ``team``."""
    browser = await signed_in(guard, role, teams=(team,))
    name = browser.name  # type: ignore[attr-defined]
    token = guard.hub.users[name].new_api_token(note="mlflow client")
    return Person(guard, name, token)
