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
from collections.abc import Callable, Iterator
from typing import Any

import pytest

# pytest-jupyter's fixtures and its hooks that run async tests on its loop,
# for this folder only (pytest allows `pytest_plugins` in the root conftest only).
from pytest_jupyter.jupyter_server import *  # noqa: F403

from .guard_process import GuardProcess, SpawnedServer, running_guard


@pytest.fixture(scope="session")
def guard_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuardProcess]:
    """The hub and guard service in their own process, for the whole session."""
    with running_guard(tmp_path_factory.mktemp("guard")) as guard:
        yield guard


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
