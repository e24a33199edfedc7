"""Opening nbguard's databases: SQLite (WAL) embedded, PostgreSQL in production.

Every store nbguard keeps (the ledger, the guard service's requests, grants,
locks and catalog) opens its engine here, so that URLs are read one way and
SQLite is set up one way: WAL journal, a busy timeout instead of instant
"database is locked" errors, and write transactions that take the write lock up
front (``BEGIN IMMEDIATE``), so that two writers never both read a row and then
collide. On PostgreSQL, write transactions lock the rows they decide on
(``SELECT ... FOR UPDATE``) in the stores themselves, and pooled connections are
checked before use, so connections the server dropped while they sat idle (a
restart, a failover) are replaced rather than failing the next requests.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, MetaData, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from nbguard.errors import ConfigError

#: ``synchronous`` settings a store may ask for (SQLite's PRAGMA, PostgreSQL's
#: ``synchronous_commit`` for the transaction).
SYNCHRONOUS = ("full", "normal")


def normalise_url(url: str, *, what: str = "database") -> str:
    """Return the SQLAlchemy URL to use: plain ``postgresql://`` means psycopg 3.

    Raises ConfigError for an unparsable URL or an in-memory SQLite database
    (which would vanish with the process, taking its records with it). ``what``
    names the store in the error ("the ledger", "the guard service").
    """
    try:
        parsed = make_url(url)
    except ArgumentError as error:
        raise ConfigError(f"not a database URL: {url!r} ({error})") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ConfigError(f"{what} needs an SQLite file, not an in-memory database")
    return parsed.render_as_string(hide_password=False)


def open_engine(url: str, *, synchronous: str = "full") -> Engine:
    """An engine for a URL already passed through :func:`normalise_url`."""
    if synchronous not in SYNCHRONOUS:
        raise ConfigError(f"synchronous must be one of {', '.join(SYNCHRONOUS)}")
    if make_url(url).get_backend_name() != "sqlite":
        # A database server drops connections (restart, failover, idle timeouts):
        # test each pooled connection as it is taken, so that a dropped one is
        # replaced instead of failing the request (or ledger write) that drew it.
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url)
    level = synchronous.upper()

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event below issue BEGIN, not the driver.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={level}")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        write = connection.get_execution_options().get("nbguard_write", False)
        statement = "BEGIN IMMEDIATE" if write else "BEGIN"
        # Straight to the driver: through ``exec_driver_sql`` this one statement
        # cost as much CPU as the rest of a small ledger batch. Its errors (a busy
        # database) still surface as SQLAlchemy's, as the stores expect.
        try:
            connection.connection.driver_connection.execute(statement)  # type: ignore[union-attr]
        except sqlite3.Error as error:
            raise OperationalError(statement, None, error) from error

    return engine


@contextmanager
def write_transaction(engine: Engine, *, synchronous: str = "full") -> Iterator[Connection]:
    """A connection in a write transaction, committed when the block ends without error.

    On SQLite the transaction holds the database's write lock from its first
    statement; on PostgreSQL lock what you decide on with ``with_for_update()``.
    """
    with engine.connect() as connection:
        connection = connection.execution_options(nbguard_write=True)
        with connection.begin():
            if engine.dialect.name == "postgresql" and synchronous == "normal":
                connection.exec_driver_sql("SET LOCAL synchronous_commit = off")
            yield connection


def create_tables(engine: Engine, metadata: MetaData, *, lock_key: int) -> None:
    """Create ``metadata``'s missing tables; ``lock_key`` serialises this between processes
    on PostgreSQL (an advisory lock), so replicas starting together do not race."""
    with write_transaction(engine) as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key})
        metadata.create_all(connection, checkfirst=True)
