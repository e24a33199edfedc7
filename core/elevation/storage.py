"""The elevation database underneath the stores: engine, transactions and row changes.

Every change runs in one write transaction that first locks the row it decides
on (``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite the transaction already
holds the database's write lock), re-reads the state under that lock, and
changes it with a conditional UPDATE (:meth:`StoreBase.change`). A lost race is
a ConflictError; a database failure an :class:`ElevationStoreError`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Table, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from nbguard.database import create_tables, normalise_url, open_engine, write_transaction
from nbguard.elevation.tables import Row, metadata
from nbguard.errors import ConflictError, NBGuardError, NotFoundError

# Any constant: serialises table creation between replicas (pg_advisory_xact_lock).
_SCHEMA_LOCK = 0x6E62656C6576


class ElevationStoreError(NBGuardError):
    """The elevation database failed; ``str()`` has the cause, ``user_message`` does not."""

    default_user_message = "Elevation is unavailable right now; try again shortly."


def conflict(message: str) -> ConflictError:
    """A ConflictError whose message the caller may read."""
    return ConflictError(message, user_message=message)


def new_id(prefix: str) -> str:
    """A fresh row id: 144 random bits, url-safe characters (valid Cedar entity ids)."""
    return f"{prefix}-{secrets.token_urlsafe(18)}"


class StoreBase:
    """One elevation database: opened (tables created) once, shared by every store part."""

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time) -> None:
        """Open (creating missing tables in) the database at ``url``."""
        self.url = normalise_url(url, what="the elevation store")
        self.clock = clock
        self.engine = open_engine(self.url)
        try:
            create_tables(self.engine, metadata, lock_key=_SCHEMA_LOCK)
        except SQLAlchemyError as error:
            self.engine.dispose()
            raise ElevationStoreError(f"cannot open the elevation database: {error}") from error

    def close(self) -> None:
        """Release every database connection."""
        self.engine.dispose()

    @contextmanager
    def _storage(self, doing: str) -> Iterator[None]:
        try:
            yield
        except IntegrityError as error:
            # A constraint caught what the row lock should have: someone else won.
            raise conflict(f"this {doing} conflicts with a change made at the same time") from (
                error
            )
        except SQLAlchemyError as error:
            raise ElevationStoreError(f"elevation store: {doing} failed: {error}") from error

    @contextmanager
    def write(self, doing: str) -> Iterator[Connection]:
        """A write transaction; ``doing`` names it in errors."""
        with self._storage(doing), write_transaction(self.engine) as connection:
            yield connection

    @contextmanager
    def read(self, doing: str) -> Iterator[Connection]:
        """A read-only connection; ``doing`` names it in errors."""
        with self._storage(doing), self.engine.connect() as connection:
            yield connection

    @staticmethod
    def row(connection: Connection, table: Table, row_id: Any, what: str, *, lock: bool) -> Row:
        """The row ``row_id`` of ``table`` (locked for update with ``lock``); NotFoundError."""
        if not isinstance(row_id, str) or len(row_id) > 64:
            raise NotFoundError(f"no {what} {row_id!r}", user_message=f"No such {what}.")
        query = select(table).where(table.c.id == row_id)
        if lock:
            query = query.with_for_update()
        found = connection.execute(query).mappings().first()
        if found is None:
            raise NotFoundError(f"no {what} {row_id!r}", user_message=f"No such {what}.")
        return found

    @staticmethod
    def change(connection: Connection, table: Table, row_id: str, when: Any, **values: Any) -> None:
        """UPDATE one row only if ``when`` still holds; anything else is a lost race."""
        result = connection.execute(
            update(table).where(table.c.id == row_id, when).values(**values)
        )
        if result.rowcount != 1:
            raise conflict("this changed at the same time; reload and try again")
