"""The guard service as production runs it: a process the hub starts from one config file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import requests

from ..conftest import Browser, hub_config, running_hub

#: The configuration file the service process loads (the hub's settings it shares).
SERVICE_CONFIG = """
c = get_config()  # noqa: F821
c.PolicyEngine.policy_dir = {policy_dir!r}
c.Ledger.url = {ledger_url!r}
c.Ledger.signing_key_file = {key_file!r}
c.GuardService.db_url = {db_url!r}
c.GuardService.storage_root = {storage!r}
"""


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def managed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Any, str]]:
    """A MockHub that starts the guard service itself (``guard_service(c, ...)``)."""
    from jupyterhub.tests.utils import public_url
    from jupyterhub.utils import random_port

    from nbguard.hub_plugin.guard.hub_config import guard_service
    from nbguard.policy.engine import DEFAULT_POLICY_DIR

    tmp = tmp_path_factory.mktemp("managed")
    config = hub_config(tmp)
    config_file = tmp / "guard_config.py"
    config_file.write_text(
        SERVICE_CONFIG.format(
            policy_dir=str(DEFAULT_POLICY_DIR),
            ledger_url=config.Ledger.url,
            key_file=config.Ledger.signing_key_file,
            db_url=f"sqlite:///{tmp / 'guard.sqlite'}",
            storage=str(tmp / "data"),
        )
    )
    guard_service(config, config_file=str(config_file), url=f"http://127.0.0.1:{random_port()}")
    async with running_hub(config) as app:
        yield app, public_url(app) + "services/nbguard-guard/"


async def wait_for_service(base: str) -> None:
    """Wait until the service process answers (it starts after the hub)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            response = await asyncio.to_thread(requests.get, base + "api/v1/me", timeout=5)
            if response.status_code == 401:
                return
        except requests.ConnectionError:
            pass
        await asyncio.sleep(0.3)
    raise AssertionError("the guard service did not start")


@pytest.mark.asyncio(loop_scope="module")
async def test_the_hub_starts_the_service_and_it_decides(managed: tuple[Any, str]) -> None:
    """The hub-started service authenticates users' tokens and decides with shared policies."""
    app, base = managed
    await wait_for_service(base)
    browser = Browser(app)
    await browser.enrol("alice")  # alice is a data scientist in the shipped entities
    token = app.users["alice"].new_api_token(note="managed test")
    headers = {"Authorization": f"token {token}"}
    me = await asyncio.to_thread(requests.get, base + "api/v1/me", headers=headers, timeout=30)
    assert me.status_code == 200, me.text
    assert me.json()["mfa_method"] == "totp"
    decision = await asyncio.to_thread(
        requests.post,
        base + "api/v1/decisions",
        json={"action": "dataset.read", "resource": "dataset:sales"},
        headers=headers,
        timeout=30,
    )
    assert decision.json()["allowed"] is True


@pytest.mark.asyncio(loop_scope="module")
async def test_a_browser_signs_in_to_the_pages_of_the_hub_started_service(
    managed: tuple[Any, str],
) -> None:
    """OAuth with the client id and callback the hub gives the process leads to the page."""
    app, base = managed
    await wait_for_service(base)
    browser = Browser(app)
    await browser.enrol("bob")
    page = await browser.get(base)
    assert page.status == 200, page.text
    assert page.url.endswith("/services/nbguard-guard/requests")
    assert "Waiting for your decision" in page.text


@pytest.mark.asyncio(loop_scope="module")
async def test_the_service_process_gets_no_hub_secrets(managed: tuple[Any, str]) -> None:
    """The service's environment names its own token, never the hub's keys."""
    app, _base = managed
    service = app._service_map["nbguard-guard"]
    env = service.spawner.get_env()
    assert env["JUPYTERHUB_SERVICE_NAME"] == "nbguard-guard"
    assert not {"JUPYTERHUB_CRYPT_KEY", "NBGUARD_SECRET_KEYS", "CONFIGPROXY_AUTH_TOKEN"} & set(env)


def test_config_file_is_the_only_argument() -> None:
    """guard_service runs the service with this Python and the given config file."""
    import sys

    from traitlets.config import Config

    from nbguard.hub_plugin.guard.hub_config import guard_service

    config = Config()
    entry = guard_service(config, config_file="/etc/jupyterhub/jupyterhub_config.py")
    assert entry["command"] == [
        sys.executable,
        "-m",
        "nbguard.hub_plugin.guard",
        "--config",
        "/etc/jupyterhub/jupyterhub_config.py",
    ]
    roles = {role["name"]: role for role in config.JupyterHub.load_roles}
    assert "access:services!service=nbguard-guard" in roles["server"]["scopes"]
    assert "access:servers!server" in roles["server"]["scopes"]
    assert "admin:auth_state" in roles["nbguard-guard"]["scopes"]
    assert config.NBGuard.guard_service_url == "http://127.0.0.1:10101/services/nbguard-guard/"


def test_the_url_servers_get_includes_the_hubs_prefix() -> None:
    """On a hub under /prefix/ the service serves /prefix/services/...; servers get that."""
    from traitlets.config import Config

    from nbguard.hub_plugin.guard.hub_config import guard_service

    config = Config()
    config.JupyterHub.base_url = "/prefix"
    guard_service(config, config_file="/etc/jupyterhub/jupyterhub_config.py")
    assert config.NBGuard.guard_service_url == (
        "http://127.0.0.1:10101/prefix/services/nbguard-guard/"
    )
    bound = Config()
    bound.JupyterHub.bind_url = "http://127.0.0.1:8000/hub-a/"
    guard_service(bound, config_file="/etc/jupyterhub/jupyterhub_config.py")
    assert bound.NBGuard.guard_service_url.endswith(":10101/hub-a/services/nbguard-guard/")
