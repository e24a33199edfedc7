"""Execution storage: what both witnesses reported, once each, in one SQL database.

SQLite (WAL) embedded, PostgreSQL for several guard-service replicas; the same
database as the elevation store and the catalog (``GuardService.db_url``).

A batch is stored in one write transaction: each record is inserted unless its
position ``(user, witness, kernel_id, instance, seq)`` is already taken (an
insert that ignores the conflict, on SQLite and on PostgreSQL), and the
caller's ``on_accept`` (the ledger append) runs inside the transaction, for the
records that were new. If it fails, nothing of the batch is kept and the
shipper's retry starts afresh; if the database commit fails after the ledger
accepted the records, the retry records them again (never zero times). On
PostgreSQL a replica inserting a position another replica has just inserted
waits for that transaction, so a batch retried through two replicas at once is
still recorded once.

Streams and records are inserted in a fixed order (by stream, then seq), so two
replicas storing overlapping batches lock rows in the same order and never
deadlock. The records are keyed by the token's user as well as by the stream:
nobody can take positions in another user's streams.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from nbguard.database import create_tables, normalise_url, open_engine, write_transaction
from nbguard.errors import NBGuardError
from nbguard.executions.models import KERNEL, ExecutionBatch, ExecutionRecord
from nbguard.executions.tables import (
    PENDING,
    UNPAIRABLE,
    metadata,
    passes_table,
    records_table,
    streams_table,
)

# Any constant: serialises table creation between replicas (pg_advisory_xact_lock).
_SCHEMA_LOCK = 0x6E6265786563

#: A newly stored record and whether the guard found a grant in force for it.
Accepted = tuple[ExecutionRecord, bool]


class ExecutionStoreError(NBGuardError):
    """The execution database failed; ``str()`` has the cause, ``user_message`` does not."""

    default_user_message = "Execution records cannot be stored right now; send them again later."


@dataclass(frozen=True, slots=True)
class Added:
    """What became of a batch: records stored now, and records already stored before."""

    accepted: int
    duplicates: int


def insert_unless_present(connection: Connection, table: Table, values: dict[str, Any]) -> bool:
    """INSERT ``values`` unless a unique constraint already holds them; True if inserted."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        statement: Any = postgresql.insert(table)
    elif dialect == "sqlite":
        statement = sqlite.insert(table)
    else:  # pragma: no cover - normalise_url admits only these two in practice
        raise ExecutionStoreError(f"execution store: unsupported database {dialect}")
    # RETURNING, not rowcount: PostgreSQL reports no rowcount for the INSERT ... RETURNING
    # SQLAlchemy makes of a table with a generated key.
    statement = statement.values(**values).on_conflict_do_nothing()
    returned = connection.execute(statement.returning(*table.primary_key.columns)).first()
    return returned is not None


class ExecutionStore:
    """Execution records of both witnesses. Thread-safe; any number per database."""

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time) -> None:
        """Open (creating missing tables in) the database at ``url``."""
        self.url = normalise_url(url, what="the execution store")
        self.clock = clock
        self.engine = open_engine(self.url)
        try:
            create_tables(self.engine, metadata, lock_key=_SCHEMA_LOCK)
            with write_transaction(self.engine) as connection:
                insert_unless_present(connection, passes_table, {"id": 1, "last_pass": 0.0})
        except SQLAlchemyError as error:
            self.engine.dispose()
            raise ExecutionStoreError(f"cannot open the execution database: {error}") from error

    def close(self) -> None:
        """Release every database connection."""
        self.engine.dispose()

    @contextmanager
    def _write(self, doing: str) -> Iterator[Connection]:
        try:
            with write_transaction(self.engine) as connection:
                yield connection
        except SQLAlchemyError as error:
            raise ExecutionStoreError(f"execution store: {doing} failed: {error}") from error

    @contextmanager
    def _read(self, doing: str) -> Iterator[Connection]:
        try:
            with self.engine.connect() as connection:
                yield connection
        except SQLAlchemyError as error:
            raise ExecutionStoreError(f"execution store: {doing} failed: {error}") from error

    # -- storing ------------------------------------------------------------------

    def add(
        self,
        *,
        user: str,
        server: str,
        batch: ExecutionBatch,
        privileged: Sequence[bool],
        on_accept: Callable[[list[Accepted]], None] | None = None,
    ) -> Added:
        """Store ``batch`` for ``user``'s ``server`` (both from the token, never the body).

        ``privileged[i]`` is the guard's verdict for ``batch.records[i]``.
        ``on_accept`` gets the records stored now, in batch order, inside the
        transaction: if it raises, nothing is kept and the error propagates.
        """
        if len(privileged) != len(batch.records):
            raise ValueError("one privileged flag per record")
        now = self.clock()
        order = sorted(
            range(len(batch.records)),
            key=lambda i: (
                batch.records[i].kernel_id,
                batch.records[i].instance,
                batch.records[i].seq,
            ),
        )
        new: set[int] = set()
        with self._write("storing execution records") as connection:
            streams: dict[tuple[str, str], int] = {}
            for i in order:
                record = batch.records[i]
                key = (record.kernel_id, record.instance)
                if key not in streams:
                    streams[key] = self._stream(
                        connection, user, server, batch.witness, record, now
                    )
                values = self._row(user, streams[key], record, privileged[i], now)
                if insert_unless_present(connection, records_table, values):
                    new.add(i)
            accepted = [(r, privileged[i]) for i, r in enumerate(batch.records) if i in new]
            if accepted and on_accept is not None:
                on_accept(accepted)
        return Added(accepted=len(accepted), duplicates=len(batch.records) - len(accepted))

    @staticmethod
    def _stream(
        connection: Connection,
        user: str,
        server: str,
        witness: str,
        record: ExecutionRecord,
        now: float,
    ) -> int:
        """The id of the record's stream, created at the first record seen."""
        key = {
            "user": user,
            "witness": witness,
            "kernel_id": record.kernel_id,
            "instance": record.instance,
        }
        insert_unless_present(
            connection,
            streams_table,
            {**key, "server": server, "checked_through": -1, "created": now},
        )
        table = streams_table
        found = connection.execute(
            select(table.c.id).where(*(table.c[name] == value for name, value in key.items()))
        ).scalar_one()
        return int(found)

    @staticmethod
    def _row(
        user: str, stream_id: int, record: ExecutionRecord, privileged: bool, now: float
    ) -> dict[str, Any]:
        pairable = record.msg_id or record.witness != KERNEL
        return {
            "stream_id": stream_id,
            "seq": record.seq,
            "user": user,
            "witness": record.witness,
            "kernel_id": record.kernel_id,
            "msg_id": record.msg_id,
            "cell_id": record.cell_id,
            "code_sha256": record.code_sha256,
            "status": record.status,
            "privileged": privileged,
            "claimed_privileged": record.claimed_privileged,
            "reported": record.moment,
            "arrived": now,
            "pair_state": PENDING if pairable else UNPAIRABLE,
        }

    def count(self, *, user: str | None = None) -> int:
        """How many records are stored (of ``user``, or of everyone)."""
        query = select(func.count()).select_from(records_table)
        if user is not None:
            query = query.where(records_table.c.user == user)
        with self._read("counting records") as connection:
            return int(connection.execute(query).scalar_one())
