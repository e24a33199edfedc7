"""The spawner reads grants and locks from the guard service's database."""

from __future__ import annotations

from typing import Any

import pytest

from nbguard.elevation.rules import ApprovalRule
from nbguard.hub_plugin.spawner import PolicySpawnerMixin

from .conftest import logged_in, spawn_form

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_an_approved_grant_in_the_guard_db_allows_a_prod_spawn(spawn_hub: Any) -> None:
    """A server.spawn grant approved in the guard's store is in the spawn's context."""
    guard = spawn_hub.authenticator.nbguard
    name, _browser = await logged_in(spawn_hub, device=True)
    store = guard.elevations
    request = store.create_request(
        requester=name,
        action="server.spawn",
        target="profile:prod",
        duration_seconds=600,
        reason="incident 42",
        environment="prod",
        sensitivity="restricted",
        rule=ApprovalRule(),
    )
    store.decide(request.id, approver="someone-else", approve=True, comment="ok")
    spawner = spawn_hub.users[name].spawner
    # The mixin's own stage (this module's spawner class overrides it with a test seam).
    roles, grants = await PolicySpawnerMixin.nbguard_grants(spawner, guard, name)
    assert {(g.action, g.resource) for g in grants} == {("server.spawn", "profile:prod")}
    assert roles == frozenset()


async def test_a_locked_user_cannot_spawn(spawn_hub: Any) -> None:
    """A lock in the guard's store refuses the spawn with a plain message."""
    guard = spawn_hub.authenticator.nbguard
    name, browser = await logged_in(spawn_hub)
    guard.elevations.lock(kind="user", value=name, reason="laptop stolen", by="dave")
    page = await spawn_form(browser, name, "dev")
    assert "locked by an administrator (laptop stolen)" in page.text
    assert not spawn_hub.users[name].spawner.active
