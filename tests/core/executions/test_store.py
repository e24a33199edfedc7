"""Storing batches: once per stream position, all or nothing, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from nbguard.errors import ConfigError, LedgerError
from nbguard.executions.store import Accepted, Added, ExecutionStore, ExecutionStoreError

from .conftest import batch, kernel_record, server_record


class Recorder:
    """An ``on_accept`` that keeps what it was given (thread-safe)."""

    def __init__(self) -> None:
        self.seen: list[Accepted] = []
        self.lock = threading.Lock()

    def __call__(self, accepted: list[Accepted]) -> None:
        with self.lock:
            self.seen.extend(accepted)


def test_a_retried_batch_is_stored_once(store: ExecutionStore) -> None:
    """The same batch twice: accepted, then all duplicates; on_accept sees each record once."""
    sent = batch("kernel", *(kernel_record(seq) for seq in range(3)))
    recorder = Recorder()
    first = store.add(
        user="alice", server="", batch=sent, privileged=[False] * 3, on_accept=recorder
    )
    again = store.add(
        user="alice", server="", batch=sent, privileged=[False] * 3, on_accept=recorder
    )
    assert (first.accepted, first.duplicates) == (3, 0)
    assert (again.accepted, again.duplicates) == (0, 3)
    assert [record.seq for record, _ in recorder.seen] == [0, 1, 2]
    assert store.count(user="alice") == 3


def test_a_partly_new_batch_passes_only_new_records_in_batch_order(store: ExecutionStore) -> None:
    """Overlapping batches: only the new positions are accepted, in the order sent."""
    store.add(user="alice", server="", batch=batch("kernel", kernel_record(1)), privileged=[True])
    recorder = Recorder()
    sent = batch("kernel", kernel_record(2), kernel_record(1), kernel_record(0))
    added = store.add(
        user="alice", server="", batch=sent, privileged=[True, False, False], on_accept=recorder
    )
    assert (added.accepted, added.duplicates) == (2, 1)
    assert [(r.seq, flag) for r, flag in recorder.seen] == [(2, True), (0, False)]


def test_positions_belong_to_their_user_and_witness(store: ExecutionStore) -> None:
    """Another user, or the other witness, never takes a stream position of someone else's."""
    sent = batch("kernel", kernel_record(0))
    assert store.add(user="mallory", server="", batch=sent, privileged=[False]).accepted == 1
    assert store.add(user="alice", server="", batch=sent, privileged=[False]).accepted == 1
    same_ids = server_record(0, instance="ki-1")
    assert (
        store.add(
            user="alice", server="", batch=batch("server", same_ids), privileged=[False]
        ).accepted
        == 1
    )


def test_a_failing_ledger_keeps_nothing(store: ExecutionStore) -> None:
    """If on_accept raises, the batch is not stored, so the retry is accepted in full."""

    def broken(accepted: list[Accepted]) -> None:
        raise LedgerError("ledger down")

    sent = batch("kernel", kernel_record(0), kernel_record(1))
    with pytest.raises(LedgerError):
        store.add(user="alice", server="", batch=sent, privileged=[False] * 2, on_accept=broken)
    assert store.count() == 0
    assert store.add(user="alice", server="", batch=sent, privileged=[False] * 2).accepted == 2


def test_one_flag_per_record(store: ExecutionStore) -> None:
    """The privileged flags must match the records one to one."""
    with pytest.raises(ValueError, match="one privileged flag"):
        store.add(user="alice", server="", batch=batch("kernel", kernel_record(0)), privileged=[])


def test_in_memory_sqlite_is_refused() -> None:
    """Records must outlive the process: an in-memory database is a configuration error."""
    with pytest.raises(ConfigError):
        ExecutionStore("sqlite://")


def test_storage_failures_keep_internals_out_of_the_user_message() -> None:
    """A database that cannot be opened is ExecutionStoreError; its user message says no more."""
    with pytest.raises(ExecutionStoreError) as caught:
        ExecutionStore("sqlite:////nonexistent/dir/guard.db")
    assert "unable to open database file" in str(caught.value)
    assert caught.value.user_message == ExecutionStoreError.default_user_message


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def replicas(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[list[ExecutionStore]]:
    """Four stores on one database (a SQLite file, then PostgreSQL), as replicas would have."""
    url = (
        str(request.getfixturevalue("postgres_url")) if request.param == "postgres" else sqlite_url
    )
    stores = [ExecutionStore(url) for _ in range(4)]
    yield stores
    for store in stores:
        store.close()


def test_replicas_racing_on_one_batch_store_it_once(replicas: list[ExecutionStore]) -> None:
    """The same batch through four replicas at once: every record accepted exactly once."""
    sent = batch("kernel", *(kernel_record(seq) for seq in range(50)))
    recorder = Recorder()
    start = threading.Barrier(len(replicas))

    def add(store: ExecutionStore) -> Added:
        start.wait()
        return store.add(
            user="alice", server="", batch=sent, privileged=[False] * 50, on_accept=recorder
        )

    with ThreadPoolExecutor(len(replicas)) as pool:
        results = [future.result(timeout=120) for future in [pool.submit(add, s) for s in replicas]]
    assert sum(r.accepted for r in results) == 50
    assert sum(r.duplicates for r in results) == 50 * (len(replicas) - 1)
    assert sorted(record.seq for record, _ in recorder.seen) == list(range(50))
    assert replicas[0].count() == 50
