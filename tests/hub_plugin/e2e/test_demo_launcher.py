"""``nbguard demo`` runs a real hub, and Ctrl-C stops it with its proxy and users' servers.

These run the launcher with plain_hub_config.py (JupyterHub's own dummy
authenticator and spawner), so they test the launcher whatever state nbguard's
authenticator is in; test_demo_login.py drives the packaged demo config.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def hub_api(hub: Any, method: str, path: str) -> Any:
    """Call the hub's REST API with the test service's token; return the decoded JSON."""
    request = urllib.request.Request(  # noqa: S310 (a loopback http URL we built)
        f"{hub.url}/hub/api{path}",
        method=method,
        headers={"Authorization": f"token {hub.service_token}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        body = response.read()
    return json.loads(body) if body else None


def start_server(hub: Any, user: str, timeout: float = 90.0) -> None:
    """Start ``user``'s default server through the API and wait until the hub says it is ready."""
    hub_api(hub, "POST", f"/users/{user}/server")
    deadline = time.monotonic() + timeout
    while not hub_api(hub, "GET", f"/users/{user}")["servers"].get("", {}).get("ready"):
        assert time.monotonic() < deadline, hub.log_tail()
        time.sleep(0.5)


def command_names(hub: Any) -> set[str]:
    """The executable names (argv[1], after the interpreter) of the hub's processes."""
    names = set()
    for process in hub.descendants():
        argv = process.cmdline()
        names.add(Path(argv[1] if len(argv) > 1 else argv[0]).name)
    return names


def test_ctrl_c_stops_hub_proxy_and_servers(hub_factory: Any, plain_hub_config: Path) -> None:
    """Ctrl-C at the launcher's terminal stops the hub, its proxy and a user's server, then exits 0."""
    hub = hub_factory(plain_hub_config)
    start_server(hub, "alice")
    assert {"jupyterhub", "configurable-http-proxy", "jupyterhub-singleuser"} <= command_names(hub)

    assert hub.stop(signal.SIGINT) == 0
    assert hub.leftovers() == []
    assert not hub.state.proxy_pid_file.exists()
    assert hub.log_tail(1) == "nbguard: demo hub stopped"


def test_second_ctrl_c_kills_a_hub_that_does_not_stop(
    hub_factory: Any, plain_hub_config: Path, tmp_path: Path
) -> None:
    """When the hub hangs while stopping, a second Ctrl-C kills it and says what may be left."""
    stuck = tmp_path / "stuck_stop_config.py"
    stuck.write_text(
        f"load_subconfig({str(plain_hub_config)!r})\n"
        "import asyncio\n"
        "from jupyterhub.spawner import SimpleLocalProcessSpawner\n"
        "class StuckStopSpawner(SimpleLocalProcessSpawner):\n"
        "    async def stop(self, now=False):\n"
        "        await asyncio.sleep(3600)\n"
        "c.JupyterHub.spawner_class = StuckStopSpawner\n"
    )
    hub = hub_factory(stuck)
    start_server(hub, "alice")
    hub.descendants()
    os.killpg(hub.process.pid, signal.SIGINT)
    deadline = time.monotonic() + 30
    while "Cleaning up single-user servers" not in hub.log.read_text():
        assert time.monotonic() < deadline, hub.log_tail()
        time.sleep(0.2)

    assert hub.stop(signal.SIGINT) == 1
    assert hub.log_tail(1).startswith("nbguard: killed the hub; its proxy and users' servers")
    assert "jupyterhub" not in {Path(p.cmdline()[1]).name for p in hub.leftovers()}


def test_first_run_keeps_everything_in_a_private_state_dir(
    hub_factory: Any, plain_hub_config: Path
) -> None:
    """The command creates its state dir 0700 with 0600 secrets, and the hub writes only there."""
    hub = hub_factory(plain_hub_config)
    assert stat.S_IMODE(hub.state.root.stat().st_mode) == 0o700
    for path in hub.state.secret_files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert hub.state.hub_db.exists()
    assert sorted(p.name for p in hub.state.root.parent.iterdir()) == ["demo.log", "state"]
    log = hub.log.read_text()
    assert f"created demo state in {hub.state.root}" in log
    assert f"nbguard demo hub: {hub.url}/" in log


def test_hub_that_fails_to_start_is_one_error_line(tmp_path: Path) -> None:
    """A hub that exits while starting makes the launcher exit 1 with one line naming it."""
    config = tmp_path / "broken_config.py"
    config.write_text('raise RuntimeError("this configuration is broken")\n')
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("nbguard")),
            "demo",
            "--state-dir",
            str(tmp_path / "state"),
            "--port",
            str(port),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "this configuration is broken" in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "nbguard: error: jupyterhub exited with status 1 before it was ready; see its log above"
    )
