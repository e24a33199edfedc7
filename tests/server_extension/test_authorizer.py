"""The authorizer: terminals, writes and execution as the real guard's entitlement says; fail closed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from nbguard.server_extension.authorizer import (
    CONTENTS_WRITE,
    KERNEL_EXECUTE,
    NEVER,
    TERMINAL,
    required_permission,
)

from .conftest import GuardProcess, SpawnedServer

Fetch = Any
NOTEBOOK = json.dumps({"type": "file", "format": "text", "content": "x = 1\n"})


@pytest.mark.parametrize(
    ("action", "resource", "method", "needed"),
    [
        pytest.param("read", "terminals", "GET", TERMINAL, id="list-terminals"),
        pytest.param("write", "terminals", "POST", TERMINAL, id="new-terminal"),
        pytest.param("execute", "terminals", "GET", TERMINAL, id="terminal-websocket"),
        pytest.param("write", "contents", "PUT", CONTENTS_WRITE, id="save-file"),
        pytest.param("write", "contents", "DELETE", CONTENTS_WRITE, id="delete-file"),
        pytest.param("read", "contents", "GET", None, id="read-file"),
        pytest.param("execute", "kernels", "GET", KERNEL_EXECUTE, id="kernel-websocket"),
        pytest.param("write", "kernels", "POST", KERNEL_EXECUTE, id="start-kernel"),
        pytest.param("write", "kernels", "DELETE", None, id="shut-kernel-down"),
        pytest.param("read", "kernels", "GET", None, id="list-kernels"),
        pytest.param("write", "sessions", "POST", KERNEL_EXECUTE, id="new-session"),
        pytest.param("write", "sessions", "DELETE", None, id="end-session"),
        pytest.param("write", "events", "POST", NEVER, id="post-event"),
        pytest.param("execute", "events", "GET", None, id="subscribe-events"),
        pytest.param("read", "nbguard", "GET", None, id="panel"),
        pytest.param("write", "config", "PATCH", None, id="frontend-config"),
    ],
)
def test_permission_each_pair_needs(
    action: str, resource: str, method: str, needed: str | None
) -> None:
    """Each (action, resource) Jupyter asks about maps to its entitlement permission, or none."""
    assert required_permission(action, resource, method) == needed


def test_interrupting_needs_nothing_but_restarting_runs_code() -> None:
    """A user without execution may still interrupt a kernel; a restart starts one anew."""
    assert (
        required_permission("write", "kernels", "POST", "/user/a/api/kernels/k/interrupt") is None
    )
    restart = required_permission("write", "kernels", "POST", "/user/a/api/kernels/k/restart")
    assert restart == KERNEL_EXECUTE


async def status_of(jp_fetch: Fetch, *parts: str, **kw: Any) -> int:
    """The HTTP status of a call to the server under test."""
    try:
        response = await jp_fetch(*parts, **kw)
    except HTTPClientError as error:
        return error.code
    return int(response.code)


async def terminal_status(jp_fetch: Fetch) -> int:
    """Open a terminal (and close it again if that worked); the status of the opening."""
    try:
        response = await jp_fetch("api", "terminals", method="POST", body="{}")
    except HTTPClientError as error:
        return error.code
    name = json.loads(response.body)["name"]
    await jp_fetch("api", "terminals", name, method="DELETE")
    return int(response.code)


async def jupyter_permissions(jp_fetch: Fetch) -> dict[str, int]:
    """The status of a terminal, a file write, a kernel start and a file read."""
    return {
        "terminal": await terminal_status(jp_fetch),
        "write": await status_of(jp_fetch, "api", "contents", "a.txt", method="PUT", body=NOTEBOOK),
        "kernel": await status_of(jp_fetch, "api", "kernels", method="POST", body="{}"),
        "read": await status_of(jp_fetch, "api", "contents"),
    }


@pytest.mark.parametrize(
    ("guard_server", "expected"),
    [
        pytest.param(
            "data-scientist",
            {"terminal": 403, "write": 201, "kernel": 201, "read": 200},
            id="data-scientist-no-terminal",
        ),
        pytest.param(
            "reviewer",
            {"terminal": 403, "write": 403, "kernel": 201, "read": 200},
            id="reviewer-read-only",
        ),
        pytest.param(
            "ml-engineer",
            {"terminal": 200, "write": 201, "kernel": 201, "read": 200},
            id="ml-engineer-terminal",
        ),
    ],
    indirect=["guard_server"],
)
async def test_entitlement_decides_jupyters_resources(
    jp_fetch: Fetch, expected: dict[str, int]
) -> None:
    """Terminals, writes and kernels follow the entitlement the guard signs for the user's role."""
    assert await jupyter_permissions(jp_fetch) == expected


async def test_guard_down_fails_closed(jp_fetch: Fetch, guard_process: GuardProcess) -> None:
    """Without an entitlement there is no terminal, no write and no kernel; reading still works."""
    guard_process.down()
    try:
        seen = await jupyter_permissions(jp_fetch)
    finally:
        guard_process.up()
    assert seen == {"terminal": 403, "write": 403, "kernel": 403, "read": 200}


@pytest.mark.parametrize("guard_server", ["ml-engineer"], indirect=True)
async def test_post_events_is_always_refused(jp_fetch: Fetch) -> None:
    """POST /api/events is refused even with every permission (events could be forged)."""
    event = {"schema_id": "https://events.jupyter.org/jupyter_server/x/v1", "version": "1"}
    body = json.dumps({**event, "data": {}})
    assert await status_of(jp_fetch, "api", "events", method="POST", body=body) == 403
    assert await terminal_status(jp_fetch) == 200


def entitlement_decisions(guard_process: GuardProcess, user: str) -> int:
    """How many jupyter.* decisions the guard recorded for ``user`` (3 per entitlement)."""
    records = guard_process.records("access", user)
    return sum(1 for r in records if str(r.get("action", "")).startswith("jupyter."))


@pytest.mark.parametrize("guard_server", ["reviewer"], indirect=True)
async def test_entitlement_is_cached(
    jp_fetch: Fetch, guard_process: GuardProcess, guard_server: SpawnedServer
) -> None:
    """Several checks within an entitlement's life ask the guard once (three decisions)."""
    before = entitlement_decisions(guard_process, guard_server.name)
    await jupyter_permissions(jp_fetch)
    await jupyter_permissions(jp_fetch)
    assert entitlement_decisions(guard_process, guard_server.name) - before == 3


class TestRefresh:
    """An entitlement is fetched anew once it is within the refresh margin of its expiry."""

    @pytest.fixture
    def nbguard_config(self, nbguard_config: dict[str, Any]) -> dict[str, Any]:
        """A margin longer than the guard's entitlement lifetime: every check refreshes."""
        return {**nbguard_config, "entitlement_refresh_margin": 100_000.0}

    @pytest.mark.parametrize("guard_server", ["reviewer"], indirect=True)
    async def test_entitlement_near_expiry_is_refreshed(
        self, jp_fetch: Fetch, guard_process: GuardProcess, guard_server: SpawnedServer
    ) -> None:
        """Each check asks the guard again when the cached entitlement is due for renewal."""
        before = entitlement_decisions(guard_process, guard_server.name)
        for _ in range(2):
            assert await status_of(jp_fetch, "api", "kernels", method="POST", body="{}") == 201
        assert entitlement_decisions(guard_process, guard_server.name) - before == 6


class TestAnotherServer:
    """A server that is not the one the guard's entitlement names."""

    @pytest.fixture
    def server_user(self, monkeypatch: pytest.MonkeyPatch, guard_server: SpawnedServer) -> str:
        """The server claims to be the user's server ``other`` (the token names the default)."""
        monkeypatch.setenv("JUPYTERHUB_USER", guard_server.name)
        monkeypatch.setenv("JUPYTERHUB_SERVER_NAME", "other")
        return guard_server.name

    async def test_entitlement_for_another_server_is_refused(self, jp_fetch: Fetch) -> None:
        """A token signed for another server than this one counts as none: fail closed."""
        seen = await jupyter_permissions(jp_fetch)
        assert seen == {"terminal": 403, "write": 403, "kernel": 403, "read": 200}
