"""The lifetime cap on a real hub: the server is stopped at its deadline, also after a restart."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from nbguard.hub_plugin.spawner_lease import STATE_KEY, SpawnLease

from .conftest import ledger_records, logged_in, spawn_form, stop_server, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: Servers of the train profile live 4 seconds; long enough to start, short to test.
MIXIN_CONFIG = {"profile_max_lifetime": {"train": 4}}


async def started(app: Any, profile: str) -> tuple[str, Any]:
    """A new user's running server of ``profile``, started from the spawn form."""
    name, browser = await logged_in(app)
    await spawn_form(browser, name, profile)
    spawner = app.users[name].spawner
    await wait_for(lambda: spawner.ready)
    return name, spawner


async def test_server_is_stopped_at_its_cap(spawn_hub: Any) -> None:
    """A train server is stopped by the hub at its 4 s cap; the route goes and the stop is recorded."""
    name, spawner = await started(spawn_hub, "train")
    pid = spawner.pid
    assert spawner.get_env()["NBGUARD_SERVER_DEADLINE"] == spawner._nbguard_lease.deadline_text
    await wait_for(lambda: not spawner.active)
    assert spawner.server is None
    routes = await spawn_hub.proxy.get_all_routes()
    assert not any(r.get("data", {}).get("user") == name for r in routes.values())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    stop = ledger_records(spawn_hub, "server_stop", name)[-1]["body"]
    assert (stop["profile"], stop["reason"]) == ("train", "lifetime")
    spawn = ledger_records(spawn_hub, "spawn", name)[-1]["body"]
    assert spawn["max_lifetime_s"] == 4
    assert stop["correlation_id"] == spawn["correlation_id"]


async def test_deadline_survives_in_state_and_poll_enforces_it(spawn_hub: Any) -> None:
    """A deadline loaded from saved state (as after a hub restart), with no timer, is enforced by poll."""
    name, spawner = await started(spawn_hub, "dev")
    state = spawner.get_state()
    lease = SpawnLease.from_state(state)
    assert lease is not None
    assert lease.profile == "dev"
    # As if the hub had been down past the deadline: no timer, the state is loaded.
    spawner.stop_polling()
    state[STATE_KEY]["deadline"] = int(time.time()) - 1
    spawner.load_state(state)
    assert spawner._nbguard_lease.remaining() < 0
    assert await spawner.poll() is not None
    assert spawner._nbguard_lease is None
    await stop_server(spawn_hub, name)
    reasons = [r["body"]["reason"] for r in ledger_records(spawn_hub, "server_stop", name)]
    assert reasons == ["lifetime"]
