"""Fixtures for the guard-service tests: a real hub, its proxy, and the guard service.

The hub is JupyterHub's MockHub with the real configurable-http-proxy, the
nbguard-wrapped authenticator and the guarded spawner around JupyterHub's
``MockSpawner`` (a real tiny server process per user). The guard service is
the real ``GuardService``, registered with the hub by ``guard_service(...,
managed=False)`` and run in the test's event loop, so tests reach it through
the proxy with real hub tokens. ``test_managed_service.py`` runs it the way
production does, as a process the hub starts.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import requests
import yaml
from traitlets.config import Config

from nbguard.policy.entities import user as user_entity

from ..conftest import Browser, hub_config, running_hub

SERVICE = "nbguard-guard"

#: The catalog the tests' service starts with.
CATALOG = {
    "datasets": {
        "weather": {"sensitivity": "public", "environment": "dev", "team": "analytics"},
        "sales": {
            "description": "Sales by region",
            "sensitivity": "internal",
            "environment": "train",
            "team": "analytics",
            "owner": "dave",
        },
        "features": {"sensitivity": "confidential", "environment": "train", "team": "analytics"},
        "customers": {"sensitivity": "restricted", "environment": "train", "team": "analytics"},
        "ledger-prod": {"sensitivity": "confidential", "environment": "prod", "team": "risk"},
    }
}


@dataclass
class Guard:
    """The running hub and guard service of one test module."""

    hub: Any
    service: Any
    base: str
    tmp: Path
    servers: list[tuple[str, str]] = field(default_factory=list)
    #: Further replicas of the service (same database), kept in step by ``add_user``.
    replicas: list[Any] = field(default_factory=list)

    def url(self, path: str) -> str:
        """The service URL of ``path`` (``api/v1/me``), through the proxy."""
        return self.base + path

    def add_user(self, name: str, *roles: str, teams: tuple[str, ...] = ("analytics",)) -> None:
        """Make ``name`` known to the policy of the hub and of every replica of the service."""
        entity = user_entity(name, roles=roles or ("data-scientist",), teams=teams)
        self.hub.authenticator.nbguard.engine.upsert_entities([entity])
        for service in (self.service, *self.replicas):
            service.engine.upsert_entities([entity])


@dataclass
class Client:
    """A token-holding API client (a server, a kernel or a script)."""

    guard: Guard
    token: str
    name: str

    async def call(self, method: str, path: str, **kw: Any) -> requests.Response:
        """Call the service API with this client's token."""
        headers = {"Authorization": f"token {self.token}", **kw.pop("headers", {})}
        return await asyncio.to_thread(
            requests.request, method, self.guard.url(path), headers=headers, timeout=30, **kw
        )


def guard_hub_config(tmp: Path, *, url: str, token: str, db_url: str) -> Config:
    """A hub config with the guarded spawner and an unmanaged guard service at ``url``."""
    from jupyterhub.tests.mocking import MockSpawner

    from nbguard.hub_plugin.guard.hub_config import guard_service
    from nbguard.hub_plugin.spawner import guarded_spawner

    config = hub_config(tmp)
    config.JupyterHub.spawner_class = guarded_spawner(MockSpawner)
    config.PolicySpawnerMixin.default_profile = "train"
    guard_service(
        config,
        config_file=str(tmp / "unused_config.py"),
        url=url,
        managed=False,
        api_token=token,
        db_url=db_url,
    )
    return config


def new_service(config: Config, app: Any, tmp: Path, *, url: str, token: str) -> Any:
    """A ``GuardService`` for the running hub ``app`` that will listen at ``url``.

    Not yet initialised: call ``init_components()`` (any thread), then ``listen()``
    (the test's event loop). It imports ``CATALOG`` at start and keeps dataset
    files under ``tmp / "data"``.
    """
    from nbguard.hub_plugin.guard.app import GuardService

    catalog = tmp / "catalog.yaml"
    if not catalog.exists():
        catalog.write_text(yaml.safe_dump(CATALOG))
    service_config = config.copy()
    service_config.GuardService.hub_api_url = app.hub.api_url
    service_config.GuardService.api_token = token
    service_config.GuardService.service_url = url
    service_config.GuardService.service_prefix = f"{app.base_url}services/{SERVICE}/"
    service_config.GuardService.hub_base_url = app.base_url
    service_config.GuardService.storage_root = str(tmp / "data")
    service_config.GuardService.catalog_file = str(catalog)
    return GuardService(config=service_config)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def guard(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Guard]:
    """A MockHub with nbguard and the guard service, shared by one test module."""
    async with running_guard(tmp_path_factory.mktemp("guard")) as env:
        yield env


@asynccontextmanager
async def running_guard(tmp: Path, **settings: Any) -> AsyncIterator[Guard]:
    """A MockHub with nbguard and the guard service (``settings``: more GuardService traits)."""
    from jupyterhub.tests.utils import public_url
    from jupyterhub.utils import random_port

    url = f"http://127.0.0.1:{random_port()}"
    token = secrets.token_hex(32)
    config = guard_hub_config(tmp, url=url, token=token, db_url=f"sqlite:///{tmp / 'guard.sqlite'}")
    for name, value in settings.items():
        setattr(config.GuardService, name, value)
    async with running_hub(config) as app:
        service = new_service(config, app, tmp, url=url, token=token)
        service.init_components()
        service.listen()
        base = public_url(app) + f"services/{SERVICE}/"
        env = Guard(app, service, base, tmp)
        try:
            yield env
        finally:
            for name, server in env.servers:
                user = app.users[name]
                if user.spawners[server].active:
                    await user.stop(server)
            await service.notifier.drain()
            await service.aclose()


async def signed_in(guard: Guard, *roles: str, teams: tuple[str, ...] = ("analytics",)) -> Browser:
    """A new user with ``roles`` who has logged in with a second factor (auth state set)."""
    name = f"g{secrets.token_hex(4)}"
    guard.add_user(name, *roles, teams=teams)
    browser = Browser(guard.hub)
    await browser.enrol(name)
    browser.name = name  # type: ignore[attr-defined]
    return browser


async def age_mfa(guard: Guard, name: str, seconds: float) -> None:
    """Make the user's last second factor ``seconds`` old, as if time had passed."""
    import time

    from nbguard.hub_plugin.auth_state import read_state, with_state

    user = guard.hub.users[name]
    current = await user.get_auth_state()
    state = read_state(current)
    assert state is not None
    await user.save_auth_state(with_state(current, state.stepped_up("totp", time.time() - seconds)))
    guard.service.hub.forget(name)


async def user_client(guard: Guard, *roles: str, **kw: Any) -> Client:
    """A signed-in user's own API token (not a server's): environment ``none``."""
    browser = await signed_in(guard, *roles, **kw)
    name = browser.name  # type: ignore[attr-defined]
    token = guard.hub.users[name].new_api_token(note="test client")
    return Client(guard, token, name)


async def server_client(guard: Guard, *roles: str, **kw: Any) -> Client:
    """A signed-in user's running server's token (environment of its profile, ``train``)."""
    browser = await signed_in(guard, *roles, **kw)
    name = browser.name  # type: ignore[attr-defined]
    user = guard.hub.users[name]
    await user.spawn()
    guard.servers.append((name, ""))
    spawner = user.spawner
    for _ in range(300):
        if spawner.ready:
            break
        await asyncio.sleep(0.1)
    return Client(guard, spawner.api_token, name)
