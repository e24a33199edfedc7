"""Bulk row insertion: batches of any size land whole, in order, and verify."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbguard.ledger.records import prepare_record
from nbguard.ledger.schemas import packaged_schemas
from nbguard.ledger.store import LedgerStore
from nbguard.ledger.verify import verify_store

from .conftest import access_body

SIZES = [
    pytest.param(1, id="one"),
    pytest.param(250, id="one-full-chunk"),
    pytest.param(251, id="chunk-plus-one"),
    pytest.param(1000, id="max-batch"),
]


def _append_in_one_batch(url: str, count: int) -> None:
    schemas = packaged_schemas()
    records = [
        prepare_record(schemas, "access", access_body(i), actor="alice", session="s-1")
        for i in range(count)
    ]
    store = LedgerStore(url)
    try:
        first, hashes, _ = store.append(records)
        assert (first, len(hashes)) == (1, count)
        report = verify_store(store, {}, allow_unsigned_tail=count)
        assert report.records == count
        assert report.head == hashes[-1]
        with store.snapshot() as snapshot:
            cores = [core for _, core, _, _ in snapshot.rows()]
        assert cores == [record.core for record in records]
    finally:
        store.close()


@pytest.mark.parametrize("count", SIZES)
def test_sqlite_batch_inserts_every_row(tmp_path: Path, count: int) -> None:
    """A batch of any size is stored whole on SQLite, in sequence order, and verifies."""
    _append_in_one_batch(f"sqlite:///{tmp_path / 'rows.db'}", count)


@pytest.mark.postgres
@pytest.mark.parametrize("count", SIZES)
def test_postgres_copy_inserts_every_row(postgres_url: str, count: int) -> None:
    """A batch of any size is copied whole into PostgreSQL, in sequence order, and verifies."""
    _append_in_one_batch(postgres_url, count)
