"""Fixtures for the spawner tests: a real hub (MockHub) whose spawner runs real servers.

The hub is the one of ``tests/hub_plugin/conftest.py`` (JupyterHub's MockHub, its
proxy, the real nbguard-wrapped authenticator), with the guarded
``SimpleLocalProcessSpawner`` or ``LocalProcessSpawner`` starting real
``jupyterhub-singleuser`` processes. Users log in with a real second factor.
"""

from __future__ import annotations

import asyncio
import html
import io
import json
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from nbguard.hub_plugin.auth_state import read_state, with_state
from nbguard.hub_plugin.spawner import guarded_spawner

from ..conftest import Browser, hub_config, new_user

DEVICE_KEY = ed25519.Ed25519PrivateKey.generate()
DEVICE_HEADER = "X-Device-Assertion"
FORM_XSRF = re.compile(r'id="spawn_form"[^>]*action="[^"]*[?&](?:amp;)?_xsrf=([^"&]+)')

#: Active elevation grants by user: ``{username: {(action, resource key)}}``.
GRANTS: dict[str, set[tuple[str, str]]] = {}

#: The profile form a local-process hub shows (KubeSpawner draws its own).
PROFILE_FORM = """<select name="profile"><option>dev</option><option>train</option>
<option>prod</option></select>"""


def profile_from_form(formdata: dict[str, list[str]]) -> dict[str, Any]:
    """The form's ``profile`` field as ``user_options`` (an admin's ``options_from_form``)."""
    return {"profile": formdata.get("profile", [""])[0]}


def granting(base: Any) -> type:
    """``guarded_spawner(base)`` whose active grants come from :data:`GRANTS`.

    This one stage reads a dict, so tests set grants without an approval flow (the
    guard-service tests cover the real store); everything else is the real mixin.
    """
    from nbguard.policy import Grant

    class Granting(guarded_spawner(base)):  # type: ignore[misc]
        async def nbguard_grants(self, guard: Any, username: str) -> tuple[Any, Any]:
            grants = frozenset(Grant(a, r) for a, r in GRANTS.get(username, ()))
            return frozenset(), grants

    Granting.__name__ = f"Granting{base.__name__}"
    return Granting


def spawn_config(tmp: Path, base: Any, **mixin: Any) -> Any:
    """The nbguard hub config with a guarded local-process spawner running real servers."""
    public = DEVICE_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    config = hub_config(tmp, device_assertion_keys={"mdm-1": public.decode()})
    config.JupyterHub.spawner_class = granting(base)
    # Our own pid file: the default one in the working directory is shared with any
    # other hub started there, which would kill this hub's proxy as a stale one.
    config.ConfigurableHTTPProxy.pid_file = str(tmp / "proxy.pid")
    config.Spawner.cmd = [str(Path(sys.executable).with_name("jupyterhub-singleuser"))]
    config.Spawner.args = ["--allow-root"] if os.geteuid() == 0 else []
    config.Spawner.default_url = "/api/status"
    config.Spawner.options_form = PROFILE_FORM
    config.Spawner.options_from_form = profile_from_form
    config.Spawner.poll_interval = 1
    # jupyter-server asks for confirmation on the first SIGINT; escalate quickly.
    config.LocalProcessSpawner.interrupt_timeout = 1
    config.LocalProcessSpawner.term_timeout = 5
    config.Spawner.http_timeout = 60
    config.Spawner.start_timeout = 60
    config.SimpleLocalProcessSpawner.home_dir_template = str(tmp / "home" / "{username}")
    config.PolicySpawnerMixin.default_profile = "dev"
    for name, value in mixin.items():
        setattr(config.PolicySpawnerMixin, name, value)
    return config


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def spawn_hub(tmp_path_factory: pytest.TempPathFactory, request: Any) -> AsyncIterator[Any]:
    """A running MockHub with nbguard and a guarded spawner (``SPAWNER_BASE`` of the module)."""
    from jupyterhub import crypto
    from jupyterhub.spawner import SimpleLocalProcessSpawner
    from jupyterhub.tests.mocking import MockHub

    base = getattr(request.module, "SPAWNER_BASE", SimpleLocalProcessSpawner)
    mixin = getattr(request.module, "MIXIN_CONFIG", {})
    tmp = tmp_path_factory.mktemp("spawn-hub")
    keeper = crypto.CryptKeeper.instance()
    saved_keys = keeper.keys
    keeper.keys = [os.urandom(32)]
    app = MockHub.instance(config=spawn_config(tmp, base, **mixin))
    await app.initialize([])
    await app.start()
    try:
        yield app
    finally:
        for user in list(app.users.values()):
            for name, spawner in list(user.spawners.items()):
                if spawner.active:
                    await user.stop(name)
        app.log.handlers = []
        MockHub.clear_instance()
        proxy = getattr(app.proxy, "proxy_process", None)
        await app.stop()
        if proxy is not None:
            proxy.wait(10)
        app.authenticator.nbguard.close()
        keeper.keys = saved_keys


def device_assertion(username: str) -> str:
    """A fresh device assertion for ``username``, signed by the test MDM key."""
    now = int(time.time())
    claims = {
        "sub": username,
        "aud": "nbguard",
        "iat": now,
        "exp": now + 600,
        "device_id": f"laptop-{username}",
    }
    return jwt.encode(claims, DEVICE_KEY, algorithm="EdDSA", headers={"kid": "mdm-1"})


async def logged_in(app: Any, *roles: str, device: bool = False) -> tuple[str, Browser]:
    """A new user (with ``roles``) logged in with TOTP; optionally on a trusted device."""
    name = new_user(app, *roles)
    browser = Browser(app)
    if device:
        browser.session.headers[DEVICE_HEADER] = device_assertion(name)
    await browser.enrol(name)
    return name, browser


async def age_mfa(app: Any, name: str, seconds: float) -> None:
    """Make the user's last second factor ``seconds`` old (as if time had passed)."""
    user = app.users[name]
    current = await user.get_auth_state()
    state = read_state(current)
    assert state is not None
    await user.save_auth_state(with_state(current, state.stepped_up("totp", time.time() - seconds)))


async def spawn_form(browser: Browser, name: str, profile: str) -> Any:
    """POST the spawn form for ``profile``; returns the page it ends on."""
    form = await browser.get(f"spawn/{name}")
    # JupyterHub's spawn form carries its XSRF token in the action URL's query.
    token = FORM_XSRF.search(form.text)
    assert token, f"no spawn form on {form.url}"
    return await browser.post(f"spawn/{name}", {"profile": profile}, xsrf=html.unescape(token[1]))


async def api_spawn(browser: Browser, name: str, options: Any) -> Any:
    """POST ``options`` (any JSON) to the REST API's start-server endpoint as the user."""
    xsrf = browser.session.cookies.get("_xsrf", "")
    url = browser.url(f"api/users/{name}/server")
    return await asyncio.to_thread(
        browser.session.post, url, json=options, headers={"X-XSRFToken": xsrf}, timeout=60
    )


async def wait_for(condition: Callable[[], Any], timeout: float = 60) -> None:
    """Wait until ``condition()`` is true (awaiting it if it is a coroutine)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.2)


async def stop_server(app: Any, name: str) -> None:
    """Stop the user's server through the hub, as the stop button does."""
    user = app.users[name]
    if user.spawner.active:
        await app.proxy.delete_user(user)
        await user.stop()


def ledger_records(app: Any, kind: str, actor: str) -> list[dict[str, Any]]:
    """Ledger records of ``kind`` whose actor is ``actor``, oldest first (from an export)."""
    out = io.StringIO()
    app.authenticator.nbguard.ledger.export(out)
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    found = [line["record"] for line in lines if line.get("type") == "record"]
    return [r for r in found if r["kind"] == kind and r.get("actor") == actor]
