"""The mixin on JupyterHub's LocalProcessSpawner: a real server as a real system user."""

from __future__ import annotations

import os
import pwd
from typing import Any

import pytest
from jupyterhub.spawner import LocalProcessSpawner, SimpleLocalProcessSpawner

from nbguard.policy.entities import user as user_entity

from .conftest import Browser, ledger_records, spawn_form, stop_server, wait_for

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(os.geteuid() != 0, reason="LocalProcessSpawner switches users: needs root"),
]

SPAWNER_BASE = LocalProcessSpawner


async def test_local_process_server_starts_and_stops_as_the_system_user(spawn_hub: Any) -> None:
    """root (a system user, a data scientist to the policy) gets a dev server that runs as root."""
    name = pwd.getpwuid(0).pw_name
    spawn_hub.authenticator.nbguard.engine.upsert_entities(
        [user_entity(name, roles=["data-scientist"])]
    )
    browser = Browser(spawn_hub)
    await browser.enrol(name)
    await spawn_form(browser, name, "dev")
    spawner = spawn_hub.users[name].spawner
    await wait_for(lambda: spawner.ready)
    assert isinstance(spawner, LocalProcessSpawner)
    assert not isinstance(spawner, SimpleLocalProcessSpawner)
    assert os.stat(f"/proc/{spawner.pid}").st_uid == 0
    assert await spawner.poll() is None
    await stop_server(spawn_hub, name)
    assert await spawner.poll() is not None
    assert ledger_records(spawn_hub, "spawn", name)[-1]["body"]["allowed"] is True
    assert ledger_records(spawn_hub, "server_stop", name)[-1]["body"]["reason"] == "requested"
