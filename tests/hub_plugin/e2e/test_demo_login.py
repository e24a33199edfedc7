"""The demo hub in a real browser: sign-in, TOTP enrolment, second sign-in, spawn, JupyterLab.

These drive the packaged demo configuration through ``nbguard demo`` with
Debian's Chromium. Each test signs in as its own demo user, so they share one hub.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlparse

import pyotp
import pytest
from playwright.sync_api import Page, expect

pytest.importorskip(
    "nbguard.hub_plugin.authenticator", reason="the MFA authenticator wrapper is not built yet"
)

pytestmark = pytest.mark.slow

#: JupyterHub's login cookie: it must not exist before the second factor.
LOGIN_COOKIE = "jupyterhub-hub-login"
#: Milliseconds for a first spawn and JupyterLab's first load.
LAB_TIMEOUT = 120_000


class AuthenticatorApp:
    """A TOTP app holding the enrolled secret; it never offers a time step twice.

    The hub refuses a code whose step is not after the last one used, and accepts
    one step of clock drift (TOTPSettings.valid_window), so a second sign-in in
    the same 30 seconds uses the next step instead of waiting for it.
    """

    def __init__(self, secret: str) -> None:
        self.totp = pyotp.TOTP(secret)
        self.last_step: int | None = None

    def _now(self) -> int:
        return int(time.time() // self.totp.interval)

    def code(self) -> str:
        """A code the hub accepts now and has not seen."""
        while True:
            now = self._now()
            step = now if self.last_step is None else max(now, self.last_step + 1)
            if step <= now + 1:
                self.last_step = step
                return str(self.totp.generate_otp(step))
            time.sleep(1)

    def wrong_code(self) -> str:
        """Six digits that match no step the hub would accept now."""
        now = self._now()
        valid = {self.totp.generate_otp(step) for step in range(now - 2, now + 3)}
        return next(code for code in ("000000", "123456", "999999") if code not in valid)


def path_of(page: Page) -> str:
    """The path of the page's current URL."""
    return urlparse(page.url).path


def has_login_cookie(page: Page) -> bool:
    """Whether the browser holds JupyterHub's login cookie."""
    return any(cookie["name"] == LOGIN_COOKIE for cookie in page.context.cookies())


def sign_in(page: Page, user: str, password: str) -> None:
    """Fill and submit JupyterHub's login form."""
    page.goto("/hub/login")
    page.fill("#username_input", user)
    page.fill("#password_input", password)
    page.click("#login_submit")
    page.wait_for_load_state()


def enrol(page: Page) -> tuple[AuthenticatorApp, list[str]]:
    """On the enrolment page: read the secret, confirm a code; return the app and recovery codes."""
    page.wait_for_url("**/hub/nbguard/mfa/enrol*")
    expect(page.locator("svg").first).to_be_visible()
    app = AuthenticatorApp(page.inner_text("#nbguard-totp-secret").replace(" ", ""))
    page.fill("#nbguard-code", app.code())
    page.click("#nbguard-submit")
    page.wait_for_selector("li.nbguard-recovery-code")
    return app, page.locator("li.nbguard-recovery-code").all_inner_texts()


def go_on(page: Page) -> None:
    """Leave the recovery codes page by its continue link."""
    page.click("#nbguard-continue")
    page.wait_for_url(lambda url: "/hub/nbguard/" not in url)


def api_user(page: Page) -> Any:
    """GET /hub/api/user with the browser's cookies: (status, JSON body or None)."""
    response = page.request.get("/hub/api/user")
    return response.status, response.json() if response.ok else None


def test_first_login_enrols_and_reaches_jupyterlab(page: Page, demo_hub: Any) -> None:
    """Alice signs in, enrols TOTP from the page's secret, keeps recovery codes and opens JupyterLab."""
    sign_in(page, "alice", demo_hub.state.password)
    assert path_of(page) == "/hub/nbguard/mfa/enrol"
    assert not has_login_cookie(page)

    _, codes = enrol(page)
    assert codes
    assert len(set(codes)) == len(codes)
    go_on(page)
    assert has_login_cookie(page)

    page.goto("/hub/spawn")
    if page.locator("#spawn_form").count():
        page.locator("#spawn_form [type=submit]").click()
    page.wait_for_url("**/user/alice/lab*", timeout=LAB_TIMEOUT)
    page.wait_for_selector(".jp-LabShell", timeout=LAB_TIMEOUT)
    expect(page.locator(".jp-Launcher")).to_be_visible(timeout=LAB_TIMEOUT)


def test_enrolled_user_is_asked_for_a_code(page: Page, demo_hub: Any) -> None:
    """Once enrolled, Bob's next sign-in asks for a code on /hub/nbguard/mfa and never shows the secret."""
    sign_in(page, "bob", demo_hub.state.password)
    app, _ = enrol(page)
    go_on(page)
    page.goto("/hub/logout")
    assert not has_login_cookie(page)

    sign_in(page, "bob", demo_hub.state.password)
    assert path_of(page) == "/hub/nbguard/mfa"
    assert page.locator("#nbguard-totp-secret").count() == 0
    assert not has_login_cookie(page)
    page.fill("#nbguard-code", app.code())
    page.click("#nbguard-submit")
    page.wait_for_url(lambda url: "/hub/nbguard/" not in url)
    assert has_login_cookie(page)
    status, user = api_user(page)
    assert (status, user["name"]) == (200, "bob")


def test_wrong_code_shows_an_error_and_logs_nobody_in(page: Page, demo_hub: Any) -> None:
    """A wrong code, at enrolment and at a later sign-in, shows #nbguard-error and sets no cookie."""
    sign_in(page, "carol", demo_hub.state.password)
    page.wait_for_url("**/hub/nbguard/mfa/enrol*")
    app = AuthenticatorApp(page.inner_text("#nbguard-totp-secret").replace(" ", ""))
    page.fill("#nbguard-code", app.wrong_code())
    page.click("#nbguard-submit")
    expect(page.locator("#nbguard-error")).to_be_visible()
    assert page.locator("li.nbguard-recovery-code").count() == 0
    assert not has_login_cookie(page)

    # The same enrolment still completes with a right code.
    page.fill("#nbguard-code", app.code())
    page.click("#nbguard-submit")
    page.wait_for_selector("li.nbguard-recovery-code")
    go_on(page)
    page.goto("/hub/logout")

    sign_in(page, "carol", demo_hub.state.password)
    assert path_of(page) == "/hub/nbguard/mfa"
    page.fill("#nbguard-code", app.wrong_code())
    page.click("#nbguard-submit")
    expect(page.locator("#nbguard-error")).to_be_visible()
    assert not has_login_cookie(page)
    assert api_user(page)[0] in (401, 403)


@pytest.mark.parametrize("target", ["/hub/home", "/hub/spawn", "/hub/admin", "/user/dave/"])
def test_pages_need_the_second_factor(page: Page, demo_hub: Any, target: str) -> None:
    """After the password but before the second factor, no hub page, API or server is reachable."""
    sign_in(page, "dave", demo_hub.state.password)
    assert path_of(page).startswith("/hub/nbguard/mfa")

    page.goto(target)
    assert not path_of(page).startswith(target), page.url
    assert page.locator("#start").count() == 0
    assert api_user(page)[0] in (401, 403)
    assert not has_login_cookie(page)
