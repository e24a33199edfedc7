"""The login flow on a real hub: primary login, enrolment, TOTP, recovery codes, step-up."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from nbguard.hub_plugin.auth_state import read_state

from .conftest import Browser, later_code, new_user, records

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_primary_login_alone_gives_no_session(hub: Any) -> None:
    """After the password, the browser has no login cookie and no hub page opens."""
    name = new_user(hub)
    browser = Browser(hub)
    page = await browser.login(name)
    assert page.url.endswith("/nbguard/mfa/enrol")
    assert not browser.has_login_cookie()
    home = await browser.get("home", allow_redirects=False)
    assert home.status == 302
    assert "/login" in home.headers["Location"]
    api = await browser.get("api/user")
    assert api.status == 403


async def test_enrolment_activates_totp_and_shows_recovery_codes(hub: Any) -> None:
    """Confirming a code enrols TOTP, shows ten recovery codes once and sets the session."""
    name = new_user(hub)
    browser = Browser(hub)
    secret, codes, page = await browser.enrol(name)
    assert page.status == 200
    assert len(codes) == 10
    assert len(set(codes)) == 10
    assert browser.has_login_cookie()
    home = await browser.get("home")
    assert home.status == 200
    assert name in home.text
    user = hub.users[name]
    state = read_state(await user.get_auth_state())
    assert state is not None
    assert state.mfa_method == "totp"
    assert state.mfa_age() < 60
    assert hub.authenticator.nbguard.store.is_enrolled(name)
    stored = hub.authenticator.nbguard.store.totp(name)
    assert stored is not None
    assert stored.secret == secret
    events = [(r["event"], r["outcome"]) for r in records(hub, "mfa", name)]
    assert ("enrol", "success") in events
    logins = records(hub, "login", name)
    assert logins
    assert logins[-1]["outcome"] == "success"


async def test_enrolled_user_is_asked_for_a_code(hub: Any) -> None:
    """A second login goes to the code page; a wrong code is refused, the right one logs in."""
    name = new_user(hub)
    secret, _, _ = await Browser(hub).enrol(name)
    browser = Browser(hub)
    page = await browser.login(name)
    assert page.url.endswith("/nbguard/mfa")
    wrong = await browser.post(page.url, {"code": "000000"}, xsrf=page.xsrf)
    assert wrong.status == 403
    assert 'id="nbguard-error"' in wrong.text
    assert not browser.has_login_cookie()
    done = await browser.post(page.url, {"code": later_code(secret)}, xsrf=page.xsrf)
    assert done.status == 200
    assert browser.has_login_cookie()


async def test_a_code_works_once(hub: Any) -> None:
    """The code that completed one login is refused for the next one."""
    name = new_user(hub)
    secret, _, _ = await Browser(hub).enrol(name)
    code = later_code(secret)
    first = Browser(hub)
    page = await first.login(name)
    assert (await first.post(page.url, {"code": code}, xsrf=page.xsrf)).status == 200
    second = Browser(hub)
    page = await second.login(name)
    again = await second.post(page.url, {"code": code}, xsrf=page.xsrf)
    assert again.status == 403
    assert "already used" in again.text
    assert not second.has_login_cookie()


async def test_one_code_posted_twice_at_once_completes_one_login(hub: Any) -> None:
    """Two pending logins posting the same valid code together: one session, one replay refused."""
    name = new_user(hub)
    secret, _, _ = await Browser(hub).enrol(name)
    hub.authenticator.nbguard.store.clear_failures("client:127.0.0.1")  # other tests' failures
    code = later_code(secret)
    browsers = [Browser(hub), Browser(hub)]
    pages = [await browser.login(name) for browser in browsers]
    done = await asyncio.gather(
        *(
            browser.post(page.url, {"code": code}, xsrf=page.xsrf)
            for browser, page in zip(browsers, pages, strict=True)
        )
    )
    assert sorted(page.status for page in done) == [200, 403]
    assert [browser.has_login_cookie() for browser in browsers].count(True) == 1
    assert "already used" in next(page.text for page in done if page.status == 403)
    outcomes = [
        (r["outcome"], r.get("reason"), r.get("failures"))
        for r in records(hub, "mfa", name)
        if r["event"] == "verify"
    ]
    assert sorted(outcomes, key=str) == [("failure", "replayed", 1), ("success", None, None)]
    hub.authenticator.nbguard.store.clear_failures(f"user:{name}")
    hub.authenticator.nbguard.store.clear_failures("client:127.0.0.1")


async def test_recovery_code_works_once(hub: Any) -> None:
    """A recovery code replaces the TOTP code for one login, then never again."""
    name = new_user(hub)
    _, codes, _ = await Browser(hub).enrol(name)
    first = Browser(hub)
    page = await first.login(name)
    done = await first.post(page.url, {"code": codes[3].upper()}, xsrf=page.xsrf)
    assert done.status == 200
    assert first.has_login_cookie()
    state = read_state(await hub.users[name].get_auth_state())
    assert state is not None
    assert state.mfa_method == "recovery-code"
    second = Browser(hub)
    page = await second.login(name)
    again = await second.post(page.url, {"code": codes[3]}, xsrf=page.xsrf)
    assert again.status == 403
    assert not second.has_login_cookie()


async def test_wrong_codes_lock_the_user_out(hub: Any) -> None:
    """Past the free attempts even the right code is refused until the wait is over."""
    name = new_user(hub)
    secret, _, _ = await Browser(hub).enrol(name)
    guard = hub.authenticator.nbguard
    guard.store.clear_failures("client:127.0.0.1")
    statuses = []
    for _ in range(guard.lockout.free_attempts):
        browser = Browser(hub)
        page = await browser.login(name)
        statuses.append((await browser.post(page.url, {"code": "123456"}, xsrf=page.xsrf)).status)
    assert statuses == [403] * guard.lockout.free_attempts
    browser = Browser(hub)
    page = await browser.login(name)
    locked = await browser.post(page.url, {"code": later_code(secret)}, xsrf=page.xsrf)
    assert locked.status == 429
    assert int(locked.headers["Retry-After"]) > 0
    assert not browser.has_login_cookie()
    events = [r["event"] for r in records(hub, "mfa", name)]
    assert "lockout" in events
    guard.store.clear_failures(f"user:{name}")
    guard.store.clear_failures("client:127.0.0.1")


async def test_pending_login_ends_after_too_many_wrong_codes(hub: Any) -> None:
    """One pending login allows a few tries; then the password must be given again."""
    name = new_user(hub)
    secret, _, _ = await Browser(hub).enrol(name)
    guard = hub.authenticator.nbguard
    guard.lockout = type(guard.lockout)(free_attempts=100)
    try:
        browser = Browser(hub)
        page = await browser.login(name)
        for _ in range(guard.pending_login_attempts):
            last = await browser.post(page.url, {"code": "999999"}, xsrf=page.xsrf)
        assert last.status == 403
        assert "sign in again" in last.text.lower()
        after = await browser.post(page.url, {"code": later_code(secret)}, xsrf=page.xsrf)
        assert after.status == 401
        assert not browser.has_login_cookie()
    finally:
        guard.lockout = type(guard.lockout)()
        guard.store.clear_failures(f"user:{name}")
        guard.store.clear_failures("client:127.0.0.1")


async def test_step_up_refreshes_the_mfa_time(hub: Any) -> None:
    """The step-up page takes a code from a logged-in user and renews the MFA time."""
    name = new_user(hub)
    browser = Browser(hub)
    secret, _, _ = await browser.enrol(name)
    user = hub.users[name]
    before = read_state(await user.get_auth_state())
    assert before is not None
    home = hub.hub.base_url + "home"
    page = await browser.get(f"nbguard/mfa/step-up?next={home}")
    assert page.status == 200
    assert 'id="nbguard-code"' in page.text
    done = await browser.post(page.url, {"code": later_code(secret)}, xsrf=page.xsrf)
    assert done.status == 200
    assert done.url.endswith(home)
    after = read_state(await user.get_auth_state())
    assert after is not None
    assert after.mfa_time > before.mfa_time
    assert after.session_id == before.session_id
    assert ("step-up", "success") in [(r["event"], r["outcome"]) for r in records(hub, "mfa", name)]


async def test_step_up_needs_a_session(hub: Any) -> None:
    """The step-up page is not a way in: without a session it sends to the login page."""
    page = await Browser(hub).get("nbguard/mfa/step-up", allow_redirects=False)
    assert page.status == 302
    assert "/login" in page.headers["Location"]


async def test_unknown_user_is_refused_with_a_reason(hub: Any) -> None:
    """A user no policy lets in sees why after the password, and never gets a code page."""
    browser = Browser(hub)
    page = await browser.login("mallory")
    assert page.status == 403
    assert 'id="nbguard-reason"' in page.text
    assert "not known to this hub&#39;s access policy" in page.text
    assert not browser.has_login_cookie()
    assert records(hub, "login", "mallory")[-1]["outcome"] == "failure"


async def test_wrong_password_is_recorded(hub: Any) -> None:
    """A failed primary login is a ledger record, and the form says so."""
    name = new_user(hub)
    page = await Browser(hub).login(name, password="not-the-password")  # noqa: S106
    assert page.status == 403
    assert "Invalid username or password" in page.text
    assert records(hub, "login", name)[-1] == {
        "outcome": "failure",
        "method": "mockpam",
        "username": name,
        "client_ip": "127.0.0.1",
        "user_agent": "Mozilla/5.0 (nbguard tests)",
        "reason": "primary authentication failed",
    }


async def test_totp_secret_is_sealed_at_rest(hub: Any) -> None:
    """The database holds the TOTP secret only sealed, and recovery codes only hashed."""
    import sqlalchemy

    name = new_user(hub)
    secret, codes, _ = await Browser(hub).enrol(name)
    engine = hub.authenticator.nbguard.store.engine
    with engine.connect() as conn:
        rows = conn.execute(sqlalchemy.text("select * from nbguard_mfa_totp")).all()
        hashes = conn.execute(sqlalchemy.text("select code_hash from nbguard_mfa_recovery")).all()
    dump = repr(rows) + repr(hashes)
    assert secret not in dump
    assert all(code not in dump for code in codes)
