"""Logins through GenericOAuthenticator go through the gate: IdP MFA trust, callback replay.

The identity provider is ``fake_idp.FakeIdP`` (an OIDC provider cannot run here);
the hub, the proxy, OAuthenticator and nbguard are the real ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from nbguard.hub_plugin.auth_state import read_state

from .conftest import Browser, hub_config, new_user, running_hub
from .fake_idp import FakeIdP, Login

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def idp() -> AsyncIterator[FakeIdP]:
    """The stand-in identity provider."""
    provider = FakeIdP()
    provider.start()
    yield provider
    provider.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def oauth_hub(idp: FakeIdP, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    """A hub whose primary login is GenericOAuthenticator, trusting the IdP's ``mfa`` amr."""
    from nbguard.hub_plugin import guarded_authenticator

    config = hub_config(tmp_path_factory.mktemp("oauth"), trust_idp_mfa=True)
    config.JupyterHub.authenticator_class = guarded_authenticator("generic-oauth")
    config.GenericOAuthenticator.client_id = "nbguard-hub"
    config.GenericOAuthenticator.client_secret = "test-secret"  # noqa: S105
    config.GenericOAuthenticator.authorize_url = f"{idp.url}/authorize"
    config.GenericOAuthenticator.token_url = f"{idp.url}/token"
    config.GenericOAuthenticator.userdata_url = f"{idp.url}/userinfo"
    config.GenericOAuthenticator.username_claim = "preferred_username"
    config.GenericOAuthenticator.scope = ["openid", "profile"]
    port = config.JupyterHub.bind_url.split(":")[2].split("/")[0]
    config.GenericOAuthenticator.oauth_callback_url = (
        f"http://127.0.0.1:{port}/prefix/hub/oauth_callback"
    )
    async with running_hub(config) as app:
        yield app


async def start(browser: Browser) -> Any:
    """Click "Sign in with ...": the IdP consents and the browser returns to the callback."""
    return await browser.get("oauth_login")


async def test_idp_mfa_satisfies_the_second_factor(oauth_hub: Any, idp: FakeIdP) -> None:
    """With the IdP asserting amr=mfa, the login completes with method idp and no TOTP."""
    name = new_user(oauth_hub)
    idp.next = Login(username=name, amr=["pwd", "mfa"])
    browser = Browser(oauth_hub)
    page = await start(browser)
    assert page.status == 200
    assert browser.has_login_cookie()
    state = read_state(await oauth_hub.users[name].get_auth_state())
    assert state is not None
    assert state.mfa_method == "idp"
    assert "oauth_user" in (await oauth_hub.users[name].get_auth_state())


async def test_idp_without_mfa_goes_to_totp(oauth_hub: Any, idp: FakeIdP) -> None:
    """An IdP login without an accepted amr is held for TOTP enrolment, with no cookie."""
    name = new_user(oauth_hub)
    idp.next = Login(username=name, amr=["pwd"])
    browser = Browser(oauth_hub)
    page = await start(browser)
    assert page.url.endswith("/nbguard/mfa/enrol")
    assert not browser.has_login_cookie()


async def test_replayed_callback_logs_nobody_in(oauth_hub: Any, idp: FakeIdP) -> None:
    """Replaying the OAuth callback URL (code and state) from another browser gets no session."""
    name = new_user(oauth_hub)
    idp.next = Login(username=name, amr=["pwd"])
    victim = Browser(oauth_hub)
    login = await victim.get("oauth_login", allow_redirects=False)
    consent = await victim.get(login.headers["Location"], allow_redirects=False)
    callback = consent.headers["Location"]
    first = await victim.get(callback)
    assert first.url.endswith("/nbguard/mfa/enrol")
    attacker = Browser(oauth_hub)
    replay = await attacker.get(callback, allow_redirects=False)
    assert replay.status in (400, 403)
    assert not attacker.has_login_cookie()
    same_browser = await victim.get(callback, allow_redirects=False)
    assert same_browser.status in (400, 403)
    assert not victim.has_login_cookie()
