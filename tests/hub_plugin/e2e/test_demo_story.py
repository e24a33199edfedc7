"""The README's demo story, end to end, in a real browser against a real demo hub.

Alice signs in with TOTP, spawns, reads an allowed dataset from a notebook, is
denied another team's dataset with the reason and where to ask, asks for a grant;
bob approves it; alice reads it; every cell she ran is in the ledger from both
witnesses (kernel hooks and server extension); carol (reviewer) finds the
session, steps to the cell alice ran under the grant, sees the denial, the
approval and that the ledger verifies, and exports it as a notebook, while alice
may not open the review pages; with the hub stopped, ``nbguard verify`` passes,
``nbguard replay`` writes the same session from the ledger file, and a tampered
copy fails verification.

The hub is ``nbguard demo`` with the packaged config; the users' servers see the
user zone's two data files as a wheel install would (``user_zone_hub_config.py``).
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from .conftest import ARTIFACTS, RunningHub, start_hub
from .test_demo_login import LAB_TIMEOUT, AuthenticatorApp, enrol, go_on, sign_in

pytestmark = pytest.mark.slow

USER_ZONE_CONFIG = Path(__file__).with_name("user_zone_hub_config.py")
GUARD = "/services/nbguard-guard/"
#: Milliseconds for a cell that reaches the guard service to show its output.
CELL_TIMEOUT = 60_000
ALLOWED = 'import pandas as pd\npd.read_csv("nbguard://sales/2025.csv")'
GOVERNED = 'pd.read_csv("nbguard://claims/2025.csv")'


@pytest.fixture(scope="module")
def story_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    """The demo hub with the user zone on (server extension and kernel hooks)."""
    hub = start_hub(tmp_path_factory.mktemp("story"), USER_ZONE_CONFIG)
    try:
        yield hub
    finally:
        hub.stop()
        hub.kill_leftovers()


class Person:
    """A demo user in a browser context of their own, with their TOTP app."""

    def __init__(self, browser: Browser, hub: RunningHub, name: str) -> None:
        self.name = name
        self.hub = hub
        self.context: BrowserContext = browser.new_context(base_url=hub.url)
        self.context.set_default_timeout(30_000)
        self.page: Page = self.context.new_page()
        self.app: AuthenticatorApp | None = None

    def sign_in(self) -> None:
        """Password, then TOTP enrolment (first time) or a code."""
        sign_in(self.page, self.name, self.hub.state.password)
        if self.app is None:
            self.app, _codes = enrol(self.page)
            go_on(self.page)
        else:
            self.page.fill("#nbguard-code", self.app.code())
            self.page.click("#nbguard-submit")
            self.page.wait_for_url(lambda url: "/hub/nbguard/" not in url)

    def keep_screenshot(self, step: str) -> None:
        """A screenshot of this person's page, kept as a test artifact."""
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"demo-story-{step}.png"), full_page=True)


def start_server(person: Person) -> None:
    """Spawn from the hub and wait for JupyterLab's launcher."""
    page = person.page
    page.goto("/hub/spawn")
    if page.locator("#spawn_form").count():
        page.locator("#spawn_form [type=submit]").click()
    page.wait_for_url(f"**/user/{person.name}/lab*", timeout=LAB_TIMEOUT)
    expect(page.locator(".jp-Launcher")).to_be_visible(timeout=LAB_TIMEOUT)


def new_notebook(page: Page) -> None:
    """Open a Python notebook from the launcher."""
    page.locator('.jp-LauncherCard[data-category="Notebook"]').first.click()
    expect(page.locator(".jp-NotebookPanel .jp-Cell").first).to_be_visible(timeout=LAB_TIMEOUT)
    # The status bar says "Python 3 (ipykernel) | Idle" once the kernel is connected.
    expect(page.locator(".jp-StatusBar-Widget").get_by_text(re.compile(r"\| Idle"))).to_be_visible(
        timeout=LAB_TIMEOUT
    )


def run_cell(page: Page, code: str, index: int) -> Any:
    """Type ``code`` into the notebook's cell number ``index`` and run it; its output area."""
    cell = page.locator(".jp-NotebookPanel .jp-CodeCell").nth(index)
    cell.locator(".cm-content").click()
    page.keyboard.insert_text(code)  # no auto-closed brackets, unlike typing
    page.keyboard.press("Shift+Enter")
    # The prompt shows [n] once the kernel has answered ([*] while running).
    expect(cell.locator(".jp-InputPrompt")).to_have_text(
        re.compile(r"\[\d+\]"), timeout=CELL_TIMEOUT
    )
    return cell.locator(".jp-OutputArea")


def ledger_records(hub: RunningHub) -> list[dict[str, Any]]:
    """Every record of the demo ledger, as ``nbguard ledger export`` writes them."""
    exported = subprocess.run(
        [str(Path(sys.executable).with_name("nbguard")), "ledger", "export",
         hub.state.sqlite_url(hub.state.ledger_db)],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    lines = [json.loads(line) for line in exported.stdout.splitlines() if line.strip()]
    return [line for line in lines if line.get("type") == "record"]


def nbguard(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the ``nbguard`` command of this environment."""
    return subprocess.run(
        [str(Path(sys.executable).with_name("nbguard")), *map(str, args)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def wait_for(check: Any, what: str, timeout: float = 60.0) -> Any:
    """Poll ``check()`` until it returns something true; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(1)


def review_session(carol: Person, tmp_path: Path) -> tuple[str, list[str]]:
    """Carol replays alice's session on the review pages and exports it: (session, code cells)."""
    page = carol.page
    page.goto(f"{GUARD}review?user=alice")
    rows = page.locator("#nbguard-review-sessions tr[data-session]")
    expect(rows.first).to_be_visible()
    session = rows.first.get_attribute("data-session")
    assert session is not None
    assert re.fullmatch(r"[0-9a-f]{32}", session), session
    rows.first.locator("a").click()
    expect(page.locator("#nbguard-integrity")).to_have_attribute("data-integrity", "verified")
    current = page.locator("#nbguard-player-current")
    expect(current).to_contain_text("nbguard://sales/2025.csv")
    page.keyboard.press("n")  # the player's key for the next cell: the refused read
    expect(current).to_contain_text("nbguard://claims/2025.csv")
    expect(current.locator(".badge", has_text="privileged")).to_have_count(0)
    page.keyboard.press("v")  # the next privileged cell: the read under bob's grant
    expect(current).to_contain_text("nbguard://claims/2025.csv")
    expect(current.locator(".badge", has_text="privileged")).to_have_count(1)
    timeline = page.locator("#nbguard-timeline")
    expect(timeline).to_contain_text("dataset.read on dataset:claims: denied")
    expect(timeline).to_contain_text("bob")
    carol.keep_screenshot("4-review")

    with page.expect_download() as download:
        page.click("#nbguard-export button[value=ipynb]")
    saved = tmp_path / "from-page.ipynb"
    download.value.save_as(saved)
    document = nbformat.read(saved, as_version=4)
    nbformat.validate(document)
    assert document.metadata["nbguard"]["session"] == session
    assert document.metadata["nbguard"]["verified"] is True
    sources = [c.source for c in document.cells if c.cell_type == "code"]
    assert sum("nbguard://claims/2025.csv" in s for s in sources) == 2
    return session, sources


def test_the_demo_story(browser: Browser, story_hub: RunningHub, tmp_path: Path) -> None:
    """Alice reads, is denied, asks; bob approves; alice reads; carol replays and exports the
    session; the ledger holds it all, verifies and replays offline; a tampered copy fails."""
    alice = Person(browser, story_hub, "alice")
    bob = Person(browser, story_hub, "bob")

    # Alice: TOTP sign-in, a server, a notebook, an allowed read.
    alice.sign_in()
    start_server(alice)
    new_notebook(alice.page)
    output = run_cell(alice.page, ALLOWED, 0)
    expect(output).to_contain_text("north", timeout=CELL_TIMEOUT)
    expect(output).to_contain_text("120000")

    # Another team's dataset: denied, with the reason and where to ask.
    output = run_cell(alice.page, GOVERNED, 1)
    expect(output).to_contain_text("GuardPermissionError", timeout=CELL_TIMEOUT)
    expect(output).to_contain_text("nbguard denied")
    expect(output).to_contain_text(f"{GUARD}requests")
    assert "k1" not in output.inner_text()
    alice.keep_screenshot("1-denied")

    # She follows the denial's link to the guard's ask form, filled in with what was refused.
    link = re.search(rf"{GUARD}requests\?\S+(?=;)", output.inner_text())
    assert link is not None, output.inner_text()
    asking = alice.context.new_page()
    asking.goto(link.group(0))
    expect(asking.locator("#ask-action")).to_have_value("dataset.read")
    expect(asking.locator("#ask-resource")).to_have_value("dataset:claims")
    asking.fill("#ask-reason", "claims audit for the churn model")
    asking.select_option("#ask-minutes", "60")
    asking.click("#nbguard-ask")
    expect(asking.locator("#nbguard-mine")).to_contain_text("pending")

    # Bob, an ML engineer, approves it on the same page.
    bob.sign_in()
    bob.page.goto(f"{GUARD}requests")
    waiting = bob.page.locator("#nbguard-approvable tr[data-request]")
    expect(waiting).to_have_count(1)
    expect(waiting).to_contain_text("claims audit for the churn model")
    waiting.locator("input[name=comment]").fill("ok for the audit")
    waiting.locator("button[value=approve]").click()
    expect(bob.page.locator("#nbguard-approvable-empty")).to_be_visible()
    bob.keep_screenshot("2-approved")

    # Alice runs the same cell again: now it reads.
    output = run_cell(alice.page, GOVERNED, 2)
    expect(output).to_contain_text("k1", timeout=CELL_TIMEOUT)
    expect(output).to_contain_text("1200.5")
    alice.keep_screenshot("3-granted")

    # The ledger: her three cells from both witnesses, the three reads, the elevation.
    def witnessed() -> list[dict[str, Any]]:
        cells = [
            r for r in ledger_records(story_hub)
            if r["record"]["kind"] == "cell_execution" and r["record"]["actor"] == "alice"
        ]  # fmt: skip
        kinds = {c["record"]["body"].get("witness") for c in cells}
        return cells if len(cells) >= 6 and kinds >= {"kernel", "server"} else []

    cells = wait_for(witnessed, "both witnesses' records of alice's cells")
    records = ledger_records(story_hub)
    reads = [
        r["record"]["body"] for r in records
        if r["record"]["kind"] == "access" and r["record"]["actor"] == "alice"
        and r["record"]["body"].get("action") == "dataset.read"
    ]  # fmt: skip
    # Entity uids: Dataset::"sales" (quotes and all).
    outcomes = [(b["resource"].rpartition(":")[2].strip('"'), b["allowed"]) for b in reads]
    assert outcomes[-3:] == [("sales", True), ("claims", False), ("claims", True)], outcomes
    assert all(b.get("cell") for b in reads[-3:])
    events = [
        (r["record"]["actor"], r["record"]["body"]["event"]) for r in records
        if r["record"]["kind"] == "elevation"
    ]  # fmt: skip
    assert ("alice", "request") in events
    assert ("bob", "approve") in events
    assert cells
    alerts = [r for r in records if r["record"]["kind"] == "alert"]
    assert alerts == [], alerts  # both witnesses agreed

    # Carol, a reviewer, replays the session; alice may not.
    carol = Person(browser, story_hub, "carol")
    carol.sign_in()
    session, sources = review_session(carol, tmp_path)
    refused = alice.context.new_page()
    refused.goto(f"{GUARD}review")
    expect(refused.locator("#nbguard-error")).to_be_visible()
    expect(refused.locator("#nbguard-review-sessions")).to_have_count(0)
    reviews = [
        r["record"]["body"] for r in ledger_records(story_hub)
        if r["record"]["kind"] == "review" and r["record"]["actor"] == "carol"
    ]  # fmt: skip
    assert [(b["action"], b.get("format")) for b in reviews][-1] == ("export", "ipynb")

    # Stopped hub: the ledger verifies and replays offline; a copy with one altered
    # record does not verify.
    assert story_hub.stop() == 0
    state = story_hub.state
    good = nbguard("verify", state.ledger_db, "--key", state.ledger_public_key_file,
                   "--witness", state.ledger_witness_file)  # fmt: skip
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.startswith("OK:")
    out = tmp_path / "replayed.ipynb"
    done = nbguard("replay", session, "--source", state.ledger_db, "-o", out,
                   "--key", state.ledger_public_key_file)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    replayed = nbformat.read(out, as_version=4)
    nbformat.validate(replayed)
    assert replayed.metadata["nbguard"]["verified"] is True
    assert [c.source for c in replayed.cells if c.cell_type == "code"] == sources

    tampered = state.root.parent / "tampered.sqlite"
    with sqlite3.connect(state.ledger_db) as source, sqlite3.connect(tampered) as copy:
        source.backup(copy)
    seq = next(r["seq"] for r in records if r["record"]["kind"] == "access"
               and "claims" in r["record"]["body"]["resource"]
               and r["record"]["body"].get("allowed"))  # fmt: skip
    with sqlite3.connect(tampered) as db:
        changed = db.execute(
            "update nbguard_ledger_records set core = replace(core, 'claims', 'weather') "
            "where seq = ?", (seq,),
        ).rowcount  # fmt: skip
    assert changed == 1
    bad = nbguard("verify", tampered, "--key", state.ledger_public_key_file)
    assert bad.returncode != 0
    assert f"record {seq}" in bad.stdout + bad.stderr
