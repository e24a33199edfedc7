"""Real hubs and a real browser for the end-to-end tests.

``demo_hub`` runs ``nbguard demo`` (the command a newcomer runs) in a temporary
state directory on a free loopback port, in a new process group, and waits
until ``/hub/health`` answers through the proxy. Teardown signals the group as
a terminal's Ctrl-C would, then kills whatever the hub left behind (its proxy
and the users' servers run in sessions of their own). ``page`` is a fresh
Chromium page (Debian's browser, driven by Playwright); when a test fails, a
screenshot of it lands in ``test-artifacts/``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from nbguard.cli.demo import DemoState, hub_answers

from ...chromium import launch_chromium

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "test-artifacts"
PLAIN_CONFIG = Path(__file__).with_name("plain_hub_config.py")
#: Seconds a hub gets to answer /hub/health (it imports JupyterHub, migrates its DB).
START_TIMEOUT = 90.0
#: Seconds the launcher gets to stop the hub, its proxy and servers after a signal.
STOP_TIMEOUT = 60.0
_reports = pytest.StashKey[dict[str, pytest.TestReport]]()


@dataclass
class RunningHub:
    """A hub started by ``nbguard demo``: its address, state and processes."""

    url: str
    state: DemoState
    process: subprocess.Popen[bytes]
    log: Path
    service_token: str
    _known: dict[int, psutil.Process] = field(default_factory=dict)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the launcher's and hub's combined output."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def announced(self) -> bool:
        """Whether the launcher has printed that the hub is ready, with its address."""
        return f"nbguard demo hub: {self.url}/" in self.log.read_text(errors="replace")

    def descendants(self) -> list[psutil.Process]:
        """The launcher's live descendants (hub, proxy, servers), remembered for cleanup."""
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        for child in children:
            self._known.setdefault(child.pid, child)
        return children

    def stop(self, signum: int = signal.SIGINT) -> int:
        """Signal the launcher's process group; return its exit status once it is gone."""
        self.descendants()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def leftovers(self) -> list[psutil.Process]:
        """Processes of this hub still running (or unreaped) after it stopped."""
        alive = []
        for child in self._known.values():
            try:
                if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                    alive.append(child)
            except psutil.NoSuchProcess:
                continue
        return alive

    def kill_leftovers(self) -> None:
        """Kill whatever this hub left behind, so no test leaks a process."""
        for child in self.leftovers():
            try:
                child.kill()
            except psutil.NoSuchProcess:
                continue
        psutil.wait_procs(list(self._known.values()), timeout=10)


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_hub(workdir: Path, config: Path | None = None) -> RunningHub:
    """Run ``nbguard demo`` in ``workdir`` and wait until the hub answers."""
    port = free_port()
    state = DemoState(workdir / "state")
    log = workdir / "demo.log"
    token = secrets.token_hex(16)
    command = [
        str(Path(sys.executable).with_name("nbguard")),
        "demo",
        "--state-dir",
        str(state.root),
        "--port",
        str(port),
    ]
    if config is not None:
        command += ["--config", str(config)]
    env = {**os.environ, "NBGUARD_TEST_SERVICE_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
    hub = RunningHub(f"http://127.0.0.1:{port}", state, process, log, token)
    deadline = time.monotonic() + START_TIMEOUT
    # Ready when the hub answers and the launcher has said so (its banner is printed).
    while not (hub.announced() and hub_answers("127.0.0.1", port)):
        if process.poll() is not None or time.monotonic() > deadline:
            hub.stop()
            hub.kill_leftovers()
            pytest.fail(f"the demo hub did not start; its log ends:\n{hub.log_tail()}")
        time.sleep(0.25)
    hub.descendants()
    return hub


@pytest.fixture
def plain_hub_config() -> Path:
    """A demo-hub config with JupyterHub's plain authenticator, to test the launcher alone."""
    return PLAIN_CONFIG


@pytest.fixture
def hub_factory(tmp_path: Path) -> Iterator[Callable[..., RunningHub]]:
    """Start demo hubs in this test's directory; all are stopped and cleaned up after it."""
    started: list[RunningHub] = []

    def start(config: Path | None = None) -> RunningHub:
        workdir = tmp_path / f"hub{len(started)}"
        workdir.mkdir()
        hub = start_hub(workdir, config)
        started.append(hub)
        return hub

    yield start
    for hub in started:
        if hub.process.poll() is None:
            hub.stop()
        hub.kill_leftovers()


@pytest.fixture(scope="module")
def demo_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    """The packaged demo hub, shared by a module's tests (each uses its own demo user)."""
    hub = start_hub(tmp_path_factory.mktemp("demo"))
    try:
        yield hub
    finally:
        hub.stop()
        hub.kill_leftovers()


# Module scope, not session: while Playwright's sync driver runs, the main thread
# has a running event loop, and pytest-asyncio tests collected later would fail.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Playwright's sync driver, for one test module."""
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's headless Chromium (Playwright cannot download its own here)."""
    chromium = launch_chromium(playwright)
    yield chromium
    chromium.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the test item, for the screenshot on failure."""
    report = yield
    item.stash.setdefault(_reports, {})[report.when] = report
    return report


@pytest.fixture
def page(request: pytest.FixtureRequest, browser: Browser, demo_hub: RunningHub) -> Iterator[Page]:
    """A page in a fresh browser context (no cookies) whose base URL is the demo hub."""
    context = browser.new_context(base_url=demo_hub.url)
    context.set_default_timeout(30_000)
    tab = context.new_page()
    yield tab
    call = request.node.stash.get(_reports, {}).get("call")
    if call is not None and call.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        name = request.node.nodeid.replace("/", "_").replace("::", "-")
        tab.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        (ARTIFACTS / f"{name}-hub.log").write_text(demo_hub.log_tail(400))
    context.close()
