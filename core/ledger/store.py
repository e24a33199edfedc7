"""Ledger storage through SQLAlchemy: SQLite (WAL) embedded, PostgreSQL in production.

Three tables: the records, the checkpoints, and a one-row *head* holding the last
sequence number and hash. Every write transaction first locks the head row
(``SELECT ... FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so any
number of writer processes on one database append in one total order with no
forks. Verification never trusts the head row; it only speeds up appends.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from nbguard.database import normalise_url, open_engine, write_transaction
from nbguard.errors import ConfigError, LedgerError
from nbguard.ledger.checkpoints import Checkpoint
from nbguard.ledger.records import GENESIS_HASH, PreparedRecord, seal
from nbguard.ledger.rows import Row, RowInserter

metadata = MetaData()
# SQLite makes only an INTEGER PRIMARY KEY the (fast) rowid.
_SEQ = BigInteger().with_variant(Integer, "sqlite")

records_table = Table(
    "nbguard_ledger_records",
    metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=False),
    Column("core", Text, nullable=False),
    Column("personal", Text, nullable=True),
    Column("hash", String(64), nullable=False),
)
checkpoints_table = Table(
    "nbguard_ledger_checkpoints",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("seq", BigInteger, nullable=False, index=True),
    Column("head", String(64), nullable=False),
    Column("time", String(40), nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("signature", Text, nullable=False),
)
head_table = Table(
    "nbguard_ledger_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("ledger_id", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("checkpoint_seq", BigInteger, nullable=False),
    Column("checkpoint_at", Float, nullable=False),
)

#: ``(seq, head, last checkpoint seq, its time.time(), force) -> checkpoint or None``;
#: called with the head locked, so the checkpoint it returns covers exactly ``head``.
Checkpointer = Callable[[int, str, int, float, bool], "Checkpoint | None"]

# Any constant: serialises table creation between processes (pg_advisory_xact_lock).
_SCHEMA_LOCK = 0x6E626775617264


class LedgerStore:
    """The ledger's tables in one database. Thread-safe; one per process is enough."""

    def __init__(self, url: str, *, synchronous: str = "full", create: bool = True) -> None:
        """Open (and with ``create``, initialise) the ledger in the database at ``url``.

        With ``create=False`` (readers: verify, export) a database without a ledger
        is a ConfigError rather than silently becoming an empty, "intact" ledger.
        """
        self.url = normalise_url(url, what="the ledger")
        self.synchronous = synchronous
        self.engine = open_engine(self.url, synchronous=synchronous)
        self.dialect = self.engine.dialect.name
        self._insert_rows = RowInserter(self.dialect)
        #: SQLite: the one connection writes go through, kept open between them
        #: (see :meth:`_write`); taken under ``_write_lock``.
        self._writer_connection: Connection | None = None
        self._write_lock = threading.Lock()
        # ``engine.dispose()`` releases that connection too, as it does the pool's.
        event.listen(self.engine, "engine_disposed", self._close_writer_connection)
        self._write_errors: tuple[type[Exception], ...] = (
            SQLAlchemyError,
            *self._insert_rows.driver_errors,
        )
        try:
            if not create and not inspect(self.engine).has_table(head_table.name):
                raise ConfigError(f"no nbguard ledger in {make_url(self.url)!r}")
            self.ledger_id = self._ensure_schema()
        except SQLAlchemyError as error:
            self.engine.dispose()
            raise LedgerError(f"cannot open ledger database: {error}") from error
        except ConfigError:
            self.engine.dispose()
            raise

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A connection in a write transaction, committed when the block ends without error.

        On SQLite every write goes through one connection kept open for them: the
        writes of one process queue for SQLite's single write lock anyway, and
        checking a pooled connection out and in again for each batch cost about
        a tenth of a small batch's CPU. A connection whose transaction failed is
        closed rather than reused. PostgreSQL takes a pooled connection each
        time, checked before use, so that one the server dropped is replaced.
        """
        if self.dialect != "sqlite":
            with write_transaction(self.engine, synchronous=self.synchronous) as connection:
                yield connection
            return
        with self._write_lock:
            if self._writer_connection is None:
                opened = self.engine.connect()
                self._writer_connection = opened.execution_options(nbguard_write=True)
            connection = self._writer_connection
            try:
                with connection.begin():
                    yield connection
            except BaseException:
                self._writer_connection = None
                connection.invalidate()
                connection.close()
                raise

    def _close_writer_connection(self, _engine: object = None) -> None:
        with self._write_lock:
            connection, self._writer_connection = self._writer_connection, None
        if connection is not None:
            # Closed for good, not handed back to a pool that may be gone: the last
            # connection to close checkpoints SQLite's WAL into the database file.
            connection.invalidate()
            connection.close()

    def _ensure_schema(self) -> str:
        with self._write() as connection:
            if self.dialect == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK})
            metadata.create_all(connection, checkfirst=True)
            ledger_id = connection.execute(
                select(head_table.c.ledger_id).where(head_table.c.id == 1)
            ).scalar_one_or_none()
            if ledger_id is None:
                ledger_id = uuid.uuid4().hex
                connection.execute(
                    insert(head_table).values(
                        id=1,
                        ledger_id=ledger_id,
                        seq=0,
                        hash=GENESIS_HASH,
                        checkpoint_seq=0,
                        checkpoint_at=time.time(),
                    )
                )
            return str(ledger_id)

    def append(
        self, prepared: Sequence[PreparedRecord], checkpointer: Checkpointer | None = None
    ) -> tuple[int, list[str], Checkpoint | None]:
        """Append records in one transaction; return the first seq, every hash and any checkpoint.

        The records get consecutive sequence numbers from the first one returned.
        Returns only after the commit, i.e. once the records are durable under
        the store's ``synchronous`` setting. Raises LedgerError if the database fails.
        """
        try:
            with self._write() as connection:
                seq, prev, cp_seq, cp_at = self._insert_rows.lock_head(connection)
                first = seq + 1
                rows: list[Row] = []
                hashes: list[str] = []
                for record in prepared:
                    seq += 1
                    prev = seal(seq, prev, record.core.encode(), record.commitment)
                    rows.append((seq, record.core, record.personal, prev))
                    hashes.append(prev)
                if rows:
                    self._insert_rows(connection, rows)
                checkpoint = self._checkpoint(
                    connection, seq, prev, cp_seq, cp_at, checkpointer, force=False
                )
                self._insert_rows.move_head(
                    connection, seq, prev, checkpointed=checkpoint is not None
                )
        except self._write_errors as error:
            raise LedgerError(f"ledger write failed: {error}") from error
        return first, hashes, checkpoint

    def checkpoint(self, checkpointer: Checkpointer, *, force: bool) -> Checkpoint | None:
        """Sign the current head if ``checkpointer`` finds it due (or ``force``) and unsigned."""
        try:
            with self._write() as connection:
                seq, prev, cp_seq, cp_at = self._insert_rows.lock_head(connection)
                checkpoint = self._checkpoint(
                    connection, seq, prev, cp_seq, cp_at, checkpointer, force
                )
                if checkpoint is not None:
                    self._insert_rows.move_head(connection, seq, prev, checkpointed=True)
                return checkpoint
        except self._write_errors as error:
            raise LedgerError(f"ledger checkpoint failed: {error}") from error

    def _checkpoint(
        self,
        connection: Connection,
        seq: int,
        head: str,
        cp_seq: int,
        cp_at: float,
        checkpointer: Checkpointer | None,
        force: bool,
    ) -> Checkpoint | None:
        """Sign and store a checkpoint of ``head`` if it is due; the caller then moves the
        head row with ``checkpointed=True``."""
        if checkpointer is None or seq <= cp_seq:
            return None
        checkpoint = checkpointer(seq, head, cp_seq, cp_at, force)
        if checkpoint is not None:
            self._insert_rows.insert_checkpoint(connection, checkpoint)
        return checkpoint

    @contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        """Yield a consistent read-only view of the ledger (one database snapshot)."""
        with self.engine.connect() as connection:
            if self.dialect == "postgresql":
                connection = connection.execution_options(isolation_level="REPEATABLE READ")
            with connection.begin():
                yield Snapshot(connection)

    def close(self) -> None:
        """Release every database connection."""
        self._close_writer_connection()
        self.engine.dispose()


class Snapshot:
    """What one read transaction sees: records, checkpoints and the ledger id."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.dialect = connection.dialect.name

    @property
    def driver(self) -> Any:
        """The DB-API connection under this snapshot, in its read transaction."""
        return self._connection.connection.driver_connection

    def helper_job(self) -> dict[str, Any]:
        """How a helper process joins this read: driver connect arguments and, on
        PostgreSQL, this transaction's exported snapshot (the credentials included:
        send it over a pipe, never on a command line)."""
        engine = self._connection.engine
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        plain = (str, int, float, bool)
        job: dict[str, Any] = {
            "dialect": self.dialect,
            "args": [value for value in args if isinstance(value, plain)],
            "kwargs": {key: value for key, value in kwargs.items() if isinstance(value, plain)},
        }
        if self.dialect == "postgresql":
            job["snapshot"] = str(
                self._connection.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
            )
        return job

    @property
    def ledger_id(self) -> str:
        """The random id the ledger got when it was created (part of every checkpoint)."""
        return str(self._connection.execute(select(head_table.c.ledger_id)).scalar_one())

    def last_seq(self) -> int:
        """The highest stored sequence number (0 when empty), read from the records."""
        return int(self._connection.execute(select(func.max(records_table.c.seq))).scalar() or 0)

    def checkpoints(self) -> list[Checkpoint]:
        """Every stored checkpoint, in sequence order."""
        columns = checkpoints_table.c
        result = self._connection.execute(
            select(
                columns.seq, columns.head, columns.time, columns.key_id, columns.signature
            ).order_by(columns.seq, columns.id)
        )
        ledger = self.ledger_id
        return [Checkpoint(ledger, int(r[0]), r[1], r[2], r[3], r[4]) for r in result]

    def rows(self, batch: int = 10_000) -> Generator[tuple[int, str, str | None, str]]:
        """Stream ``(seq, core, personal, hash)`` for every record in sequence order.

        Close the generator when stopping early (``contextlib.closing``): on
        PostgreSQL it holds a server-side cursor.
        """
        columns = records_table.c
        query = select(columns.seq, columns.core, columns.personal, columns.hash).order_by(
            columns.seq
        )
        if self._connection.dialect.name == "sqlite":
            # The driver's own cursor, inside this snapshot's transaction: SQLAlchemy's
            # per-row result processing costs as much as the rest of verifying a row.
            cursor = self._connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(str(query.compile(dialect=self._connection.dialect)))
                while chunk := cursor.fetchmany(batch):
                    yield from chunk
            finally:
                cursor.close()
            return
        result = self._connection.execution_options(yield_per=batch).execute(query)
        try:
            for partition in result.partitions():
                for row in partition:
                    yield row[0], row[1], row[2], row[3]
        finally:
            result.close()
