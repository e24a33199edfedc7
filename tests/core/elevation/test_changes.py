"""The change watch and the standing cache: reused answers are exact, across replicas and time."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbguard.elevation.changes import ChangeWatch, StandingCache
from nbguard.elevation.store import ElevationStore

from .conftest import Clock, new_request


@pytest.fixture
def watch(sqlite_url: str) -> Iterator[ChangeWatch]:
    """A change watch on the test database."""
    changes = ChangeWatch(sqlite_url)
    yield changes
    changes.close()


@pytest.fixture
def replica(sqlite_url: str, clock: Clock) -> Iterator[ElevationStore]:
    """A second store on the same database, as another guard-service replica has."""
    other = ElevationStore(sqlite_url, clock=clock, request_ttl_seconds=3600)
    yield other
    other.close()


def grant_for(store: ElevationStore, **overrides: object) -> str:
    """Approve a request of alice's; the grant id."""
    request = new_request(store, **overrides)
    grant_id = store.decide(request.id, approver="bob", approve=True, comment="").grant_id
    assert grant_id is not None
    return grant_id


def test_version_moves_with_any_commit(store: ElevationStore, watch: ChangeWatch) -> None:
    """The version stays put while nothing is committed and moves after each commit."""
    first = watch.version()
    assert first is not None
    assert watch.version() == first
    store.lock(kind="user", value="alice", reason="test", by="root")
    second = watch.version()
    assert second != first
    assert watch.version() == second


def test_version_moves_with_another_process(
    store: ElevationStore, watch: ChangeWatch, tmp_path: Path
) -> None:
    """A commit by another process moves the version too."""
    before = watch.version()
    script = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('CREATE TABLE other_process (x INTEGER)')\n"
        "c.close()\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "guard.db")], check=True)
    assert watch.version() != before


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("postgresql+psycopg://u:p@127.0.0.1:1/nbguard", id="postgres"),
        pytest.param("sqlite://", id="sqlite-memory"),
    ],
)
def test_no_version_without_sqlite_file(url: str) -> None:
    """Without an SQLite file there is no version, so callers read every time."""
    changes = ChangeWatch(url)
    assert changes.version() is None
    changes.close()


def test_closed_watch_has_no_version(watch: ChangeWatch) -> None:
    """A closed watch answers None (read) rather than failing."""
    watch.close()
    assert watch.version() is None


def test_cache_sees_a_replicas_lock_and_unlock(
    store: ElevationStore, replica: ElevationStore, watch: ChangeWatch
) -> None:
    """A lock or unlock made by another replica counts on the very next call."""
    cache = StandingCache(store, watch)
    assert cache.standing("alice", device_id="d1")[1] == []
    assert cache.standing("alice", device_id="d1")[1] == []
    lock = replica.lock(kind="device", value="d1", reason="stolen", by="root")
    assert [found.id for found in cache.standing("alice", device_id="d1")[1]] == [lock.id]
    replica.unlock(lock.id, by="root")
    assert cache.standing("alice", device_id="d1")[1] == []


def test_cache_sees_a_replicas_grant_and_revocation(
    store: ElevationStore, replica: ElevationStore, watch: ChangeWatch
) -> None:
    """A grant or revocation made by another replica counts on the very next call."""
    cache = StandingCache(store, watch)
    assert not cache.standing("alice")[0].grant_ids
    grant_id = grant_for(replica)
    assert cache.standing("alice")[0].grant_ids == {grant_id}
    replica.revoke(grant_id, by="root", reason="done")
    assert not cache.standing("alice")[0].grant_ids


def test_cache_follows_the_clock(store: ElevationStore, watch: ChangeWatch, clock: Clock) -> None:
    """With no commit at all, grants and locks still start and end on time."""
    cache = StandingCache(store, watch)
    grant_id = grant_for(store, duration_seconds=600)
    lock = store.lock(kind="user", value="alice", reason="pause", by="root", until=clock.now + 60)
    elevation, locks = cache.standing("alice")
    assert (elevation.grant_ids, [found.id for found in locks]) == ({grant_id}, [lock.id])
    clock.advance(60)
    elevation, locks = cache.standing("alice")
    assert (elevation.grant_ids, locks) == ({grant_id}, [])
    clock.advance(540)
    assert not cache.standing("alice")[0].grant_ids


def test_cache_sees_a_grant_start(store: ElevationStore, watch: ChangeWatch, clock: Clock) -> None:
    """A grant that starts later than the read is counted from its start, and a clock
    set back re-reads rather than trusting an answer from its future."""
    grant_id = grant_for(store)
    clock.advance(-10)  # the grant now starts 10 s from the clock's point of view
    cache = StandingCache(store, watch)
    assert not cache.standing("alice")[0].grant_ids
    clock.advance(10)
    assert cache.standing("alice")[0].grant_ids == {grant_id}
    clock.advance(-10)
    assert not cache.standing("alice")[0].grant_ids


def test_cache_without_version_reads_every_time(
    store: ElevationStore, replica: ElevationStore, sqlite_url: str
) -> None:
    """A closed watch (as on PostgreSQL: no version) makes every call read the store."""
    watch = ChangeWatch(sqlite_url)
    watch.close()
    cache = StandingCache(store, watch)
    assert cache.standing("alice")[1] == []
    replica.lock(kind="user", value="alice", reason="x", by="root")
    assert len(cache.standing("alice")[1]) == 1


def test_standing_until_matches_standing(store: ElevationStore, clock: Clock) -> None:
    """standing_until answers as standing does, and says when that answer ends."""
    grant_id = grant_for(store, duration_seconds=600)
    store.lock(kind="user", value="alice", reason="x", by="root", until=clock.now + 30)
    found = store.standing_until("alice")
    elevation, locks = store.standing("alice")
    assert (found.elevation, list(found.locks)) == (elevation, locks)
    assert elevation.grant_ids == {grant_id}
    assert (found.read_at, found.until) == (clock.now, clock.now + 30)


def test_cache_takes_a_version_read_before_the_call(
    store: ElevationStore, replica: ElevationStore, watch: ChangeWatch
) -> None:
    """A version the caller read already stands for the watch's; a newer one sees new commits."""
    cache = StandingCache(store, watch)
    before = watch.version()
    assert cache.standing("alice", version=before)[1] == []
    lock = replica.lock(kind="user", value="alice", reason="test", by="root")
    # Read before the lock: the answer may be the one of that moment (nothing newer).
    assert cache.standing("alice", version=before)[1] == []
    after = watch.version()
    assert after != before
    assert [found.id for found in cache.standing("alice", version=after)[1]] == [lock.id]


def test_cache_without_a_version_reads_the_store(
    store: ElevationStore, replica: ElevationStore, watch: ChangeWatch
) -> None:
    """version=None (no exact version known) never reuses an answer."""
    cache = StandingCache(store, watch)
    assert cache.standing("alice", version=None)[1] == []
    lock = replica.lock(kind="user", value="alice", reason="test", by="root")
    assert [found.id for found in cache.standing("alice", version=None)[1]] == [lock.id]
