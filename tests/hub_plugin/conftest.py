"""Fixtures for the hub-zone tests: a real JupyterHub (MockHub) with its proxy and nbguard.

``MockHub`` is JupyterHub's own test application: the real hub, handlers,
database and configurable-http-proxy (the PyPI one), with a mock spawner and an
in-memory database. ``Browser`` is a cookie-keeping HTTP client that behaves
like a browser towards the hub's forms (XSRF field, navigation headers).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pyotp
import pytest
import pytest_asyncio
import requests
from traitlets.config import Config

from nbguard.encryption import SecretBox
from nbguard.ledger.keys import generate_key_pair
from nbguard.policy.engine import DEFAULT_POLICY_DIR
from nbguard.policy.entities import user as user_entity

XSRF = re.compile(r'name="_xsrf" value="([^"]+)"')
SECRET = re.compile(r'id="nbguard-totp-secret"[^>]*>([A-Z2-7]+)<')
RECOVERY = re.compile(r'class="nbguard-recovery-code">([a-z2-9-]+)<')
USER_AGENT = "Mozilla/5.0 (nbguard tests)"


def hub_config(tmp: Path, **nbguard: Any) -> Config:
    """A hub config with nbguard wrapping JupyterHub's mock PAM authenticator."""
    from jupyterhub.tests.mocking import MockPAMAuthenticator
    from jupyterhub.utils import random_port

    from nbguard.hub_plugin import guarded_authenticator

    key_file = tmp / "ledger-key.pem"
    if not key_file.exists():
        generate_key_pair(key_file, tmp / "ledger-key.pub")
    config = Config()
    config.JupyterHub.authenticator_class = guarded_authenticator(MockPAMAuthenticator)
    config.Authenticator.allow_all = True
    config.JupyterHub.cookie_secret_file = str(tmp / "cookie_secret")
    config.ConfigurableHTTPProxy.pid_file = str(tmp / "proxy.pid")
    # A prefix, so that nothing assumes the hub is at "/" (MockHub's own prefix has
    # an "@" that the requests library re-quotes).
    config.JupyterHub.bind_url = f"http://127.0.0.1:{random_port()}/prefix/"
    config.NBGuard.mfa_db_url = f"sqlite:///{tmp / 'mfa.sqlite'}"
    config.NBGuard.guard_db_url = f"sqlite:///{tmp / 'guard.sqlite'}"
    config.NBGuard.secret_keys = [SecretBox.generate_key()]
    config.PolicyEngine.policy_dir = str(DEFAULT_POLICY_DIR)
    config.Ledger.url = f"sqlite:///{tmp / 'ledger.sqlite'}"
    config.Ledger.signing_key_file = str(key_file)
    config.Ledger.max_delay = 0.001
    for name, value in nbguard.items():
        setattr(config.NBGuard, name, value)
    return config


async def stop_hub(app: Any) -> None:
    """What ``MockHub.stop`` does, less its callback that cancels every task of the loop.

    That callback would also cancel the other fixtures' teardown in the shared
    module-scoped loop.
    """
    app._stop_called = True
    await app.cleanup()
    app._atexit_ran = True
    if app.http_server:
        app.http_server.stop()
    for callback in app._periodic_callbacks.values():
        callback.stop()
    app.db_file.close()


@asynccontextmanager
async def running_hub(config: Config) -> AsyncIterator[Any]:
    """Start a MockHub (real hub and proxy) with ``config``; stop it afterwards."""
    from jupyterhub import crypto
    from jupyterhub.tests.mocking import MockHub

    keeper = crypto.CryptKeeper.instance()
    saved_keys = keeper.keys
    keeper.keys = [os.urandom(32)]
    app = MockHub.instance(config=config)
    await app.initialize([])
    await app.start()
    try:
        yield app
    finally:
        app.log.handlers = []
        MockHub.clear_instance()
        proxy = getattr(app.proxy, "proxy_process", None)
        await stop_hub(app)
        if proxy is not None:
            # JupyterHub terminates its proxy without waiting for it.
            proxy.wait(10)
        app.authenticator.nbguard.close()
        keeper.keys = saved_keys


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def hub(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Any]:
    """A running MockHub with nbguard, shared by the tests of one module.

    A test module sets ``NBGUARD = {...}`` to configure ``c.NBGuard`` for its hub.
    """
    options = getattr(request.module, "NBGUARD", {})
    async with running_hub(hub_config(tmp_path_factory.mktemp("hub"), **options)) as app:
        yield app


@dataclass
class Page:
    """A response as the test sees it."""

    status: int
    url: str
    text: str
    headers: Any

    @property
    def xsrf(self) -> str:
        """The form's XSRF token."""
        found = XSRF.search(self.text)
        assert found, f"no _xsrf field on {self.url}"
        return found.group(1)


class Browser:
    """A cookie-keeping client that talks to the hub like a browser."""

    def __init__(self, app: Any, *, user_agent: str = USER_AGENT) -> None:
        from jupyterhub.tests.utils import public_url

        self.app = app
        self.base = public_url(app)
        self.hub = urljoin(self.base, app.hub.base_url)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = user_agent

    def url(self, path: str) -> str:
        """An absolute URL for a path under the hub (``login``) or the root (``/user/..``)."""
        if path.startswith("http"):
            return path
        if path.startswith("/"):
            return urljoin(self.base, path)
        return urljoin(self.hub, path)

    async def get(self, path: str, **kw: Any) -> Page:
        """GET as a page navigation, following redirects unless told not to."""
        headers = {"Sec-Fetch-Mode": "navigate", **kw.pop("headers", {})}
        response = await asyncio.to_thread(
            self.session.get, self.url(path), headers=headers, timeout=30, **kw
        )
        return Page(response.status_code, response.url, response.text, response.headers)

    async def post(self, path: str, data: dict[str, str], *, xsrf: str, **kw: Any) -> Page:
        """POST a form (with its XSRF token)."""
        headers = {"Sec-Fetch-Mode": "navigate", **kw.pop("headers", {})}
        response = await asyncio.to_thread(
            self.session.post,
            self.url(path),
            data={**data, "_xsrf": xsrf},
            headers=headers,
            timeout=30,
            **kw,
        )
        return Page(response.status_code, response.url, response.text, response.headers)

    async def login(self, username: str, password: str | None = None) -> Page:
        """The primary login form; returns the page it leads to (second factor)."""
        form = await self.get("login")
        return await self.post(
            "login", {"username": username, "password": password or username}, xsrf=form.xsrf
        )

    async def enrol(self, username: str) -> tuple[str, list[str], Page]:
        """Log in and enrol a new TOTP factor; return the secret, recovery codes, last page."""
        page = await self.login(username)
        assert page.url.endswith("nbguard/mfa/enrol"), page.url
        secret = SECRET.search(page.text)
        assert secret, "no TOTP secret on the enrolment page"
        code = pyotp.TOTP(secret.group(1)).now()
        done = await self.post(page.url, {"code": code}, xsrf=page.xsrf)
        return secret.group(1), RECOVERY.findall(done.text), done

    def has_login_cookie(self) -> bool:
        """True once the hub's login cookie is set."""
        return any(c.name.startswith("jupyterhub-hub-login") for c in self.session.cookies)


def later_code(secret: str, steps: int = 1) -> str:
    """The code ``steps`` time steps from now: accepted once after the current one was used."""
    return pyotp.TOTP(secret).at(time.time() + 30 * steps)


_users = itertools.count(1)


def new_user(app: Any, *roles: str) -> str:
    """A fresh user name, known to the policy with ``roles`` (default data-scientist)."""
    name = f"user{next(_users)}"
    app.authenticator.nbguard.engine.upsert_entities(
        [user_entity(name, roles=roles or ("data-scientist",))]
    )
    return name


def export_lines(ledger: Any) -> list[dict[str, Any]]:
    """Every line of a JSON Lines export of ``ledger`` (records and checkpoints), in order."""
    import io
    import json

    out = io.StringIO()
    ledger.export(out)
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def ledger_bodies(ledger: Any, kind: str, actor: str | None = None) -> list[dict[str, Any]]:
    """The bodies of ``ledger``'s records of ``kind`` (of ``actor``, if given), oldest first."""
    found = [line["record"] for line in export_lines(ledger) if line.get("type") == "record"]
    return [
        r["body"] for r in found if r["kind"] == kind and (actor is None or r.get("actor") == actor)
    ]


def records(app: Any, kind: str, actor: str) -> list[dict[str, Any]]:
    """The hub's ledger bodies of ``kind`` whose actor is ``actor``, oldest first."""
    return ledger_bodies(app.authenticator.nbguard.ledger, kind, actor)
