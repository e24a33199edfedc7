"""A real MLflow tracking server for the session, and a hub whose guard service fronts it.

The server is started by :mod:`.mlflow_server` (loopback, SQLite, local artifact
root, its own process group killed at teardown). Tests drive it with the real
MLflow client, in a worker thread (the hub and the service run in the test's
event loop), pointed at the gateway through the hub's proxy with a user's hub
token as ``MLFLOW_TRACKING_TOKEN``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import pytest_asyncio
import requests

from .conftest import Guard, running_guard, signed_in
from .mlflow_server import MLflowServer, start_mlflow, stop_mlflow

T = TypeVar("T")

#: One MLflow client call at a time: its URI and token come from the environment.
_CLIENT_LOCK = threading.Lock()


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
    # No attribute cache: tests change tags and look at once.
    async with gateway_guard(tmp_path_factory, mlflow_server, cache_seconds=0.0) as env:
        yield env


@asynccontextmanager
async def gateway_guard(
    tmp_path_factory: pytest.TempPathFactory, server: MLflowServer, *, cache_seconds: float
) -> AsyncIterator[Guard]:
    """A MockHub with the guard service fronting ``server``, attributes cached so long."""
    tmp = tmp_path_factory.mktemp("guard")
    settings = {"mlflow_tracking_uri": server.url, "mlflow_cache_seconds": cache_seconds}
    async with running_guard(tmp, **settings) as env:
        yield env


@dataclass
class Person:
    """A signed-in hub user with an API token, as the MLflow client sees them."""

    guard: Guard
    name: str
    token: str
    #: ``MLFLOW_TRACKING_URI`` as a server got it; default: the gateway through the proxy.
    uri: str = ""

    @property
    def tracking_uri(self) -> str:
        """The gateway's URL (what the spawner sets as ``MLFLOW_TRACKING_URI``)."""
        return self.uri or self.guard.url("mlflow")

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
