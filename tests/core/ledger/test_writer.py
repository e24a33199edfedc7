"""Group commit: one completion per batch, resolved only after the batch's commit returns."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence

import pytest

from nbguard.errors import LedgerError
from nbguard.ledger.records import PreparedRecord, prepare_record
from nbguard.ledger.schemas import packaged_schemas
from nbguard.ledger.writer import Committed, GroupCommitWriter, PendingReceipt

from .conftest import access_body


class GatedStore:
    """A commit function that waits for ``gate`` and records each batch it committed."""

    def __init__(self, fail: bool = False) -> None:
        self.gate = threading.Event()
        #: Set once a commit has started (and waits for the gate).
        self.entered = threading.Event()
        self.batches: list[int] = []
        self.fail = fail
        self.next_seq = 1

    def __call__(self, records: Sequence[PreparedRecord]) -> Committed:
        self.entered.set()
        self.gate.wait(30)
        if self.fail:
            raise RuntimeError("disk full")
        first = self.next_seq
        self.next_seq += len(records)
        self.batches.append(len(records))
        return Committed(first, [f"{first + n:064x}" for n in range(len(records))])


def _records(count: int) -> list[PreparedRecord]:
    schemas = packaged_schemas()
    return [
        prepare_record(schemas, "access", access_body(n), actor="alice", session=None)
        for n in range(count)
    ]


@pytest.fixture
def gated() -> Iterator[tuple[GatedStore, GroupCommitWriter]]:
    """A writer over a gated commit function (the gate opens at teardown at the latest)."""
    store = GatedStore()
    writer = GroupCommitWriter(store, max_batch=4, max_delay=0.01, max_queue=100)
    yield store, writer
    store.gate.set()
    writer.close()


def test_receipts_wait_for_the_commit(gated: tuple[GatedStore, GroupCommitWriter]) -> None:
    """No receipt resolves before its batch's commit returns; then all do, in order."""
    store, writer = gated
    pending = [writer.submit(record) for record in _records(10)]
    with pytest.raises(TimeoutError):
        pending[0].result(timeout=0.05)
    assert not any(p.done() for p in pending)
    store.gate.set()
    receipts = [p.result(timeout=30) for p in pending]
    assert [r.seq for r in receipts] == list(range(1, 11))
    assert [r.hash for r in receipts] == [f"{n:064x}" for n in range(1, 11)]
    assert all(r.kind == "access" and r.time.endswith("Z") for r in receipts)
    assert all(size <= 4 for size in store.batches)


def test_done_callbacks_run_once_after_commit(gated: tuple[GatedStore, GroupCommitWriter]) -> None:
    """A callback added before the commit runs after it; one added afterwards runs at once."""
    store, writer = gated
    seen: list[tuple[str, int]] = []
    early = writer.submit(_records(1)[0])
    early.add_done_callback(lambda p: seen.append(("early", p.result(0).seq)))
    assert seen == []
    store.gate.set()
    early.result(timeout=30)
    early.add_done_callback(lambda p: seen.append(("late", p.result(0).seq)))
    writer.close()  # the early one runs on the writer thread, maybe after the late one
    assert sorted(seen) == [("early", 1), ("late", 1)]


def test_failed_commit_fails_every_record_of_the_batch() -> None:
    """When the commit raises, every receipt of that batch raises a LedgerError."""
    store = GatedStore(fail=True)
    store.gate.set()
    writer = GroupCommitWriter(store, max_batch=100, max_delay=0.05, max_queue=100)
    try:
        pending: list[PendingReceipt] = writer.submit_many(_records(5))
        for one in pending:
            with pytest.raises(LedgerError, match="disk full"):
                one.result(timeout=30)
            assert isinstance(one.exception(timeout=0), LedgerError)
    finally:
        writer.close()


def test_alone_record_gets_its_own_batch() -> None:
    """A record submitted alone is committed by itself, between the batches around it."""
    store = GatedStore()
    writer = GroupCommitWriter(store, max_batch=4, max_delay=0.3, max_queue=100)
    try:
        records = _records(5)
        before = [writer.submit(record) for record in records[:2]]
        alone = writer.submit(records[2], alone=True)
        after = [writer.submit(record) for record in records[3:]]
        store.gate.set()
        assert [p.result(timeout=30).seq for p in [*before, alone, *after]] == [1, 2, 3, 4, 5]
        assert store.batches == [2, 1, 2]
    finally:
        store.gate.set()
        writer.close()


@pytest.fixture
def busy() -> Iterator[tuple[GatedStore, GroupCommitWriter]]:
    """A writer with a 30 s ``max_delay`` that has just committed a batch of two (so it
    is busy: it waits for young batches to fill)."""
    store = GatedStore()
    writer = GroupCommitWriter(store, max_batch=100, max_delay=30.0, max_queue=100)
    records = _records(3)
    first = writer.submit(records[0])  # taken at once, held at the gate
    assert store.entered.wait(30)
    pair = [writer.submit(record) for record in records[1:]]
    store.gate.set()
    for pending in (first, *pair):
        pending.result(timeout=30)
    assert store.batches == [1, 2]
    yield store, writer
    writer.close()


def test_announced_batch_commits_once_no_announced_append_is_outstanding(
    busy: tuple[GatedStore, GroupCommitWriter],
) -> None:
    """A busy writer waits for an announced append still to come, then commits at once
    (well before ``max_delay``), with both records in one batch."""
    store, writer = busy
    first, second = writer.expect(), writer.expect()
    assert writer.expected == 2
    records = _records(2)
    early = writer.submit(records[0], expected=first)
    with pytest.raises(TimeoutError):  # ``second`` is still announced: worth waiting for
        early.result(timeout=0.2)
    late = writer.submit(records[1], expected=second)
    assert writer.expected == 0
    assert [early.result(timeout=10).seq, late.result(timeout=10).seq] == [4, 5]
    assert store.batches == [1, 2, 2]


def test_withdrawn_expectation_ends_the_wait(busy: tuple[GatedStore, GroupCommitWriter]) -> None:
    """Withdrawing the last outstanding announcement lets the waiting batch commit."""
    store, writer = busy
    used, unused = writer.expect(), writer.expect()
    pending = writer.submit(_records(1)[0], expected=used)
    with pytest.raises(TimeoutError):
        pending.result(timeout=0.2)
    unused.withdraw()
    unused.withdraw()  # settling twice changes nothing
    assert writer.expected == 0
    assert pending.result(timeout=10).seq == 4
    assert store.batches == [1, 2, 1]


def _one_announced_one_not(writer: GroupCommitWriter) -> list[PendingReceipt]:
    announced = writer.expect()
    records = _records(2)
    return [writer.submit(records[0], expected=announced), writer.submit(records[1])]


def _one_expectation_twice(writer: GroupCommitWriter) -> list[PendingReceipt]:
    announced, other = writer.expect(), writer.expect()
    pending = [writer.submit(record, expected=announced) for record in _records(2)]
    other.withdraw()
    return pending


@pytest.mark.parametrize(
    "submit",
    [
        pytest.param(_one_announced_one_not, id="unannounced-record"),
        pytest.param(_one_expectation_twice, id="expectation-reused"),
    ],
)
def test_batch_with_an_unannounced_record_keeps_the_plain_wait(
    busy: tuple[GatedStore, GroupCommitWriter],
    submit: Callable[[GroupCommitWriter], list[PendingReceipt]],
) -> None:
    """A batch holding an unannounced record (a second one passed a settled Expectation
    is unannounced too) waits for ``max_delay`` as before, even with no announcement
    outstanding; closing commits it."""
    store, writer = busy
    pending = submit(writer)
    assert writer.expected == 0
    with pytest.raises(TimeoutError):
        pending[0].result(timeout=0.3)
    writer.close()
    assert [p.result(timeout=0).seq for p in pending] == [4, 5]
    assert store.batches == [1, 2, 2]
