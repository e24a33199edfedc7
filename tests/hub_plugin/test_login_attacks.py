"""What a curious user or an attacker with a password could try against the login gate."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nbguard.hub_plugin.auth_state import read_state
from nbguard.hub_plugin.login_policy import PENDING_COOKIE

from .conftest import Browser, later_code, new_user, records

pytestmark = pytest.mark.asyncio(loop_scope="module")

DEVICE_KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()
NBGUARD = {
    "network_zones": {"loopback": ["127.0.0.0/8"]},
    "device_assertion_keys": {
        "mdm": DEVICE_KEY.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    },
}


def assertion(user: str, *, key: Any = DEVICE_KEY, lifetime: int = 600, **headers: Any) -> str:
    """A device assertion JWT for ``user`` signed with ``key``."""
    now = int(time.time())
    claims = {"sub": user, "aud": "nbguard", "iat": now, "exp": now + lifetime, "device_id": "lt-7"}
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "mdm", **headers})


def unsigned(user: str) -> str:
    """The same claims with ``alg: none``."""
    now = int(time.time())
    claims = {"sub": user, "aud": "nbguard", "iat": now, "exp": now + 600, "device_id": "lt-7"}
    return jwt.encode(claims, None, algorithm="none", headers={"kid": "mdm"})


async def enrolled(hub: Any) -> tuple[str, str]:
    """A new user with TOTP enrolled; returns name and secret."""
    name = new_user(hub)
    secret, _, _ = await Browser(hub).enrol(name)
    return name, secret


async def login_with(hub: Any, name: str, secret: str, **headers: str) -> Any:
    """Complete a login sending ``headers`` with every request; return the auth state."""
    browser = Browser(hub)
    browser.session.headers.update(headers)
    page = await browser.login(name)
    done = await browser.post(page.url, {"code": later_code(secret)}, xsrf=page.xsrf)
    assert done.status == 200
    return read_state(await hub.users[name].get_auth_state())


@pytest.mark.parametrize(
    "path",
    ["home", "api/user", "spawn", "token", "nbguard/mfa/step-up", "{base}user/{name}/"],
    ids=["home", "api-user", "spawn", "token", "step-up", "user-server"],
)
async def test_no_page_opens_before_the_second_factor(hub: Any, path: str) -> None:
    """Between password and code, every authenticated page refuses or sends to login."""
    name = new_user(hub)
    browser = Browser(hub)
    page = await browser.login(name)
    assert "/nbguard/mfa" in page.url
    response = await browser.get(path.format(base=hub.base_url, name=name))
    assert response.status in (200, 403)
    if response.status == 200:
        assert response.url.split("?")[0].endswith("/hub/login")
    assert not browser.has_login_cookie()


async def test_forged_pending_cookie_is_refused(hub: Any) -> None:
    """A pending-login cookie the hub did not sign leads back to the login page."""
    browser = Browser(hub)
    browser.session.cookies.set(PENDING_COOKIE, "forged-token", path=hub.hub.base_url)
    page = await browser.get("nbguard/mfa")
    assert page.status == 401
    assert 'id="nbguard-retry"' in page.text


async def test_pending_login_cannot_move_to_another_browser(hub: Any) -> None:
    """A stolen pending cookie used by another browser is refused and the login is void."""
    name, secret = await enrolled(hub)
    victim = Browser(hub)
    page = await victim.login(name)
    thief = Browser(hub, user_agent="curl/8.0")
    for cookie in victim.session.cookies:
        thief.session.cookies.set_cookie(cookie)
    stolen = await thief.get(page.url)
    assert stolen.status == 401
    assert not thief.has_login_cookie()
    retry = await victim.post(page.url, {"code": later_code(secret)}, xsrf=page.xsrf)
    assert retry.status == 401


async def test_expired_pending_login_is_refused(hub: Any) -> None:
    """A correct code after the pending login expired does not log in."""
    name, secret = await enrolled(hub)
    browser = Browser(hub)
    page = await browser.login(name)
    pending = hub.authenticator.nbguard.pending
    saved = pending.ttl
    pending.ttl = 0
    try:
        late = await browser.post(page.url, {"code": later_code(secret)}, xsrf=page.xsrf)
    finally:
        pending.ttl = saved
    assert late.status == 401
    assert not browser.has_login_cookie()


async def test_enrolment_form_needs_a_pending_login(hub: Any) -> None:
    """Posting to the enrolment page with no pending login enrols nothing."""
    browser = Browser(hub)
    form = await browser.get("login")
    page = await browser.post("nbguard/mfa/enrol", {"code": "123456"}, xsrf=form.xsrf)
    assert page.status == 401


async def test_enrolment_cannot_replace_a_factor(hub: Any) -> None:
    """An enrolled user sent to the enrolment page gets the code page instead."""
    name, _ = await enrolled(hub)
    browser = Browser(hub)
    await browser.login(name)
    page = await browser.get("nbguard/mfa/enrol")
    assert page.url.endswith("/nbguard/mfa")


async def test_forwarded_for_from_an_untrusted_client_is_ignored(hub: Any) -> None:
    """X-Forwarded-For from a client that is no trusted proxy changes neither address nor zone."""
    name, secret = await enrolled(hub)
    state = await login_with(hub, name, secret, **{"X-Forwarded-For": "203.0.113.7"})
    assert state is not None
    assert state.client_ip == "127.0.0.1"
    assert state.network_zone == "loopback"


async def test_valid_device_assertion_marks_the_device_trusted(hub: Any) -> None:
    """A device assertion signed by the configured key, for this user, is kept in auth state."""
    name, secret = await enrolled(hub)
    state = await login_with(hub, name, secret, **{"X-Device-Assertion": assertion(name)})
    assert state is not None
    assert state.device_trusted
    assert state.device_id == "lt-7"


@pytest.mark.parametrize(
    "make",
    [
        lambda user: assertion(user, key=OTHER_KEY),
        lambda user: assertion(user, lifetime=-60),
        lambda user: assertion("someone-else"),
        unsigned,
        lambda user: "not.a.jwt",
    ],
    ids=["wrong-key", "expired", "other-user", "alg-none", "garbage"],
)
async def test_bad_device_assertion_leaves_the_device_untrusted(hub: Any, make: Any) -> None:
    """A forged, expired, foreign, unsigned or malformed assertion trusts nothing."""
    name, secret = await enrolled(hub)
    state = await login_with(hub, name, secret, **{"X-Device-Assertion": make(name)})
    assert state is not None
    assert not state.device_trusted
    assert state.device_id == ""


async def test_session_without_nbguard_state_must_log_in_again(hub: Any) -> None:
    """A cookie session whose auth state lacks nbguard's part is sent back to the login."""
    name, secret = await enrolled(hub)
    browser = Browser(hub)
    page = await browser.login(name)
    await browser.post(page.url, {"code": later_code(secret)}, xsrf=page.xsrf)
    assert (await browser.get("home")).status == 200
    user = hub.users[name]
    await user.save_auth_state({"unrelated": True})
    user._auth_refreshed = None
    again = await browser.get("home", allow_redirects=False)
    assert again.status == 302
    assert "/login" in again.headers["Location"]


async def test_admin_resets_a_factor_and_it_is_recorded(hub: Any) -> None:
    """An admin's reset removes the factor (next login enrols again); users cannot reset."""
    from jupyterhub.tests.utils import add_user, auth_header

    name, _ = await enrolled(hub)
    add_user(hub.db, hub, name="admin", admin=True)
    url = Browser(hub).url(f"nbguard/api/users/{name}/mfa")

    async def call(method: str, as_user: str) -> requests.Response:
        headers = auth_header(hub.db, as_user)
        return await asyncio.to_thread(requests.request, method, url, headers=headers, timeout=10)

    assert (await call("DELETE", name)).status_code == 403
    assert hub.authenticator.nbguard.store.is_enrolled(name)
    assert (await call("GET", "admin")).json() == {"name": name, "enrolled": True}
    assert (await call("DELETE", "admin")).status_code == 204
    assert not hub.authenticator.nbguard.store.is_enrolled(name)
    page = await Browser(hub).login(name)
    assert page.url.endswith("/nbguard/mfa/enrol")
    assert (await call("DELETE", "admin")).status_code == 404
    resets = [r for r in records(hub, "mfa", name) if r["event"] == "reset"]
    assert resets[0] == {
        "event": "reset",
        "outcome": "success",
        "method": "totp",
        "reset_by": "admin",
    }


async def test_mfa_database_down_fails_closed_with_a_clear_page(hub: Any) -> None:
    """With the MFA database unreachable, a login gets a 503 with a plain message, no session."""
    import sqlalchemy

    name, _ = await enrolled(hub)
    store = hub.authenticator.nbguard.store
    working = store.engine
    store.engine = sqlalchemy.create_engine("sqlite:////nonexistent-dir/mfa.sqlite")
    try:
        browser = Browser(hub)
        page = await browser.login(name)
    finally:
        store.engine = working
    assert page.status == 503
    assert "second-factor database" in page.text
    assert "Traceback" not in page.text
    assert not browser.has_login_cookie()


async def test_primary_record_not_stored_means_the_login_cannot_complete(hub: Any) -> None:
    """A password login whose ledger record failed ends in a 503 at the code, with no session."""
    import sqlalchemy

    name = new_user(hub)
    secret, recovery_codes, _ = await Browser(hub).enrol(name)
    guard = hub.authenticator.nbguard
    store = guard.ledger.store
    working = store.engine
    store.close()  # lets go of the connection it keeps for writes, so the next one opens anew
    store.engine = sqlalchemy.create_engine("sqlite:////nonexistent-dir/ledger.sqlite")
    try:
        browser = Browser(hub)
        page = await browser.login(name)
        assert page.url.endswith("nbguard/mfa"), page.url
        (pending,) = [p for p in guard.pending._items.values() if p.username == name]
        assert pending.primary_record.exception(10) is not None  # the commit failed
    finally:
        store.engine = working
    done = await browser.post(page.url, {"code": later_code(secret)}, xsrf=page.xsrf)
    assert done.status == 503
    assert "audit ledger" in done.text
    assert not browser.has_login_cookie()
    # With the ledger back, the next login completes (the failed one used the next code).
    again = Browser(hub)
    page = await again.login(name)
    done = await again.post(page.url, {"code": recovery_codes[0]}, xsrf=page.xsrf)
    assert done.status == 200
    assert again.has_login_cookie()


@pytest.mark.parametrize("locked_out", [False, True], ids=["first-code", "locked-out"])
async def test_a_secret_no_key_opens_fails_closed_with_a_clear_page(
    hub: Any, locked_out: bool
) -> None:
    """The admin dropped the key that sealed a user's TOTP secret: their code step is a 503
    with plain words (never a 500 with a trace) and no session, locked out or not."""
    from nbguard.encryption import SecretBox

    name, secret = await enrolled(hub)
    store = hub.authenticator.nbguard.store
    if locked_out:
        browser = Browser(hub)
        page = await browser.login(name)
        for _ in range(8):
            await browser.post(page.url, {"code": "000000"}, xsrf=page.xsrf)
    working = store.secrets
    store.secrets = SecretBox([SecretBox.generate_key()])
    try:
        browser = Browser(hub)
        page = await browser.login(name)
        done = await browser.post(page.url, {"code": later_code(secret)}, xsrf=page.xsrf)
    finally:
        store.secrets = working
    assert done.status in (429, 503), done.text
    assert "Traceback" not in done.text
    if done.status == 503:
        assert "sign-in is paused for you" in done.text
    assert not browser.has_login_cookie()
