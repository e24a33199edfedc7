"""Group commit: one thread turns queued appends into few, large transactions.

Callers queue prepared records and get a future. The writer thread takes what is
queued (waiting at most ``max_delay`` seconds for a batch to fill up to
``max_batch``), commits it in one transaction and only then resolves the futures,
so an acknowledged record is always durable. A record submitted ``alone`` is
committed in a transaction of its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

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


#: Commits a batch and returns each record's ``(seq, hash)``, in order.
CommitBatch = Callable[[Sequence[PreparedRecord]], list[tuple[int, str]]]
#: Called when the writer is idle; returns seconds until it wants calling again, or None.
IdleHook = Callable[[], "float | None"]


class _Pending:
    __slots__ = ("alone", "future", "record")

    def __init__(self, record: PreparedRecord, alone: bool) -> None:
        self.record = record
        self.alone = alone
        self.future: Future[Receipt] = Future()


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
        self._queue: deque[_Pending] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._room = threading.Condition(self._lock)
        self._closing = False
        self._idle_after: float | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, record: PreparedRecord, *, alone: bool = False) -> Future[Receipt]:
        """Queue a record; the future resolves to its Receipt once committed."""
        pending = _Pending(record, alone)
        with self._lock:
            while len(self._queue) >= self._max_queue and not self._closing:
                self._room.wait()
            if self._closing:
                raise LedgerError("the ledger is closed")
            self._queue.append(pending)
            if len(self._queue) == 1 or alone or len(self._queue) >= self._max_batch:
                self._wake.notify()
        return pending.future

    def submit_many(self, records: Sequence[PreparedRecord]) -> list[Future[Receipt]]:
        """Queue records in order under one lock (group commit only); one future per record."""
        pendings = [_Pending(record, False) for record in records]
        queued = 0
        with self._lock:
            while queued < len(pendings):
                while len(self._queue) >= self._max_queue and not self._closing:
                    self._room.wait()
                if self._closing:
                    # Earlier parts are queued and will commit; say which did not.
                    raise LedgerError(
                        f"the ledger is closed ({len(pendings) - queued} records not queued)"
                    )
                room = self._max_queue - len(self._queue)
                self._queue.extend(pendings[queued : queued + room])
                queued += min(room, len(pendings) - queued)
                self._wake.notify()
        return [pending.future for pending in pendings]

    def close(self, timeout: float | None = None) -> None:
        """Commit everything queued, then stop the thread."""
        with self._lock:
            self._closing = True
            self._wake.notify()
            self._room.notify_all()
        self._thread.join(timeout)

    def _take(self) -> list[_Pending] | None:
        with self._lock:
            while not self._queue:
                if self._closing:
                    return None
                if not self._wake.wait(self._idle_after) and not self._queue:
                    return []  # timed out: time for the idle hook
            if self._max_delay > 0 and not self._closing:
                deadline = time.monotonic() + self._max_delay
                while len(self._queue) < self._max_batch and not self._queue[-1].alone:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._closing:
                        break
                    self._wake.wait(remaining)
            batch = [self._queue.popleft()]
            if not batch[0].alone:
                while self._queue and len(batch) < self._max_batch and not self._queue[0].alone:
                    batch.append(self._queue.popleft())
            self._room.notify_all()
            return batch

    def _run(self) -> None:
        while True:
            self._run_idle_hook()
            batch = self._take()
            if batch is None:
                return
            if not batch:
                continue
            try:
                results = self._commit([pending.record for pending in batch])
            except Exception as error:  # every waiter must hear about any failure
                failure = error if isinstance(error, LedgerError) else LedgerError(str(error))
                if failure is not error:
                    failure.__cause__ = error
                log.error("ledger batch of %d records failed: %s", len(batch), error)
                for pending in batch:
                    pending.future.set_exception(failure)
                continue
            for pending, (seq, record_hash) in zip(batch, results, strict=True):
                record = pending.record
                pending.future.set_result(Receipt(seq, record_hash, record.kind, record.time))

    def _run_idle_hook(self) -> None:
        if self._on_idle is None:
            return
        try:
            self._idle_after = self._on_idle()
        except Exception:
            log.exception("ledger idle work failed; retrying in a second")
            self._idle_after = 1.0
