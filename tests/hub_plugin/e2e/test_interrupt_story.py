"""A lock that interrupts kernels, end to end, in a real browser against a real demo hub.

Alice signs in with TOTP, spawns and starts a cell that runs for a minute; dave
(an admin) locks her on the guard's locks page with "Interrupt the cells running
now" ticked; her cell ends with ``KeyboardInterrupt`` long before it would have
finished, the server and the guard log the one kernel interrupted, and the lock
is in the ledger. Alice, still locked, may not lift it herself; her next cell is
not run, and the cell and nbguard's panel say why. Dave lifts the lock and her
next cell runs.

Everything is real and nothing is mocked: ``nbguard demo`` with the packaged
config and the user zone on (``user_zone_hub_config.py``), so JupyterHub, its
proxy, the guard service and the users' locally spawned servers with nbguard's
server extension and kernel hooks; the order goes from the guard to alice's
server at the address the spawner keeps, signed with the guard's own key.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from .conftest import RunningHub, start_hub
from .test_demo_story import (
    CELL_TIMEOUT,
    GUARD,
    USER_ZONE_CONFIG,
    Person,
    ledger_records,
    new_notebook,
    run_cell,
    start_server,
    wait_for,
)

pytestmark = pytest.mark.slow

#: A cell that runs for a minute unless interrupted.
SLOW_CELL = "import time\nfor i in range(600): time.sleep(0.1)"
#: Milliseconds the interrupted cell gets to show ``KeyboardInterrupt`` (well under a minute).
INTERRUPT_TIMEOUT = 30_000
#: What nbguard's JupyterLab panel says to a locked user.
LOCKED_NOTE = "Your access is locked by an administrator: nothing governed is allowed."
REASON = "suspicious downloads, investigating"


def start_cell(page: Page, code: str, index: int) -> Locator:
    """Type ``code`` into cell number ``index`` and run it without waiting; the cell."""
    cell = page.locator(".jp-NotebookPanel .jp-CodeCell").nth(index)
    cell.locator(".cm-content").click()
    page.keyboard.insert_text(code)
    page.keyboard.press("Shift+Enter")
    return cell


def open_nbguard_panel(page: Page) -> Locator:
    """Open nbguard's panel in JupyterLab's right sidebar; the panel."""
    page.locator(".jp-SideBar.jp-mod-right .lm-TabBar-tab[data-id='jp-nbguard-panel']").click()
    panel = page.locator("#jp-nbguard-panel")
    expect(panel).to_be_visible()
    return panel


def lock_records(hub: RunningHub) -> list[tuple[str, str, str]]:
    """``(actor, event, locked user)`` of every lock record in the demo ledger."""
    return [
        (r["record"]["actor"], r["record"]["body"]["event"], r["record"]["body"]["value"])
        for r in ledger_records(hub)
        if r["record"]["kind"] == "lock"
    ]


@pytest.fixture(scope="module")
def lock_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    """A demo hub with the user zone on, of this module alone: its lock leaks nowhere."""
    hub = start_hub(tmp_path_factory.mktemp("interrupt"), USER_ZONE_CONFIG)
    yield hub  # pytest runs the rest even when the test fails
    hub.stop()
    hub.kill_leftovers()


def test_a_lock_interrupts_the_running_cell_and_refuses_the_next(
    browser: Browser, lock_hub: RunningHub
) -> None:
    """Dave's lock with "interrupt" ends alice's running cell with KeyboardInterrupt and
    refuses her next one; she cannot lift it; once dave lifts it, her cells run again."""
    alice = Person(browser, lock_hub, "alice")

    alice.sign_in()
    start_server(alice)
    new_notebook(alice.page)
    slow = start_cell(alice.page, SLOW_CELL, 0)
    expect(slow.locator(".jp-InputPrompt")).to_have_text("[*]:")
    status = alice.page.locator(".jp-StatusBar-Widget")
    expect(status.get_by_text(re.compile(r"\| Busy"))).to_be_visible()

    # Dave locks alice on the guard's locks page, asking for her cells to be interrupted.
    dave = Person(browser, lock_hub, "dave")
    dave.sign_in()
    dave.page.goto(f"{GUARD}locks")
    form = dave.page.locator("#nbguard-lock-form")
    form.locator("#lock-value").fill("alice")
    form.locator("#lock-reason").fill(REASON)
    form.locator("#lock-interrupt").check()
    locked_at = time.monotonic()
    form.get_by_role("button", name="Lock").click()
    expect(dave.page.locator("#nbguard-notice")).to_have_text(
        "The lock is in force. Interrupted 1 running kernel on 1 server."
    )
    lock = dave.page.locator("#nbguard-locks tr[data-lock]", has_text="alice")
    expect(lock).to_contain_text(REASON)
    expect(lock).to_contain_text("dave")
    dave.keep_screenshot("interrupt-1-locked")

    # Her cell ends with KeyboardInterrupt, long before its minute is up.
    expect(slow.locator(".jp-OutputArea")).to_contain_text(
        "KeyboardInterrupt", timeout=INTERRUPT_TIMEOUT
    )
    expect(slow.locator(".jp-InputPrompt")).to_have_text(re.compile(r"\[\d+\]"))
    assert time.monotonic() - locked_at < 45
    alice.keep_screenshot("interrupt-2-interrupted")
    # The page says no more than that the lock holds; the server and the guard log the count.
    lock_id = lock.get_attribute("data-lock")
    assert lock_id
    for said in (
        f"nbguard | the guard ordered interrupt (lock {lock_id}): 1 kernel(s) interrupted",
        f"nbguard guard: alice interrupted 1 kernel(s) (lock {lock_id})",
    ):
        wait_for(lambda said=said: said in lock_hub.log.read_text(errors="replace"), said)
    assert ("dave", "lock", "alice") in lock_records(lock_hub)

    # Alice cannot lift the lock herself: not from the locks page, nor by posting its lift
    # form with her own session and XSRF token, nor through the API.
    alice_page = alice.context.new_page()
    alice_page.goto(f"{GUARD}locks")
    expect(alice_page.locator("#nbguard-error")).to_contain_text("locked by an administrator")
    xsrf = alice_page.evaluate("window.jhdata.xsrf_token")
    assert xsrf
    lift = alice.context.request.post(
        f"{GUARD}actions/locks/{lock_id}/lift", form={"_xsrf": xsrf}, max_redirects=0
    )
    # Refused by the guard itself (her XSRF token passed): she is the one locked.
    assert lift.status == 403, lift.status
    assert "locked by an administrator" in lift.text()
    assert "403 · access_denied" in lift.text()
    lifted = alice.context.request.delete(f"{GUARD}api/v1/locks/{lock_id}")
    assert lifted.status in (401, 403), lifted.status

    # Still locked, her next cell is dropped unrun by her server, which tells the cell why
    # and closes the kernel websocket; nbguard's panel in JupyterLab says she is locked.
    refused = start_cell(alice.page, "print('ran while locked')", 1)
    wait_for(
        lambda: "an execution request was refused" in lock_hub.log.read_text(errors="replace"),
        "alice's server to refuse the cell",
    )
    panel = open_nbguard_panel(alice.page)
    panel.locator(".jp-nbguard-refresh").click()
    expect(panel.get_by_role("alert").first).to_have_text(LOCKED_NOTE)
    expect(refused.locator(".jp-OutputArea")).to_contain_text(
        "nbguard: this cell was not run: execution is no longer allowed"
    )
    expect(refused.locator(".jp-OutputArea")).not_to_contain_text("ran while locked")
    expect(refused.locator(".jp-InputPrompt")).not_to_have_text("[*]:")
    alice.keep_screenshot("interrupt-3-refused")

    # Dave lifts the lock; the panel stops saying she is locked. The demo's proxy does not
    # pass a server's close of a websocket on to the browser, so JupyterLab still holds the
    # closed one: she reconnects to the kernel from the Kernel menu, and her next cell runs.
    dave.page.goto(f"{GUARD}locks")
    dave.page.locator(f"#nbguard-locks tr[data-lock='{lock_id}'] button", has_text="Lift").click()
    expect(dave.page.locator("#nbguard-notice")).to_have_text("The lock is lifted.")
    expect(dave.page.locator("#nbguard-locks-empty")).to_be_visible()
    assert ("dave", "unlock", "alice") in lock_records(lock_hub)
    panel.locator(".jp-nbguard-refresh").click()
    expect(panel.get_by_role("alert")).to_have_count(0)
    alice.page.locator(".lm-MenuBar-itemLabel", has_text="Kernel").click()
    alice.page.get_by_role("menuitem", name="Reconnect to Kernel").click()
    expect(status.get_by_text(re.compile(r"\| Idle"))).to_be_visible()
    output = run_cell(alice.page, "print(6 * 7)", 2)
    expect(output).to_contain_text("42", timeout=CELL_TIMEOUT)
    expect(refused.locator(".jp-OutputArea")).not_to_contain_text("ran while locked")
