"""SessionPlayer.from_guard against the real guard service: a reviewer's token gets the
session, a data scientist's is refused."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from nbguard.hub_plugin.auth_state import read_state

from .conftest import guard_fixtures, load_guard_witnesses

pytest.importorskip("ipywidgets")

from nbguard.kernel_hooks.session_player import SessionPlayer

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def token_of(guard: Any, *roles: str) -> tuple[str, str]:
    """(name, API token) of a new signed-in user with ``roles``."""
    browser = await guard_fixtures.signed_in(guard, *roles)
    name = browser.name
    return name, guard.hub.users[name].new_api_token(note="player test")


async def test_reviewer_plays_a_session_from_the_guard(guard: Any) -> None:
    """The reviewer's player holds the session's cells (code as recorded) and starts at
    the first; a data scientist's token is refused with the guard's reason."""
    witnesses = load_guard_witnesses()
    alice = await guard_fixtures.server_client(guard, "data-scientist")
    kernel = witnesses.Kernel()
    sent = await witnesses.send(alice, "kernel", kernel.kernel_record(0), kernel.kernel_record(1))
    assert sent.status_code == 200, sent.text
    state = read_state(await guard.hub.users[alice.name].get_auth_state())
    assert state is not None
    _carol, token = await token_of(guard, "reviewer")
    player = await asyncio.to_thread(
        SessionPlayer.from_guard, state.session_id, url=guard.base, token=token
    )
    assert player.provenance["user"] == alice.name
    assert player.describe()["code"] == kernel.code(0)
    assert player.next() is True
    assert player.describe()["code"] == kernel.code(1)
    _dave, refused = await token_of(guard, "data-scientist")
    with pytest.raises(PermissionError, match="403"):
        await asyncio.to_thread(
            SessionPlayer.from_guard, state.session_id, url=guard.base, token=refused
        )
