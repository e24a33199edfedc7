"""Ledger records as review reads them: one export line per record, from either source.

Review works on *entries*, the JSON objects ``nbguard ledger export`` writes for
records (``seq``, ``prev``, ``hash``, ``record`` with personal values in place,
``salts``), whether they come from the ledger database or from an export file.
So a session read from either is verified and exported the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from sqlalchemy import select

from nbguard.errors import ConfigError, LedgerIntegrityError
from nbguard.ledger.checkpoints import Checkpoint
from nbguard.ledger.export import EXPORT_TYPE, read_export
from nbguard.ledger.records import GENESIS_HASH, export_line
from nbguard.ledger.schemas import packaged_schemas
from nbguard.ledger.store import LedgerStore, records_table

Entry = dict[str, Any]

#: Records read per query when streaming a database ledger.
BATCH = 5_000


def store_entries(store: LedgerStore, after: int = 0, batch: int = BATCH) -> Iterator[Entry]:
    """Every record with ``seq > after`` in sequence order, as export lines."""
    columns = records_table.c
    prev: str | None = None
    while True:
        if prev is None:
            prev = _hash_of(store, after) if after else GENESIS_HASH
        with store.engine.connect() as connection:  # one short read per batch
            rows = connection.execute(
                select(columns.seq, columns.core, columns.personal, columns.hash)
                .where(columns.seq > after)
                .order_by(columns.seq)
                .limit(batch)
            ).all()
        if not rows:
            return
        for seq, core, personal, record_hash in rows:
            yield export_line(int(seq), prev, record_hash, core, personal, redact=False)
            prev = record_hash
            after = int(seq)


def _hash_of(store: LedgerStore, seq: int) -> str:
    with store.engine.connect() as connection:
        found = connection.execute(
            select(records_table.c.hash).where(records_table.c.seq == seq)
        ).scalar()
    return str(found) if found is not None else GENESIS_HASH


def store_records(store: LedgerStore, seqs: Iterable[int]) -> list[Entry]:
    """The records ``seqs`` (in sequence order) as export lines, each with the stored
    hash of the record before it as ``prev`` (what its own hash chains from)."""
    wanted = sorted(set(seqs))
    if not wanted:
        return []
    columns = records_table.c
    needed = sorted(set(wanted) | {s - 1 for s in wanted if s > 1})
    found: dict[int, tuple[str, str | None, str]] = {}
    with store.engine.connect() as connection:
        for start in range(0, len(needed), 900):  # stay under SQLite's variable limit
            chunk = needed[start : start + 900]
            for seq, core, personal, record_hash in connection.execute(
                select(columns.seq, columns.core, columns.personal, columns.hash).where(
                    columns.seq.in_(chunk)
                )
            ):
                found[int(seq)] = (core, personal, record_hash)
    entries = []
    for seq in wanted:
        if seq not in found:
            continue
        core, personal, record_hash = found[seq]
        prev = found[seq - 1][2] if seq - 1 in found else GENESIS_HASH
        entries.append(export_line(seq, prev, record_hash, core, personal, redact=False))
    return entries


class ExportSource:
    """An export file (``nbguard ledger export``) read as a stream of entries."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with read_export(self.path, packaged_schemas()) as reader:
            self.ledger_id = reader.ledger_id
            self.records = reader.records
            self.checkpoints: list[Checkpoint] = list(reader.checkpoints)

    def entries(self, wanted: set[int] | None = None) -> Iterator[Entry]:
        """Every record line (or only those whose ``seq`` is in ``wanted``), in file order."""
        try:
            handle = open(self.path, encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as error:
            raise ConfigError(f"cannot read {self.path}: {error.strerror}") from None
        with closing(handle):
            for number, line in enumerate(handle, start=1):
                if '"type":"record"' not in line:
                    continue  # the header and the checkpoints
                try:
                    data = json.loads(line)
                except ValueError:
                    raise LedgerIntegrityError(f"{self.path}:{number}: not a JSON line") from None
                if not isinstance(data, dict) or data.get("type") != "record":
                    continue
                if wanted is None or data.get("seq") in wanted:
                    yield data


def is_export(path: str | Path) -> bool:
    """True if ``path`` starts like an nbguard export (its header line)."""
    try:
        with open(path, encoding="utf-8") as handle:
            first = handle.readline(4096)
    except (OSError, UnicodeDecodeError):
        return False
    return f'"type":"{EXPORT_TYPE}"' in first
