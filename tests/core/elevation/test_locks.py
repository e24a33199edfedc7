"""Locks on users and devices: creation, expiry, lifting, and the per-request lookup."""

from __future__ import annotations

from typing import Any

import pytest

from nbguard.elevation.store import ElevationStore
from nbguard.errors import ConflictError, NotFoundError, RequestError

from .conftest import Clock


def test_locks_for_user_and_device(store: ElevationStore, clock: Clock) -> None:
    """locks_for finds active locks on the user or the device, never on a same-named other kind."""
    user = store.lock(kind="user", value="alice", reason="compromised", by="carol")
    device = store.lock(kind="device", value="laptop-7", reason="lost", by="carol")
    store.lock(kind="device", value="alice", reason="a device called alice", by="carol")
    store.lock(kind="user", value="bob", reason="left", by="carol")
    assert user.id.startswith("lock-")
    assert user.active(clock.now)
    assert user.to_dict()["until"] is None
    assert {lock.id for lock in store.locks_for(user="alice")} == {user.id}
    assert {lock.id for lock in store.locks_for(user="alice", device_id="laptop-7")} == {
        user.id,
        device.id,
    }
    assert [lock.id for lock in store.locks_for(user="dave", device_id="laptop-7")] == [device.id]
    assert store.locks_for(user="dave", device_id="laptop-8") == []


def test_lock_until_runs_out(store: ElevationStore, clock: Clock) -> None:
    """A lock with ``until`` stops holding then, and cannot be lifted afterwards."""
    lock = store.lock(
        kind="user", value="alice", reason="cool-off", by="carol", until=clock.now + 60
    )
    clock.advance(59)
    assert [item.id for item in store.locks_for(user="alice")] == [lock.id]
    clock.advance(1)
    assert store.locks_for(user="alice") == []
    assert store.list_locks() == []
    assert [item.id for item in store.list_locks(active_only=False)] == [lock.id]
    with pytest.raises(ConflictError, match="no longer active"):
        store.unlock(lock.id, by="carol")


def test_unlock(store: ElevationStore, clock: Clock) -> None:
    """Lifting records who and when, ends the lock, and happens once."""
    lock = store.lock(kind="device", value="laptop-7", reason="lost", by="carol")
    clock.advance(5)
    lifted = store.unlock(lock.id, by="dave")
    assert (lifted.lifted, lifted.lifted_by) == (clock.now, "dave")
    assert not lifted.active(clock.now)
    assert store.locks_for(user="x", device_id="laptop-7") == []
    with pytest.raises(ConflictError, match="no longer active"):
        store.unlock(lock.id, by="dave")
    with pytest.raises(NotFoundError):
        store.unlock("lock-nope", by="dave")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"kind": "team"}, "kind must be one of user, device", id="kind"),
        pytest.param({"value": ""}, "value is required", id="value-empty"),
        pytest.param({"value": "a\tb"}, "value must be printable", id="value-control"),
        pytest.param({"reason": ""}, "reason is required", id="reason"),
        pytest.param({"by": " carol"}, "by must be printable", id="by"),
        pytest.param({"until": 0.0}, "until must be a time in the future", id="until-past"),
        pytest.param({"until": "tomorrow"}, "until must be a time", id="until-text"),
    ],
)
def test_bad_locks(store: ElevationStore, overrides: dict[str, Any], message: str) -> None:
    """Each bad lock field is a RequestError naming it; nothing is stored."""
    values: dict[str, Any] = {"kind": "user", "value": "alice", "reason": "why", "by": "carol"}
    values.update(overrides)
    with pytest.raises(RequestError, match=message):
        store.lock(**values)
    assert store.list_locks(active_only=False) == []
