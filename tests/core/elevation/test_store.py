"""The store itself: settings, storage failures kept out of user messages, JSON values."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from nbguard.elevation.models import ActiveElevation, ElevationGrant, Lock
from nbguard.elevation.store import ElevationStore, ElevationStoreError
from nbguard.errors import ConfigError, NBGuardError

from .conftest import new_request


@pytest.mark.parametrize(
    "ttl", [0, -1, 1.5, True, "60"], ids=["zero", "negative", "float", "bool", "text"]
)
def test_bad_ttl(sqlite_url: str, ttl: Any) -> None:
    """request_ttl_seconds must be a whole number of at least 1."""
    with pytest.raises(ConfigError, match="request_ttl_seconds"):
        ElevationStore(sqlite_url, request_ttl_seconds=ttl)


def test_in_memory_sqlite_refused() -> None:
    """An in-memory database, which would lose every grant on restart, is a ConfigError."""
    with pytest.raises(ConfigError):
        ElevationStore("sqlite://")


def test_unreachable_database() -> None:
    """A database that cannot be reached is an ElevationStoreError at startup."""
    with pytest.raises(ElevationStoreError) as caught:
        ElevationStore("postgresql://nobody@127.0.0.1:1/none")
    assert isinstance(caught.value, NBGuardError)


def test_storage_failure_hides_sql(sqlite_url: str, store: ElevationStore) -> None:
    """A failing database is an ElevationStoreError; SQL stays in the log message only."""
    request = new_request(store)
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as connection:
        connection.execute("DROP TABLE nbguard_elev_approvals")
    with pytest.raises(ElevationStoreError) as caught:
        store.get_request(request.id)
    assert "nbguard_elev_approvals" in str(caught.value)
    assert caught.value.user_message == "Elevation is unavailable right now; try again shortly."


def test_tables_created_once(sqlite_url: str, store: ElevationStore) -> None:
    """A second store on the same database finds the tables and the data already there."""
    request = new_request(store)
    again = ElevationStore(sqlite_url)
    try:
        assert again.get_request(request.id).id == request.id
    finally:
        again.close()
    assert Path(sqlite_url.removeprefix("sqlite:///")).exists()


def test_values_are_json_ready() -> None:
    """Every value's to_dict is plain JSON, with times in RFC 3339 UTC ending in Z."""
    grant = ElevationGrant(
        "grant-1",
        "req-1",
        "alice",
        "",
        "dataset.read",
        "dataset:x",
        0.5,
        60.0,
        False,
        None,
        "",
        "",
        "not_required",
        "",
        "",
        None,
    )
    lock = Lock("lock-1", "user", "alice", "why", "carol", 0.0, 10.0, None, "")
    values = [grant.to_dict(), lock.to_dict(), ActiveElevation.of([grant]).to_dict()]
    json.dumps(values)
    assert values[0]["starts"] == "1970-01-01T00:00:00.500000Z"
    assert values[1]["until"] == "1970-01-01T00:00:10.000000Z"
    assert values[2]["grants"] == [{"action": "dataset.read", "resource": "dataset:x"}]


@pytest.mark.parametrize(
    ("now", "active"),
    [(0.4, False), (0.5, True), (59.9, True), (60.0, False)],
    ids=["before", "start", "inside", "end"],
)
def test_grant_active_window(now: float, active: bool) -> None:
    """A grant is active from its start up to, not including, its expiry."""
    grant = ElevationGrant(
        "g", "r", "alice", "sre", "", "", 0.5, 60.0, True, None, "", "", "required", "", "", None
    )
    assert grant.active(now) is active
