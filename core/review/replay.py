"""A session assembled for review: its summary, timeline, integrity and provenance.

The same :class:`SessionReview` feeds the guard service's pages and API, the
exports and ``nbguard replay``, whether the records come from the ledger database
(through the incrementally maintained :class:`SessionIndex`) or from an export
file (indexed once into a throwaway index).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from nbguard.database import open_engine
from nbguard.errors import NotFoundError
from nbguard.ledger.store import LedgerStore
from nbguard.review.entries import Entry, ExportSource, store_entries, store_records
from nbguard.review.index import SessionIndex
from nbguard.review.integrity import LedgerStatus, export_status, record_status, store_status
from nbguard.review.timeline import Event, build_timeline

Progress = Callable[[int], None]


@dataclass
class SessionReview:
    """Everything a reviewer sees of one session."""

    session: str
    summary: dict[str, Any]
    entries: list[Entry]
    events: list[Event]
    ledger_id: str
    status: LedgerStatus
    resources: list[str]

    @property
    def seq_range(self) -> tuple[int, int]:
        """The first and last sequence numbers of the session's records."""
        seqs = [int(e["seq"]) for e in self.entries]
        return (min(seqs), max(seqs)) if seqs else (0, 0)

    @property
    def broken(self) -> list[int]:
        """Sequence numbers of shown records not proven intact."""
        return sorted({e.seq for e in self.events if e.integrity == "broken" and not e.derived})

    def provenance(self) -> dict[str, Any]:
        """Where the records come from and what proves them (export metadata)."""
        first, last = self.seq_range
        return {
            "session": self.session,
            "user": self.summary.get("user"),
            "ledger": self.ledger_id,
            "from_seq": first,
            "to_seq": last,
            "records": len(self.entries),
            "head": self.status.head,
            "checkpoint": self.status.checkpoint,
            "verified": self.status.verified,
            "failed_at": self.status.failed_at,
            "broken_records": self.broken,
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON the API returns."""
        return {
            "session": self.summary,
            "resources": self.resources,
            "integrity": {**self.status.to_dict(), "broken_records": self.broken},
            "provenance": self.provenance(),
            "events": [e.to_dict() for e in self.events],
        }


def assemble(
    session: str,
    summary: dict[str, Any],
    entries: list[Entry],
    ledger_id: str,
    status: LedgerStatus,
    resources: list[str],
) -> SessionReview:
    """Build the timeline and mark each event's integrity."""
    events = build_timeline(entries)
    by_seq = {int(e["seq"]): record_status(e, status) for e in entries}
    for event in events:
        event.integrity = by_seq.get(event.seq, "unknown")
    return SessionReview(session, summary, entries, events, ledger_id, status, resources)


def review_from_store(
    store: LedgerStore,
    index: SessionIndex,
    session: str,
    status: LedgerStatus,
) -> SessionReview:
    """One session from the ledger database; NotFoundError if the index has none.

    Bring the index up to date first (:func:`refresh_index`).
    """
    summary = index.session(session)
    if summary is None:
        raise NotFoundError("no such session")
    entries = store_records(store, index.members(session))
    return assemble(session, summary, entries, store.ledger_id, status, index.resources(session))


#: Records indexed per transaction when catching up with the ledger.
REFRESH_BATCH = 5_000


def refresh_index(
    store: LedgerStore,
    index: SessionIndex,
    progress: Progress | None = None,
    *,
    batch: int = REFRESH_BATCH,
) -> int:
    """Index the records appended since the last call; return how many.

    One short transaction per ``batch`` records: the index may live in the
    ledger's own database, where a transaction holding the write lock for a whole
    first pass (a million records: half a minute) would stall every append.
    Nothing new: no write transaction at all.
    """
    done = 0
    while True:
        chunk = list(islice(store_entries(store, after=index.indexed_seq(), batch=batch), batch))
        if not chunk:
            return done
        done += index.ingest(chunk)
        if progress is not None:
            progress(int(chunk[-1]["seq"]))


def ledger_status(store: LedgerStore, keys: Mapping[str, Ed25519PublicKey]) -> LedgerStatus:
    """The whole-ledger verdict (a full verification: cache it by head)."""
    return store_status(store, keys)


def review_from_export(
    path: str | Path,
    session: str,
    keys: Mapping[str, Ed25519PublicKey],
    *,
    progress: Progress | None = None,
) -> SessionReview:
    """One session from an export file: index it in a temporary database, then read
    the session's records in a second pass. NotFoundError if it has no such session."""
    source = ExportSource(path)
    with tempfile.TemporaryDirectory(prefix="nbguard-replay-") as folder:
        engine = open_engine(f"sqlite:///{Path(folder) / 'index.sqlite'}", synchronous="normal")
        try:
            index = SessionIndex(engine)
            index.ingest(_counted(source.entries(), progress))
            summary = index.session(session)
            if summary is None:
                raise NotFoundError(f"no session {session!r} in {path}")
            wanted = set(index.members(session))
            resources = index.resources(session)
        finally:
            engine.dispose()
    entries = list(source.entries(wanted))
    status = export_status(path, source.checkpoints, keys)
    return assemble(session, summary, entries, source.ledger_id, status, resources)


def _counted(entries: Any, progress: Progress | None) -> Any:
    for count, entry in enumerate(entries, start=1):
        if progress is not None and count % 20_000 == 0:
            progress(count)
        yield entry


def open_store_review(
    url: str,
    session: str,
    keys: Mapping[str, Ed25519PublicKey],
    *,
    progress: Progress | None = None,
) -> SessionReview:
    """One session from a ledger database URL, bringing the index in the ledger's own
    database up to date first (``progress(n)`` now and then while indexing)."""
    store = LedgerStore(url, create=False)
    try:
        index = SessionIndex(store.engine)
        refresh_index(store, index, progress)
        return review_from_store(store, index, session, ledger_status(store, keys))
    finally:
        store.close()
