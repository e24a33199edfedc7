"""The review end of the demo story in a real browser: carol replays alice's session.

Alice signs in with TOTP, spawns, reads an allowed dataset and is denied another
from a notebook. Carol (reviewer) signs in, finds alice's session on the guard's
review page, steps through its cells with the keyboard, sees the denial and the
ledger's verdict, and exports the session as a notebook; alice may not open the
review pages. With the hub stopped, ``nbguard replay`` writes the same session
from the ledger file and it verifies.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from playwright.sync_api import Browser, expect

from .conftest import RunningHub
from .test_demo_story import (
    ALLOWED,
    CELL_TIMEOUT,
    GOVERNED,
    GUARD,
    Person,
    ledger_records,
    new_notebook,
    run_cell,
    start_server,
    story_hub,
    wait_for,
)

pytestmark = pytest.mark.slow
__all__ = ["story_hub"]  # the demo hub with the user zone on, one for this module


def replay(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run ``nbguard replay``."""
    return subprocess.run(
        [str(Path(sys.executable).with_name("nbguard")), "replay", *map(str, args)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_carol_replays_and_exports_alices_session(
    browser: Browser, story_hub: RunningHub, tmp_path: Path
) -> None:
    """Carol finds alice's session, steps through it, sees the denial and that the ledger
    verifies, and exports it; alice is refused; ``nbguard replay`` agrees offline."""
    alice = Person(browser, story_hub, "alice")
    alice.sign_in()
    start_server(alice)
    new_notebook(alice.page)
    expect(run_cell(alice.page, ALLOWED, 0)).to_contain_text("north", timeout=CELL_TIMEOUT)
    expect(run_cell(alice.page, GOVERNED, 1)).to_contain_text(
        "GuardPermissionError", timeout=CELL_TIMEOUT
    )

    def cells_recorded() -> Any:
        return [
            r for r in ledger_records(story_hub)
            if r["record"]["kind"] == "cell_execution" and r["record"]["actor"] == "alice"
            and r["record"]["body"].get("witness") == "kernel"
        ]  # fmt: skip

    wait_for(lambda: len(cells_recorded()) >= 2, "the kernel's records of alice's cells")

    carol = Person(browser, story_hub, "carol")
    carol.sign_in()
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
    page.keyboard.press("n")  # the player's key for the next cell
    expect(current).to_contain_text("nbguard://claims/2025.csv")
    expect(page.locator("#nbguard-timeline")).to_contain_text(
        "dataset.read on dataset:claims: denied"
    )
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
    assert any("nbguard://claims/2025.csv" in s for s in sources)

    refused = alice.context.new_page()
    refused.goto(f"{GUARD}review")
    expect(refused.locator("#nbguard-error")).to_be_visible()
    expect(refused.locator("#nbguard-review-sessions")).to_have_count(0)

    records = ledger_records(story_hub)
    reviews = [
        r["record"]["body"] for r in records
        if r["record"]["kind"] == "review" and r["record"]["actor"] == "carol"
    ]  # fmt: skip
    assert [(b["action"], b.get("format")) for b in reviews][-1] == ("export", "ipynb")

    assert story_hub.stop() == 0
    state = story_hub.state
    out = tmp_path / "replayed.ipynb"
    done = replay(session, "--source", state.ledger_db, "-o", out,
                  "--key", state.ledger_public_key_file)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    replayed = nbformat.read(out, as_version=4)
    nbformat.validate(replayed)
    assert replayed.metadata["nbguard"]["verified"] is True
    assert [c.source for c in replayed.cells if c.cell_type == "code"] == sources
