"""Export a ledger as JSON Lines, and read such an export back for verification.

An export is one header line, then every checkpoint, then every record, each a
canonical JSON object (``docs/ledger-format.md``). It is taken from one database
snapshot, so it is consistent even while writers keep appending. A redacted
export replaces the personal fields by their commitment and still verifies.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import IO, Any

from nbguard.errors import ConfigError, LedgerIntegrityError
from nbguard.ledger.canonical import canonical_text, format_time
from nbguard.ledger.checkpoints import Checkpoint
from nbguard.ledger.records import GENESIS_HASH, ChainEntry, export_line, sealed_parts
from nbguard.ledger.schemas import SchemaRegistry
from nbguard.ledger.store import LedgerStore

EXPORT_TYPE = "nbguard.ledger.export"
EXPORT_VERSION = 2


def write_export(
    store: LedgerStore,
    out: IO[str],
    *,
    redact: bool = False,
    progress: Any = None,
    on_total: Any = None,
) -> int:
    """Write the ledger to ``out``; return the number of records written.

    ``on_total(n)`` is called once with the record count, ``progress(seq)`` now and then.
    """
    with store.snapshot() as snapshot:
        checkpoints = snapshot.checkpoints()
        total = snapshot.last_seq()
        if on_total is not None:
            on_total(total)
        header = {
            "type": EXPORT_TYPE,
            "v": EXPORT_VERSION,
            "ledger": snapshot.ledger_id,
            "records": total,
            "checkpoints": len(checkpoints),
            "redacted": redact,
            "exported_at": format_time(),
        }
        out.write(canonical_text(header) + "\n")
        for checkpoint in checkpoints:
            out.write(canonical_text(checkpoint.to_json()) + "\n")
        prev = GENESIS_HASH
        count = 0
        with closing(snapshot.rows()) as rows:
            for seq, core, personal, record_hash in rows:
                line = export_line(seq, prev, record_hash, core, personal, redact=redact)
                out.write(canonical_text(line) + "\n")
                prev = record_hash
                count += 1
                if progress is not None and count % 20_000 == 0:
                    progress(seq)
    return count


class ExportReader:
    """An open export: its header facts, its checkpoints, and a stream of its records."""

    def __init__(self, handle: IO[str], path: str, schemas: SchemaRegistry) -> None:
        self._handle = handle
        self._path = path
        self._schemas = schemas
        self._line = 1
        try:
            header = json.loads(handle.readline())
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("type") != EXPORT_TYPE:
            raise ConfigError(f"{path} is not an nbguard ledger export")
        if header.get("v") != EXPORT_VERSION:
            raise ConfigError(f"{path}: unsupported export version {header.get('v')!r}")
        self.ledger_id = str(header.get("ledger"))
        self.records = int(header.get("records", 0))
        self.checkpoints: list[Checkpoint] = []
        self._pending: dict[str, Any] | None = None
        for line in handle:
            self._line += 1
            data = self._json(line)
            if data.get("type") != "record":
                self.checkpoints.append(Checkpoint.from_json(data, where=self._where()))
                continue
            self._pending = data
            break

    def _where(self) -> str:
        return f"{self._path}:{self._line}"

    def _json(self, line: str) -> Any:
        try:
            return json.loads(line)
        except ValueError:
            raise LedgerIntegrityError(f"{self._where()}: not a JSON line") from None

    def entries(self) -> Iterator[ChainEntry]:
        """Yield each record line as a chain entry, in file order."""
        data = self._pending
        while data is not None:
            if data.get("type") != "record":
                raise LedgerIntegrityError(f"{self._where()}: a checkpoint after the records")
            core, commitment = sealed_parts(data, self._schemas)
            seq, prev, record_hash = data.get("seq"), data.get("prev"), data.get("hash")
            if (
                type(seq) is not int
                or not isinstance(prev, str)
                or not isinstance(record_hash, str)
            ):
                raise LedgerIntegrityError(f"{self._where()}: malformed record line")
            yield ChainEntry(seq, prev, core, commitment, record_hash)
            data = None
            for line in self._handle:
                self._line += 1
                if line.strip():
                    data = self._json(line)
                    break


@contextmanager
def read_export(path: str | Path, schemas: SchemaRegistry) -> Iterator[ExportReader]:
    """Open an export for reading; ConfigError if it is not one."""
    try:
        handle = open(path, encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    with handle:
        yield ExportReader(handle, str(path), schemas)
