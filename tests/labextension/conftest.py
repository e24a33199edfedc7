"""Fixtures for the lab extension's UI tests: a real JupyterLab, a real guard, a real browser.

The guard is tests/server_extension's hub-and-guard process (``running_guard``):
JupyterHub's MockHub with nbguard's authenticator, spawner and the real
``GuardService``. Each user's JupyterLab is a real ``jupyter lab`` process with
the server extension enabled, the server's own hub token and guard URL in its
environment (as the spawner gives them), the kernel hooks loaded in its kernels,
and the committed prebuilt extension found through ``JUPYTER_PATH``. Chromium
(Debian's, driven by Playwright) opens the lab; each test leaves a screenshot in
``test-artifacts/labextension/``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from ..chromium import launch_chromium
from ..server_extension.guard_process import GuardProcess, SpawnedServer, running_guard

ROOT = Path(__file__).resolve().parents[2]
PREBUILT = ROOT / "labextension" / "nbguard"
ARTIFACTS = ROOT / "test-artifacts" / "labextension"


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LabServer:
    """A running ``jupyter lab`` for one spawned user."""

    url: str
    token: str
    user: SpawnedServer
    process: subprocess.Popen[bytes]
    log: Path

    def api(self, method: str, path: str, **kw: Any) -> requests.Response:
        """Call the Jupyter server with its token (as a script, not as the browser)."""
        headers = {"Authorization": f"token {self.token}", **kw.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kw)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and its kernels with it."""
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def start_lab(tmp: Path, user: SpawnedServer) -> LabServer:
    """``jupyter lab`` on loopback as ``user``'s spawned server would run it."""
    data = tmp / "data"
    (data / "labextensions").mkdir(parents=True)
    (data / "labextensions" / "nbguard").symlink_to(PREBUILT, target_is_directory=True)
    config = tmp / "config"
    config.mkdir()
    (config / "jupyter_server_config.json").write_text(
        json.dumps({"ServerApp": {"jpserver_extensions": {"nbguard.server_extension": True}}})
    )
    profile = tmp / "ipython" / "profile_default"
    profile.mkdir(parents=True)
    (profile / "ipython_kernel_config.json").write_text(
        json.dumps({"IPKernelApp": {"extra_extensions": ["nbguard.kernel_hooks"]}})
    )
    # No "official Jupyter news?" prompt over the panel.
    notes = tmp / "settings" / "@jupyterlab" / "apputils-extension"
    notes.mkdir(parents=True)
    (notes / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    work = tmp / "work"
    work.mkdir()
    port = free_port()
    token = os.urandom(16).hex()
    env = {
        **os.environ,
        "JUPYTER_PATH": str(data),
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"),
        "IPYTHONDIR": str(tmp / "ipython"),
        # What the spawner gives a server: who it is, its token, where the guard is.
        "JUPYTERHUB_USER": user.name,
        "JUPYTERHUB_API_TOKEN": user.token,
        "NBGUARD_GUARD_URL": user.guard_url,
    }
    log = tmp / "lab.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterlab",
                "--no-browser",
                "--allow-root",
                "--ip=127.0.0.1",
                f"--port={port}",
                f"--IdentityProvider.token={token}",
                f"--ServerApp.root_dir={work}",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    lab = LabServer(f"http://127.0.0.1:{port}/", token, user, process, log)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"jupyter lab exited; see {log}:\n{log.read_text()[-3000:]}")
        try:
            if lab.api("GET", "api/status").status_code == 200:
                return lab
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    lab.stop()
    raise RuntimeError(f"jupyter lab did not answer; see {log}")


@pytest.fixture(scope="session")
def guard_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuardProcess]:
    """The hub and guard service in their own process, for the whole session."""
    with running_guard(tmp_path_factory.mktemp("guard")) as guard:
        yield guard


@pytest.fixture(scope="session")
def labs(
    guard_process: GuardProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., LabServer]]:
    """``labs(role, key=role)``: a JupyterLab for a new signed-in user of ``role``, per key.

    Made on first use and shared by the session; a test that changes its user's
    state (its MFA age, say) asks for a key of its own.
    """
    if not (PREBUILT / "package.json").exists():
        pytest.fail(f"{PREBUILT} is missing: the prebuilt extension is committed there")
    running: dict[str, LabServer] = {}

    def lab_of(role: str, key: str = "") -> LabServer:
        key = key or role
        if key not in running:
            user = guard_process.new_server(role)
            running[key] = start_lab(tmp_path_factory.mktemp(f"lab-{key}"), user)
        return running[key]

    try:
        yield lab_of
    finally:
        for lab in running.values():
            lab.stop()


@pytest.fixture
def lab(labs: Callable[..., LabServer]) -> LabServer:
    """The data scientist's JupyterLab."""
    return labs("data-scientist")


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    """Playwright's sync driver for the session."""
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's Chromium (Playwright cannot download its own here)."""
    chromium = launch_chromium(playwright)
    yield chromium
    chromium.close()


def open_lab(browser: Browser, lab: LabServer) -> Page:
    """The lab in a fresh browser context, with a fresh layout."""
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    tab.goto(f"{lab.url}lab?reset&token={lab.token}")
    tab.locator("#jp-main-dock-panel").wait_for()
    return tab


def keep_screenshot(tab: Page, name: str) -> None:
    """Save the tab's screenshot as a test artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = name.replace("/", "_").replace("[", "-").rstrip("]")
    tab.screenshot(path=str(ARTIFACTS / f"{name}.png"))


@pytest.fixture
def page(request: pytest.FixtureRequest, browser: Browser, lab: LabServer) -> Iterator[Page]:
    """The data scientist's lab in a browser; a screenshot of it is kept after the test."""
    tab = open_lab(browser, lab)
    try:
        yield tab
    finally:
        keep_screenshot(tab, request.node.name)
        tab.context.close()
