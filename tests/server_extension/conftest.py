"""Fixtures for the server-extension tests: pytest-jupyter's server, a real guard beside it.

The Jupyter server is pytest-jupyter's ``jp_serverapp`` (a real ServerApp on
loopback, run on pytest-jupyter's event loop) with nbguard's extension enabled.
The guard it talks to is real too: tests/hub_plugin/guard's MockHub, proxy and
``GuardService``, run by ``guard_process.py`` in a process of its own for the
whole session (the hub's fixtures run on pytest-asyncio's loop, the server on
pytest-jupyter's; in one process each would stall while the other runs). Each
test's server calls the guard at the guard's own URL with the token of a server
that the hub really spawned for a user who logged in with a second factor, so
the guard treats it exactly as that user's server.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

# pytest-jupyter's fixtures and its hooks that run async tests on its loop,
# for this folder only (pytest allows `pytest_plugins` in the root conftest only).
from pytest_jupyter.jupyter_server import *  # noqa: F403

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class SpawnedServer:
    """A server the hub spawned: its user, its own token, and the guard's URL for it."""

    name: str
    token: str
    guard_url: str

    def guard_call(self, method: str, path: str, **kw: Any) -> requests.Response:
        """Call the guard directly with this server's token (what the extension forwards to)."""
        headers = {"Authorization": f"token {self.token}", **kw.pop("headers", {})}
        return requests.request(method, self.guard_url + path, headers=headers, timeout=30, **kw)


class GuardProcess:
    """The hub and guard service process, driven through its control API."""

    def __init__(self, process: subprocess.Popen[str], control: str) -> None:
        self.process = process
        self.control = control

    def call(self, method: str, path: str, **kw: Any) -> Any:
        """A control call; its JSON answer."""
        response = requests.request(method, self.control + path, timeout=120, **kw)
        response.raise_for_status()
        return response.json()

    def new_server(self, *roles: str) -> SpawnedServer:
        """A new signed-in user with ``roles`` and a running server."""
        answer = self.call("POST", "/servers", json={"roles": list(roles)})
        return SpawnedServer(answer["name"], answer["token"], answer["guard_url"])

    def records(self, kind: str, actor: str) -> list[dict[str, Any]]:
        """The ledger's record bodies of ``kind`` by ``actor``, oldest first."""
        return list(self.call("GET", "/records", params={"kind": kind, "actor": actor})["records"])

    def down(self) -> None:
        """Stop the guard service's listener (connections are refused)."""
        self.call("POST", "/guard/down")

    def up(self) -> None:
        """Listen again."""
        self.call("POST", "/guard/up")


@pytest.fixture(scope="session")
def guard_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuardProcess]:
    """The hub and guard service in their own process, for the whole session."""
    tmp = tmp_path_factory.mktemp("guard")
    log = (tmp / "guard.log").open("w")
    process = subprocess.Popen(
        [sys.executable, str(HERE / "guard_process.py"), str(tmp)],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait(30)
        raise RuntimeError(f"the guard process did not start; see {tmp / 'guard.log'}")
    guard = GuardProcess(process, json.loads(line)["control"])
    try:
        yield guard
    finally:
        try:
            guard.call("POST", "/stop")
            process.wait(60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
            process.stdout.close()
            log.close()


@pytest.fixture(scope="session")
def spawned(guard_process: GuardProcess) -> Callable[[str], SpawnedServer]:
    """A spawned server per role, made on first use and shared by the session's tests."""
    servers: dict[str, SpawnedServer] = {}

    def server_of(role: str) -> SpawnedServer:
        if role not in servers:
            servers[role] = guard_process.new_server(role)
        return servers[role]

    return server_of


@pytest.fixture
def guard_server(
    request: pytest.FixtureRequest, spawned: Callable[[str], SpawnedServer]
) -> SpawnedServer:
    """The spawned server whose identity the Jupyter server under test takes on.

    A data scientist's by default; parametrize it indirectly with another role.
    """
    return spawned(getattr(request, "param", "data-scientist"))


@pytest.fixture
def nbguard_config(guard_server: SpawnedServer) -> dict[str, Any]:
    """``NBGuardExtension`` settings: the guard's URL and the server's token; fast retries."""
    return {
        "guard_url": guard_server.guard_url,
        "api_token": guard_server.token,
        "witness_retry_min": 0.05,
        "witness_retry_max": 0.2,
    }


@pytest.fixture
def jp_server_config(nbguard_config: dict[str, Any], server_user: str) -> dict[str, Any]:
    """A Jupyter server with nbguard's extension enabled and configured."""
    return {
        "ServerApp": {"jpserver_extensions": {"nbguard.server_extension": True}},
        "NBGuardExtension": nbguard_config,
    }


@pytest.fixture
def server_user(monkeypatch: pytest.MonkeyPatch, guard_server: SpawnedServer) -> str:
    """``JUPYTERHUB_USER`` as the hub sets it for the spawned server."""
    monkeypatch.setenv("JUPYTERHUB_USER", guard_server.name)
    return guard_server.name


async def eventually(check: Callable[[], Any], *, tries: int = 400, pause: float = 0.05) -> Any:
    """Poll ``check`` (letting the server's loop run) until it returns a truthy value."""
    for _ in range(tries):
        value = check()
        if value:
            return value
        await asyncio.sleep(pause)
    raise AssertionError(f"{check} never became true")
