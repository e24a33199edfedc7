"""Opening nbguard's SQLite databases: transactions begin as the stores expect."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from nbguard.database import normalise_url, open_engine, write_transaction


def test_write_transactions_hold_the_write_lock_and_commit(tmp_path: Path) -> None:
    """A write transaction takes SQLite's write lock at once and its rows are committed."""
    engine = open_engine(normalise_url(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    try:
        with write_transaction(engine) as connection:
            connection.execute(text("CREATE TABLE t (x INTEGER)"))
            connection.execute(text("INSERT INTO t VALUES (1)"))
            other = sqlite3.connect(tmp_path / "db.sqlite", timeout=0)
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            other.close()
        with engine.connect() as connection:
            assert connection.execute(text("SELECT x FROM t")).scalar_one() == 1
    finally:
        engine.dispose()


def test_a_busy_database_is_an_sqlalchemy_error(tmp_path: Path) -> None:
    """When another writer holds the lock past the busy timeout, BEGIN fails with
    SQLAlchemy's OperationalError (what the stores catch), not the driver's own."""
    path = tmp_path / "db.sqlite"
    engine = open_engine(normalise_url(f"sqlite:///{path}"))

    @event.listens_for(engine, "connect")
    def impatient(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=0")  # after nbguard's own setup

    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(OperationalError, match="locked"), write_transaction(engine):
            pass
    finally:
        holder.close()
        engine.dispose()
