"""The hot path of group commit, per database driver: lock the head, insert rows (and a
checkpoint), move the head.

The statements go straight to the DBAPI driver inside the SQLAlchemy transaction,
not through Core constructs: building and compiling those cost more per batch
than the statements themselves, and per row more than hashing the record.

* SQLite: one multi-row ``INSERT ... VALUES (...), (...)`` per batch (or per
  chunk, if the library limits parameters). The ``sqlite3`` module releases the
  GIL around every statement step, and ``executemany`` steps once per row; with a
  caller thread busy preparing records, each re-acquisition can wait out the
  interpreter's switch interval. Fewer, bigger steps avoid that.
* PostgreSQL (psycopg 3): ``COPY ... FROM STDIN`` of the batch formatted here as
  one block of COPY text, one round trip instead of a pipelined ``INSERT`` per row.
* Anything else: the driver's ``executemany``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection

from nbguard.ledger.checkpoints import Checkpoint

#: ``(seq, core, personal, hash)`` of one record, as stored.
Row = tuple[int, str, "str | None", str]

_TABLE = "nbguard_ledger_records"
_HEAD = "nbguard_ledger_head"
_CHECKPOINTS = "nbguard_ledger_checkpoints"
_COLUMNS = "(seq, core, personal, hash)"
#: Most rows per SQLite statement (a default batch in one step), unless the
#: library allows fewer than 4 parameters per row for that (before SQLite 3.32: 999).
_SQLITE_CHUNK = 1000


class RowInserter:
    """Inserts a batch of record rows on an open SQLAlchemy connection (in its transaction)."""

    def __init__(self, dialect: str) -> None:
        self._dialect = dialect
        self._sqlite_statements: dict[int, str] = {}
        self._sqlite_chunk: int | None = None
        mark = "?" if dialect == "sqlite" else "%s"
        lock = " FOR UPDATE" if dialect == "postgresql" else ""  # SQLite: BEGIN IMMEDIATE
        self._lock_sql = (
            f"SELECT seq, hash, checkpoint_seq, checkpoint_at FROM {_HEAD} WHERE id = 1{lock}"  # noqa: S608
        )
        self._move_sql = f"UPDATE {_HEAD} SET seq = {mark}, hash = {mark} WHERE id = 1"  # noqa: S608
        self._move_signed_sql = (
            f"UPDATE {_HEAD} SET seq = {mark}, hash = {mark}, checkpoint_seq = {mark}, "  # noqa: S608
            f"checkpoint_at = {mark} WHERE id = 1"
        )
        self._checkpoint_sql = (
            f"INSERT INTO {_CHECKPOINTS} (seq, head, time, key_id, signature) "  # noqa: S608
            f"VALUES ({', '.join([mark] * 5)})"
        )
        #: The driver's own exception root, raised by these statements.
        self.driver_errors: tuple[type[Exception], ...] = _driver_errors(dialect)

    def lock_head(self, connection: Connection) -> tuple[int, str, int, float]:
        """Lock the head row for this transaction; return ``(seq, hash, checkpoint seq, at)``."""
        cursor = _dbapi(connection).cursor()
        try:
            cursor.execute(self._lock_sql)
            seq, head, checkpoint_seq, checkpoint_at = cursor.fetchone()
        finally:
            cursor.close()
        return int(seq), str(head), int(checkpoint_seq), float(checkpoint_at)

    def move_head(
        self, connection: Connection, seq: int, head: str, *, checkpointed: bool = False
    ) -> None:
        """Set the head row to record ``seq`` with hash ``head`` (and, ``checkpointed``, note
        that a checkpoint of it was stored now): one statement."""
        cursor = _dbapi(connection).cursor()
        try:
            if checkpointed:
                cursor.execute(self._move_signed_sql, (seq, head, seq, time.time()))
            else:
                cursor.execute(self._move_sql, (seq, head))
        finally:
            cursor.close()

    def insert_checkpoint(self, connection: Connection, checkpoint: Checkpoint) -> None:
        """Store a signed checkpoint."""
        cursor = _dbapi(connection).cursor()
        try:
            cursor.execute(
                self._checkpoint_sql,
                (
                    checkpoint.seq,
                    checkpoint.head,
                    checkpoint.time,
                    checkpoint.key_id,
                    checkpoint.signature,
                ),
            )
        finally:
            cursor.close()

    def __call__(self, connection: Connection, rows: Sequence[Row]) -> None:
        """Insert ``rows``; database errors surface as SQLAlchemy or driver exceptions."""
        if self._dialect == "sqlite":
            self._sqlite(connection, rows)
        elif self._dialect == "postgresql":
            self._copy(connection, rows)
        else:  # pragma: no cover - only SQLite and PostgreSQL are supported
            mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
            sql = f"INSERT INTO {_TABLE} {_COLUMNS} VALUES ({', '.join([mark] * 4)})"  # noqa: S608
            connection.exec_driver_sql(sql, list(rows))

    def _sqlite(self, connection: Connection, rows: Sequence[Row]) -> None:
        driver = _dbapi(connection)
        if self._sqlite_chunk is None:
            limit = driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            self._sqlite_chunk = max(1, min(_SQLITE_CHUNK, limit // 4))
        step = self._sqlite_chunk
        cursor = driver.cursor()
        try:
            for start in range(0, len(rows), step):
                chunk = rows[start : start + step]
                params: list[Any] = []
                for row in chunk:
                    params.extend(row)
                cursor.execute(self._sqlite_statement(len(chunk)), params)
        finally:
            cursor.close()

    def _sqlite_statement(self, count: int) -> str:
        sql = self._sqlite_statements.get(count)
        if sql is None:
            values = ",".join(["(?,?,?,?)"] * count)
            sql = f"INSERT INTO {_TABLE} {_COLUMNS} VALUES {values}"  # noqa: S608
            self._sqlite_statements[count] = sql
        return sql

    @staticmethod
    def _copy(connection: Connection, rows: Sequence[Row]) -> None:
        # The whole batch as one block of COPY text: written row by row, psycopg
        # flushes every 32 KiB, and each flush hands the GIL back and forth.
        payload = "".join(
            [
                f"{seq}\t{_copy_text(core)}\t{_copy_text(personal)}\t{record_hash}\n"
                for seq, core, personal, record_hash in rows
            ]
        )
        driver = _dbapi(connection)
        with (
            driver.cursor() as cursor,
            cursor.copy(f"COPY {_TABLE} {_COLUMNS} FROM STDIN") as copy,
        ):
            copy.write(payload.encode(driver.info.encoding))


def _copy_text(value: str | None) -> str:
    """A column value in COPY's text format: backslash escapes, ``\\N`` for NULL."""
    if value is None:
        return "\\N"
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    # Canonical JSON escapes every control character, so none of these occur in
    # what the ledger writes; escaped all the same, so no value can break a row.
    return value.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def _dbapi(connection: Connection) -> Any:
    # The driver connection under SQLAlchemy's, in the same transaction.
    return connection.connection.driver_connection


def _driver_errors(dialect: str) -> tuple[type[Exception], ...]:
    if dialect == "sqlite":
        import sqlite3

        return (sqlite3.Error,)
    if dialect == "postgresql":
        import psycopg

        return (psycopg.Error,)
    return ()  # pragma: no cover - only SQLite and PostgreSQL are supported
