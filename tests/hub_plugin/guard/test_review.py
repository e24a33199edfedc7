"""Review of recorded sessions in the real guard service: who may see them, what the
pages and API show, the exports, the records they leave, and untrusted output.

The sessions are made for real: users log in through the hub with TOTP (login and
mfa records), spawn (spawn), read datasets through the guard (access), and ship
kernel-witness cell records to the guard's executions route (cell_execution).
"""

from __future__ import annotations

import asyncio
import json
import re

import nbformat
import pytest

from nbguard.hub_plugin.auth_state import read_state

from .conftest import Client, Guard, age_mfa, server_client, user_client
from .test_elevation_api import ask, decide, verdict
from .test_pages import open_page as page
from .test_pages import page_for
from .witnesses import Kernel, ledger_bodies, send

pytestmark = pytest.mark.asyncio(loop_scope="module")

XSS = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'


async def session_of(guard: Guard, name: str) -> str:
    """The nbguard login session of ``name`` (from the hub's auth state)."""
    state = read_state(await guard.hub.users[name].get_auth_state())
    assert state is not None
    return str(state.session_id)


async def recorded_session(guard: Guard) -> tuple[Client, str]:
    """A data scientist's session: spawn, an allowed and a denied read, two cells (one
    printing a script payload)."""
    alice = await server_client(guard, "data-scientist")
    for dataset, allowed in (("sales", True), ("customers", False)):
        answer = await alice.call(
            "POST",
            "api/v1/decisions",
            json={"action": "dataset.read", "resource": f"dataset:{dataset}"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["allowed"] is allowed
    kernel = Kernel()
    answer = await send(
        alice,
        "kernel",
        kernel.kernel_record(0),
        kernel.kernel_record(1, output_text=XSS, status="error", error_name="ValueError"),
    )
    assert answer.status_code == 200, answer.text
    return alice, await session_of(guard, alice.name)


async def test_index_catches_up_when_the_service_starts(guard: Guard) -> None:
    """The service indexes the ledger in the background as it starts, before any
    review page is asked for."""
    settings = guard.service.web_app.settings
    store = guard.service.ledger.store
    for _ in range(300):
        reviewer = settings.get("nbguard_reviewer")  # made by the warm-up: no page yet
        with store.snapshot() as snapshot:
            head = snapshot.last_seq()
        if reviewer is not None and reviewer.index.indexed_seq() == head:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the review index was not brought up to date at start")


async def test_reviewer_lists_finds_and_views_a_session(guard: Guard) -> None:
    """carol (reviewer) finds alice's session by user, opens it, and sees logins,
    the spawn, cells, both decisions and the ledger's verdict; the view is recorded."""
    alice, session = await recorded_session(guard)
    browser, carol = await page_for(guard, "reviewer")
    listed = await page(guard, browser, f"review?user={alice.name}")
    assert listed.status == 200, listed.text
    assert 'aria-current="page"' in listed.text  # the Review tab, current
    assert f'data-session="{session}"' in listed.text
    # The filter form as a browser submits it: empty fields, a checkbox as "on".
    query = f"user={alice.name}&since=&until=&dataset=&model=&privileged=on"
    formed = await page(guard, browser, f"review?{query}")
    assert formed.status == 200, formed.text
    assert 'id="nbguard-review-total"' in formed.text
    shown = await page(guard, browser, f"review/sessions/{session}")
    assert shown.status == 200, shown.text
    for words in (
        "login (mockpam): success",
        "second factor enrol: success",
        "spawn default (train): allowed",
        "cell [1] ok",
        "dataset.read on dataset:sales: allowed",
        "dataset.read on dataset:customers: denied",
    ):
        assert words in shown.text, re.findall(r"<strong>(.*?)</strong>", shown.text)
    assert 'data-integrity="verified"' in shown.text
    assert 'data-integrity="broken"' not in shown.text
    reviews = ledger_bodies(guard, "review", carol.name)
    assert reviews[-1]["action"] == "view"
    assert reviews[-1]["target_session"] == session
    assert reviews[-1]["target_user"] == alice.name


async def test_recorded_output_is_escaped_under_a_strict_policy(guard: Guard) -> None:
    """A script payload printed by a cell is shown as text, and the page forbids inline
    script and foreign sources."""
    _alice, session = await recorded_session(guard)
    browser, _carol = await page_for(guard, "reviewer")
    shown = await page(guard, browser, f"review/sessions/{session}")
    assert XSS not in shown.text
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in shown.text
    assert "<img src=x" not in shown.text
    policy = shown.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    assert "frame-ancestors 'none'" in policy
    assert "default-src 'none'" in policy


async def test_player_steps_through_cells(guard: Guard) -> None:
    """The player starts at the first cell and its links step to the next cell and back."""
    _alice, session = await recorded_session(guard)
    browser, _carol = await page_for(guard, "reviewer")
    first = await page(guard, browser, f"review/sessions/{session}")
    assert 'id="nbguard-player-current"' in first.text
    assert '<span id="nbguard-player-previous"' in first.text  # nothing before the first cell
    data = await _carol.call("GET", f"api/v1/review/sessions/{session}")
    events = data.json()["events"]
    cells = [i for i, e in enumerate(events) if e["type"] == "cell"]
    assert f'href="{guard.url(f"review/sessions/{session}")}?at={cells[1]}#player"'.replace(
        guard.base, "/services/nbguard-guard/"
    ).split("/services/")[1] in first.text.replace("&amp;", "&")
    second = await page(guard, browser, f"review/sessions/{session}?at={cells[1]}")
    assert f'data-seq="{events[cells[1]]["seq"]}" data-type="cell"' in second.text
    assert '<a id="nbguard-player-previous"' in second.text
    script = await page(guard, browser, "review/player.js")
    assert script.status == 200
    assert script.headers["Content-Type"].startswith("text/javascript")


@pytest.mark.parametrize("fmt", ["ipynb", "jsonl"])
async def test_export_buttons_download_and_are_recorded(guard: Guard, fmt: str) -> None:
    """The export form answers with the file (a valid notebook, or JSON Lines) and an
    ``export`` review record."""
    _alice, session = await recorded_session(guard)
    browser, carol = await page_for(guard, "reviewer")
    shown = await page(guard, browser, f"review/sessions/{session}")
    answer = await browser.post(
        guard.url(f"review/sessions/{session}/export"), {"format": fmt}, xsrf=shown.xsrf
    )
    assert answer.status == 200, answer.text
    assert f'filename="session-{session}.{fmt}"' in answer.headers["Content-Disposition"]
    if fmt == "ipynb":
        document = nbformat.reads(answer.text, as_version=4)
        nbformat.validate(document)
        assert document.metadata["nbguard"]["session"] == session
        assert "text/html" not in answer.text
    else:
        header = json.loads(answer.text.splitlines()[0])
        assert header["type"] == "nbguard.session.export"
    last = ledger_bodies(guard, "review", carol.name)[-1]
    assert (last["action"], last["format"]) == ("export", fmt)


async def test_api_lists_with_filters_and_pages(guard: Guard) -> None:
    """The API filters by user and pages with next_before; a bad filter is a 400 body."""
    alice, session = await recorded_session(guard)
    _browser, carol = await page_for(guard, "reviewer")
    mine = await carol.call("GET", "api/v1/review/sessions", params={"user": alice.name})
    assert mine.status_code == 200, mine.text
    assert [s["session"] for s in mine.json()["sessions"]] == [session]
    assert mine.json()["sessions"][0]["cells"] == 2
    first = (await carol.call("GET", "api/v1/review/sessions", params={"limit": 1})).json()
    assert first["total"] >= 2
    second = await carol.call(
        "GET", "api/v1/review/sessions", params={"limit": 1, "before": first["next_before"]}
    )
    assert second.json()["sessions"][0]["session"] != first["sessions"][0]["session"]
    for params in ({"since": "soon"}, {"limit": "0"}, {"privileged": "maybe"}):
        bad = await carol.call("GET", "api/v1/review/sessions", params=params)
        assert bad.status_code == 400
        assert bad.json()["error"]["code"] == "bad_request"


CANNOT: list[tuple[str, str]] = [
    ("GET", "api/v1/review/sessions"),
    ("GET", "api/v1/review/sessions/{session}"),
    ("GET", "api/v1/review/sessions/{session}/export"),
]


@pytest.mark.parametrize(("method", "path"), CANNOT, ids=["list", "view", "export"])
async def test_data_scientist_may_not_review(guard: Guard, method: str, path: str) -> None:
    """alice may not list sessions, nor view or export another user's session: 403
    with the policy's reasons, and no review record."""
    _bob, session = await recorded_session(guard)
    _browser, alice = await page_for(guard, "data-scientist")
    answer = await alice.call(method, path.format(session=session))
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "access_denied"
    assert ledger_bodies(guard, "review", alice.name) == []


async def test_data_scientist_page_is_refused(guard: Guard) -> None:
    """The list page refuses a data scientist with an error page, not the list."""
    browser, _alice = await page_for(guard, "data-scientist")
    refused = await page(guard, browser, "review")
    assert refused.status == 403
    assert 'id="nbguard-error"' in refused.text
    assert "nbguard-review-sessions" not in refused.text


async def test_reviewer_needs_a_fresh_second_factor(guard: Guard) -> None:
    """With an old second factor the reviewer is refused until they step up."""
    _alice, session = await recorded_session(guard)
    _browser, carol = await page_for(guard, "reviewer")
    await age_mfa(guard, carol.name, 4 * 3600)
    answer = await carol.call("GET", f"api/v1/review/sessions/{session}")
    assert answer.status_code == 403


async def test_nobody_reviews_their_own_session(guard: Guard) -> None:
    """A reviewer's own session is refused to them (someone else reviews it)."""
    browser, carol = await page_for(guard, "reviewer")
    own = await session_of(guard, carol.name)
    answer = await carol.call("GET", f"api/v1/review/sessions/{own}")
    assert answer.status_code == 403
    del browser


@pytest.mark.parametrize(
    "session",
    ["f" * 32, "%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E", "x" * 300, "a%00b", "..%2F..%2Fetc"],
    ids=["unknown", "markup", "too-long", "nul", "traversal"],
)
async def test_bad_session_is_a_404_page(guard: Guard, session: str) -> None:
    """An unknown or malformed session id is a 404 (never a 500) that does not echo the
    id as markup: the error page, or for an id with a slash, no route at all."""
    browser, carol = await page_for(guard, "reviewer")
    shown = await page(guard, browser, f"review/sessions/{session}")
    assert shown.status == 404, shown.text
    assert "<img src=x" not in shown.text
    if "%2F" not in session:
        assert 'id="nbguard-error"' in shown.text
    api = await carol.call("GET", f"api/v1/review/sessions/{session}")
    assert api.status_code == 404
    if "%2F" not in session:
        assert api.json()["error"]["code"] == "not_found"


async def test_grant_privileged_cell_and_witness_alert_in_one_timeline(guard: Guard) -> None:
    """A grant approved by someone else and a witness alert (both written outside alice's
    session) join her session: the privileged and alerts filters find it, and the
    player jumps to the privileged cell and to the alert."""
    alice = await server_client(guard, teams=("risk",))
    session = await session_of(guard, alice.name)
    assert (await decide(alice))["allowed"] is False
    request = await ask(alice)
    approver = await user_client(guard, "reviewer", teams=("risk",))
    assert (await verdict(approver, request["id"]))["status"] == "approved"
    kernel = Kernel()
    answer = await send(alice, "kernel", kernel.kernel_record(0), kernel.kernel_record(1))
    assert answer.status_code == 200, answer.text
    await send(alice, "server", kernel.server_record(0))  # cell 1: the kernel's word only
    alerts = await guard.service.witness_checker.check(grace_seconds=0)
    assert any(a.user == alice.name and a.kernel_id == kernel.kernel_id for a in alerts)

    browser, carol = await page_for(guard, "reviewer")
    for flag in ("privileged", "alerts"):
        found = await carol.call(
            "GET", "api/v1/review/sessions", params={"user": alice.name, flag: "1"}
        )
        assert [s["session"] for s in found.json()["sessions"]] == [session], flag
    shown = await page(guard, browser, f"review/sessions/{session}")
    assert shown.status == 200, shown.text
    assert "elevation approve: dataset.read on dataset:features" in shown.text
    assert "grant expires: dataset.read on dataset:features" in shown.text
    assert re.search(r"alert \((warning|critical)\): witness-mismatch", shown.text)
    assert '<a id="nbguard-player-privileged"' in shown.text
    assert '<a id="nbguard-player-alert"' in shown.text
    events = (await carol.call("GET", f"api/v1/review/sessions/{session}")).json()["events"]
    cells = [e for e in events if e["type"] == "cell"]
    assert [c["privileged"] for c in cells] == [True, True]
    assert cells[0]["data"]["server_seen"] is True


async def test_long_session_page_lists_a_window(guard: Guard) -> None:
    """A session of hundreds of cells lists 200 timeline events around the player's
    position, with links to earlier and later ones; the API returns them all."""
    alice = await server_client(guard)
    session = await session_of(guard, alice.name)
    kernel = Kernel()
    answer = await send(alice, "kernel", *(kernel.kernel_record(n) for n in range(260)))
    assert answer.status_code == 200, answer.text
    browser, carol = await page_for(guard, "reviewer")
    events = (await carol.call("GET", f"api/v1/review/sessions/{session}")).json()["events"]
    assert len(events) > 260
    start = await page(guard, browser, f"review/sessions/{session}")
    assert start.text.count('<li id="event-') == 200
    assert 'id="nbguard-timeline-later"' in start.text
    assert 'id="nbguard-timeline-earlier"' not in start.text
    end = await page(guard, browser, f"review/sessions/{session}?at={len(events) - 1}")
    assert f'<li id="event-{len(events) - 1}"' in end.text
    assert '<li id="event-0"' not in end.text
    assert 'id="nbguard-timeline-earlier"' in end.text
    assert 'id="nbguard-timeline-later"' not in end.text
    beyond = await page(guard, browser, f"review/sessions/{session}?at={len(events)}")
    assert beyond.status == 400


async def test_review_unavailable_is_a_503(guard: Guard) -> None:
    """A reviewer that cannot start (here: a public key file that does not exist)
    answers 503 with the reason in words, never a 500; it starts on the next view
    once the setting is right."""
    _alice, session = await recorded_session(guard)
    _browser, carol = await page_for(guard, "reviewer")
    settings = guard.service.web_app.settings
    saved_reviewer = settings.pop("nbguard_reviewer", None)
    saved_keys = guard.service.config.SessionReviewer.get("public_key_files")
    guard.service.config.SessionReviewer.public_key_files = [str(guard.tmp / "missing.pub")]
    try:
        down = await carol.call("GET", f"api/v1/review/sessions/{session}")
        assert down.status_code == 503
        assert "cannot be read right now" in down.json()["error"]["message"]
    finally:
        if saved_keys is None:
            del guard.service.config.SessionReviewer["public_key_files"]
        else:
            guard.service.config.SessionReviewer.public_key_files = saved_keys
        settings.pop("nbguard_reviewer", None)
        if saved_reviewer is not None:
            settings["nbguard_reviewer"] = saved_reviewer
    again = await carol.call("GET", f"api/v1/review/sessions/{session}")
    assert again.status_code == 200, again.text
