"""Group commit: one thread turns queued appends into few, large transactions.

Callers queue prepared records and get a :class:`PendingReceipt`. Records are
gathered into batches as they are queued; the writer thread takes the oldest
batch (while appends overlap, waiting at most ``max_delay`` seconds for it to
fill up to ``max_batch``; a lone append on an idle ledger does not wait),
commits it in one transaction and only then completes the batch, so an
acknowledged record is always durable. A record submitted ``alone`` gets a batch,
and so a transaction, of its own.

One completion object serves a whole batch: a ``concurrent.futures.Future`` per
record (with its condition, lock and lists) cost more than hashing the record,
mostly in the garbage collector's scans of thousands of them in flight.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from nbguard.errors import LedgerError
from nbguard.ledger.records import PreparedRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Receipt:
    """Proof that a record is durably in the ledger: its place and its hash."""

    seq: int
    hash: str
    kind: str
    time: str


class Committed(NamedTuple):
    """What committing a batch gave: the first record's sequence number and every hash."""

    first_seq: int
    hashes: list[str]


#: Commits a batch of records in one transaction, in order.
CommitBatch = Callable[[Sequence[PreparedRecord]], Committed]
#: Called when the writer is idle; returns seconds until it wants calling again, or None.
IdleHook = Callable[[], "float | None"]
#: Called once a record's batch is committed or has failed.
DoneCallback = Callable[["PendingReceipt"], None]


class _Batch:
    """Records committed together, and the one completion they all wait on."""

    __slots__ = (
        "alone",
        "callbacks",
        "committed",
        "error",
        "event",
        "records",
        "stamps",
        "unannounced",
    )

    def __init__(self, alone: bool) -> None:
        self.alone = alone
        self.records: list[PreparedRecord] = []
        #: Records in the batch no :class:`Expectation` announced.
        self.unannounced = 0
        self.event = threading.Event()
        self.committed: Committed | None = None
        self.error: LedgerError | None = None
        #: ``(kind, time)`` of each record, kept after the records themselves are dropped.
        self.stamps: list[tuple[str, str]] = []
        self.callbacks: list[tuple[DoneCallback, PendingReceipt]] | None = []

    def finish(self, committed: Committed | None, error: LedgerError | None) -> None:
        # Runs on the writer thread only. The committed rows are no longer needed,
        # only what the receipts show.
        self.stamps = [(record.kind, record.time) for record in self.records]
        self.records = []
        self.committed = committed
        self.error = error
        self.event.set()
        with _callbacks_lock:
            callbacks, self.callbacks = self.callbacks, None
        for callback, pending in callbacks or ():
            _call(callback, pending)


#: Guards every batch's callback list (callbacks are rare: asyncio waiters).
_callbacks_lock = threading.Lock()


def _call(callback: DoneCallback, pending: PendingReceipt) -> None:
    try:
        callback(pending)
    except Exception:
        log.exception("ledger receipt callback %r failed", callback)


class PendingReceipt:
    """The promise of one queued record's :class:`Receipt`.

    ``result()`` returns the Receipt once the record's transaction has committed
    (under the ledger's ``synchronous`` setting), or raises the LedgerError that
    stopped it. It offers the parts of ``concurrent.futures.Future`` callers use:
    ``result``, ``exception``, ``done`` and ``add_done_callback``.
    """

    __slots__ = ("_batch", "_index")

    def __init__(self, batch: _Batch, index: int) -> None:
        self._batch = batch
        self._index = index

    def done(self) -> bool:
        """Whether the record is committed or failed."""
        return self._batch.event.is_set()

    def result(self, timeout: float | None = None) -> Receipt:
        """Wait until the record is durable and return its Receipt.

        Raises TimeoutError after ``timeout`` seconds, or the LedgerError of a
        failed commit (nothing of that batch was stored).
        """
        batch = self._batch
        if not batch.event.wait(timeout):
            raise TimeoutError(f"ledger record not committed within {timeout} s")
        committed = batch.committed
        if committed is None:
            raise batch.error or LedgerError("ledger record was not committed")
        index = self._index
        kind, moment = batch.stamps[index]
        return Receipt(committed.first_seq + index, committed.hashes[index], kind, moment)

    def exception(self, timeout: float | None = None) -> LedgerError | None:
        """Wait like ``result`` and return the commit's error, or None if it succeeded."""
        batch = self._batch
        if not batch.event.wait(timeout):
            raise TimeoutError(f"ledger record not committed within {timeout} s")
        return batch.error

    def add_done_callback(self, callback: DoneCallback) -> None:
        """Call ``callback(self)`` once the record is committed or failed.

        It runs on the writer thread (or at once, here, if that already happened),
        so it must be quick; exceptions it raises are logged.
        """
        batch = self._batch
        with _callbacks_lock:
            if batch.callbacks is not None:
                batch.callbacks.append((callback, self))
                return
        _call(callback, self)


class Expectation:
    """One announced append: see :meth:`GroupCommitWriter.expect`.

    Pass it to ``submit`` with the record it announced, or :meth:`withdraw` it
    when no record comes after all. Either settles it; settling twice is harmless.
    """

    __slots__ = ("_open", "_writer")

    def __init__(self, writer: GroupCommitWriter) -> None:
        self._writer = writer
        self._open = True

    def withdraw(self) -> None:
        """No record follows (any more): the writer stops waiting for one."""
        self._writer._settle(self)


class GroupCommitWriter:
    """The writer thread. Thread-safe; ``submit`` blocks only while the queue is full."""

    def __init__(
        self,
        commit: CommitBatch,
        *,
        max_batch: int,
        max_delay: float,
        max_queue: int,
        on_idle: IdleHook | None = None,
        name: str = "nbguard-ledger-writer",
    ) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._max_delay = max_delay
        self._max_queue = max_queue
        self._on_idle = on_idle
        self._batches: deque[_Batch] = deque()
        #: The batch group-commit records join; None once taken, full or followed by another.
        self._open: _Batch | None = None
        self._queued = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._room = threading.Condition(self._lock)
        self._closing = False
        self._idle_after: float | None = None
        #: Records in the batch taken last: more than one means appends are overlapping.
        self._last_taken = 0
        #: Announced appends (open Expectations) not yet submitted or withdrawn.
        self._expected = 0
        #: Whether the writer is waiting for a young batch to fill (so worth waking).
        self._filling = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def expect(self) -> Expectation:
        """Announce an append that is coming (settle it with ``submit`` or ``withdraw``).

        While announced appends are outstanding, a busy writer waits for them (at
        most ``max_delay``) as it always does; once none is, a batch made only of
        announced records is committed without waiting further. An Expectation
        never settled only costs that shortcut, never a record.
        """
        with self._lock:
            self._expected += 1
        return Expectation(self)

    @property
    def expected(self) -> int:
        """Announced appends outstanding (Expectations neither submitted nor withdrawn)."""
        return self._expected

    def _settle(self, expectation: Expectation) -> bool:
        # Under the lock, or taking it: True if this call closed ``expectation``.
        if not expectation._open:
            return False
        with self._lock:
            return self._close_expectation(expectation)

    def _close_expectation(self, expectation: Expectation) -> bool:
        # The caller holds the lock.
        if not expectation._open:
            return False
        expectation._open = False
        self._expected -= 1
        if self._expected == 0 and self._filling:
            self._wake.notify()  # the waiting writer may commit now
        return True

    def submit(
        self,
        record: PreparedRecord,
        *,
        alone: bool = False,
        expected: Expectation | None = None,
    ) -> PendingReceipt:
        """Queue a record; its PendingReceipt resolves once the record is committed.

        ``expected``: the Expectation that announced this record (see :meth:`expect`).
        """
        with self._lock:
            while self._queued >= self._max_queue and not self._closing:
                self._room.wait()
            if self._closing:
                raise LedgerError("the ledger is closed")
            batch = self._open
            if alone or batch is None or len(batch.records) >= self._max_batch:
                batch = _Batch(alone)
                self._batches.append(batch)
                self._open = None if alone else batch
                self._wake.notify()
            index = len(batch.records)
            batch.records.append(record)
            if expected is None or not self._close_expectation(expected):
                batch.unannounced += 1
            self._queued += 1
            if index + 1 >= self._max_batch:
                self._wake.notify()
        return PendingReceipt(batch, index)

    def submit_many(self, records: Sequence[PreparedRecord]) -> list[PendingReceipt]:
        """Queue records in order under one lock (group commit); one receipt per record."""
        receipts: list[PendingReceipt] = []
        with self._lock:
            while len(receipts) < len(records):
                while self._queued >= self._max_queue and not self._closing:
                    self._room.wait()
                if self._closing:
                    # Earlier parts are queued and will commit; say which did not.
                    raise LedgerError(
                        f"the ledger is closed ({len(records) - len(receipts)} records not queued)"
                    )
                batch = self._open
                if batch is None or len(batch.records) >= self._max_batch:
                    batch = self._open = _Batch(False)
                    self._batches.append(batch)
                start = len(receipts)
                room = min(
                    self._max_queue - self._queued,
                    self._max_batch - len(batch.records),
                    len(records) - start,
                )
                first = len(batch.records)
                batch.records.extend(records[start : start + room])
                batch.unannounced += room
                receipts.extend(PendingReceipt(batch, first + n) for n in range(room))
                self._queued += room
                self._wake.notify()
        return receipts

    def close(self, timeout: float | None = None) -> None:
        """Commit everything queued, then stop the thread."""
        with self._lock:
            self._closing = True
            self._wake.notify()
            self._room.notify_all()
        self._thread.join(timeout)

    def _take(self) -> _Batch | None:
        with self._lock:
            while not self._batches:
                if self._closing:
                    return None
                if not self._wake.wait(self._idle_after) and not self._batches:
                    return None if self._closing else _IDLE
            batch = self._batches[0]
            if self._max_delay > 0 and batch is self._open and self._last_taken > 1:
                # Busy (the last batch gathered several appends): let a young batch
                # fill, until it is full, another batch queues behind it (an alone
                # record), the delay is over, or we close; or, for a batch of
                # announced records only, until no announced append is outstanding.
                # An idle ledger commits a lone append at once: waiting would only
                # add latency.
                deadline = time.monotonic() + self._max_delay
                self._filling = True
                while (
                    len(batch.records) < self._max_batch
                    and len(self._batches) == 1
                    and not self._closing
                    and (batch.unannounced or self._expected)
                ):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._wake.wait(remaining)
                self._filling = False
            self._batches.popleft()
            if batch is self._open:
                self._open = None
            self._last_taken = len(batch.records)
            self._queued -= len(batch.records)
            self._room.notify_all()
            return batch

    def _run(self) -> None:
        while True:
            self._run_idle_hook()
            batch = self._take()
            if batch is None:
                return
            if batch is _IDLE:
                continue
            try:
                committed = self._commit(batch.records)
            except Exception as error:  # every waiter must hear about any failure
                failure = error if isinstance(error, LedgerError) else LedgerError(str(error))
                if failure is not error:
                    failure.__cause__ = error
                log.error("ledger batch of %d records failed: %s", len(batch.records), error)
                batch.finish(None, failure)
                continue
            if len(committed.hashes) != len(batch.records):  # pragma: no cover - store bug
                batch.finish(None, LedgerError("ledger store returned the wrong number of hashes"))
                continue
            batch.finish(committed, None)

    def _run_idle_hook(self) -> None:
        if self._on_idle is None:
            return
        try:
            self._idle_after = self._on_idle()
        except Exception:
            log.exception("ledger idle work failed; retrying in a second")
            self._idle_after = 1.0


#: Returned by ``_take`` when it timed out waiting: time for the idle hook.
_IDLE = _Batch(alone=False)
