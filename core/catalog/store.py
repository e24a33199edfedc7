"""The catalog's database: SQLite (WAL) embedded, PostgreSQL for several guard-service replicas.

Two tables: the datasets, and a one-row *state* holding a generation counter.
Every write transaction first locks the state row (``SELECT ... FOR UPDATE`` on
PostgreSQL; ``BEGIN IMMEDIATE`` already holds SQLite's write lock), changes the
datasets and bumps the generation, so writers from any number of processes are
serialised and a replica can notice another's change by reading one integer.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from nbguard.catalog.models import FIELDS, Dataset, check_dataset_name
from nbguard.database import create_tables, normalise_url, open_engine, write_transaction
from nbguard.errors import NBGuardError, NotFoundError, RequestError

metadata = MetaData()
datasets_table = Table(
    "nbguard_catalog_datasets",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("description", Text, nullable=False),
    Column("team", String(128), nullable=False),
    Column("owner", String(128), nullable=False),
    Column("sensitivity", String(32), nullable=False),
    Column("environment", String(32), nullable=False),
    Column("storage", Text, nullable=False),
)
state_table = Table(
    "nbguard_catalog_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("generation", BigInteger, nullable=False),
)

#: The generation, read on every guard request (built once: building the expression
#: per call cost as much as running it).
_GENERATION = select(state_table.c.generation).where(state_table.c.id == 1)

# Any constant: serialises table creation between processes (pg_advisory_xact_lock).
_SCHEMA_LOCK = 0x6E62636174616C67
_COLUMNS = FIELDS


class CatalogStoreError(NBGuardError):
    """The catalog database failed; the log message has the details, users see none."""

    default_user_message = (
        "The dataset catalog is unavailable; try again later or ask your hub admin."
    )


class CatalogStore:
    """The datasets of the catalog in one database. Thread-safe; one per process is enough."""

    def __init__(self, url: str) -> None:
        """Open the catalog at ``url`` (an SQLAlchemy URL), creating its tables if missing."""
        self.url = normalise_url(url, what="the dataset catalog")
        self.engine = open_engine(self.url)
        try:
            create_tables(self.engine, metadata, lock_key=_SCHEMA_LOCK)
            self._ensure_state()
        except SQLAlchemyError as error:
            self.engine.dispose()
            raise CatalogStoreError(f"cannot open the catalog database: {error}") from error

    def __enter__(self) -> CatalogStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _ensure_state(self) -> None:
        try:
            with write_transaction(self.engine) as connection:
                found = connection.execute(
                    select(state_table.c.id).where(state_table.c.id == 1)
                ).first()
                if found is None:
                    connection.execute(insert(state_table).values(id=1, generation=0))
        except IntegrityError:
            pass  # another replica inserted it between our read and our insert

    @contextmanager
    def _changing(self) -> Iterator[Connection]:
        """A write transaction holding the state row; bumps the generation on success."""
        try:
            with write_transaction(self.engine) as connection:
                connection.execute(
                    select(state_table.c.generation).where(state_table.c.id == 1).with_for_update()
                ).scalar_one()
                yield connection
                connection.execute(
                    update(state_table)
                    .where(state_table.c.id == 1)
                    .values(generation=state_table.c.generation + 1)
                )
        except SQLAlchemyError as error:
            raise CatalogStoreError(f"catalog write failed: {error}") from error

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as connection:
                yield connection
        except SQLAlchemyError as error:
            raise CatalogStoreError(f"catalog read failed: {error}") from error

    def upsert(self, datasets: Iterable[Dataset]) -> int:
        """Add or replace datasets in one transaction; return how many were written.

        A name given twice keeps its last definition. Nothing is written (and the
        generation does not move) for an empty batch.
        """
        batch = {d.name: d for d in datasets}
        if not batch:
            return 0
        with self._changing() as connection:
            existing = set(
                connection.execute(
                    select(datasets_table.c.name).where(datasets_table.c.name.in_(batch))
                ).scalars()
            )
            for name, dataset in batch.items():
                row = _row(dataset)
                if name in existing:
                    connection.execute(
                        update(datasets_table).where(datasets_table.c.name == name).values(row)
                    )
                else:
                    connection.execute(insert(datasets_table).values(row))
        return len(batch)

    def remove(self, name: str) -> None:
        """Remove one dataset; NotFoundError if there is none of that name."""
        check_dataset_name(name)
        with self._changing() as connection:
            result = connection.execute(delete(datasets_table).where(datasets_table.c.name == name))
            if result.rowcount == 0:
                raise NotFoundError(
                    f"no dataset {name!r} in the catalog",
                    user_message=f"There is no dataset {name!r}.",
                )

    def get(self, name: str) -> Dataset:
        """The dataset called ``name``; NotFoundError if there is none."""
        check_dataset_name(name)
        with self._reading() as connection:
            row = connection.execute(
                select(*_columns()).where(datasets_table.c.name == name)
            ).first()
        if row is None:
            raise NotFoundError(
                f"no dataset {name!r} in the catalog", user_message=f"There is no dataset {name!r}."
            )
        return _dataset(row._mapping)

    def list(self) -> builtins.list[Dataset]:
        """Every dataset, sorted by name."""
        with self._reading() as connection:
            rows = connection.execute(
                select(*_columns()).order_by(datasets_table.c.name)
            ).fetchall()
        return [_dataset(row._mapping) for row in rows]

    def generation(self) -> int:
        """A number that grows with every change to the catalog, whichever process made it."""
        with self._reading() as connection:
            value = connection.execute(_GENERATION).scalar_one()
        return int(value)

    def close(self) -> None:
        """Release every database connection."""
        self.engine.dispose()


def _columns() -> list[Column[Any]]:
    return [datasets_table.c[name] for name in _COLUMNS]


def _row(dataset: Dataset) -> dict[str, str]:
    return {name: getattr(dataset, name) for name in _COLUMNS}


def _dataset(row: Any) -> Dataset:
    try:
        return Dataset(**{name: row[name] for name in _COLUMNS})
    except RequestError as error:
        # Only a hand-edited database gets here: a storage problem, not the caller's.
        raise CatalogStoreError(f"invalid dataset row {row['name']!r}: {error}") from error
