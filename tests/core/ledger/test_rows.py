"""Bulk row insertion: batches of any size land whole, in order, and verify."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import event

from nbguard.ledger.records import prepare_record
from nbguard.ledger.schemas import packaged_schemas
from nbguard.ledger.store import LedgerStore
from nbguard.ledger.verify import verify_store

from .conftest import access_body

SIZES = [
    pytest.param(1, id="one"),
    pytest.param(999, id="under-a-chunk"),
    pytest.param(1000, id="one-full-chunk"),
    pytest.param(2001, id="two-chunks-and-one"),
]


#: Text that a bulk format must escape: backslash, tab, newline, carriage return, NUL-free.
AWKWARD = 'a\\b\tc\nd\re "q" \u00e9\u2028\U0001f600 \\N'


def _body(index: int) -> dict[str, object]:
    body = access_body(index)
    if index % 3 == 0:
        body["resource"] = f"{AWKWARD} {index}"
        body["principal"] = AWKWARD
    return body


def _append_in_one_batch(
    url: str, count: int, configure: Callable[[LedgerStore], None] | None = None
) -> None:
    schemas = packaged_schemas()
    records = [
        prepare_record(schemas, "access", _body(i), actor=f"al\tice{i % 2}", session="s-1")
        for i in range(count)
    ]
    store = LedgerStore(url)
    if configure is not None:
        configure(store)
    try:
        first, hashes, _ = store.append(records)
        assert (first, len(hashes)) == (1, count)
        report = verify_store(store, {}, allow_unsigned_tail=count)
        assert report.records == count
        assert report.head == hashes[-1]
        with store.snapshot() as snapshot:
            stored = [(core, personal) for _, core, personal, _ in snapshot.rows()]
        assert stored == [(record.core, record.personal) for record in records]
    finally:
        store.close()


@pytest.mark.parametrize("count", SIZES)
def test_sqlite_batch_inserts_every_row(tmp_path: Path, count: int) -> None:
    """A batch of any size is stored whole on SQLite, in sequence order, and verifies."""
    _append_in_one_batch(f"sqlite:///{tmp_path / 'rows.db'}", count)


def test_sqlite_parameter_limit_splits_a_batch(tmp_path: Path) -> None:
    """Under a low SQLite parameter limit a batch goes in several statements, whole and in order."""
    statements: list[str] = []

    def low_limit(store: LedgerStore) -> None:
        store.engine.dispose()  # new connections get the limit

        @event.listens_for(store.engine, "connect")
        def limit(dbapi_connection: sqlite3.Connection, _record: object) -> None:
            dbapi_connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 40)
            dbapi_connection.set_trace_callback(statements.append)

    _append_in_one_batch(f"sqlite:///{tmp_path / 'rows.db'}", 25, low_limit)
    inserts = [sql for sql in statements if sql.startswith("INSERT INTO nbguard_ledger_records")]
    assert len(inserts) == 3  # 10 + 10 + 5 rows


@pytest.mark.postgres
@pytest.mark.parametrize("count", SIZES)
def test_postgres_copy_inserts_every_row(postgres_url: str, count: int) -> None:
    """A batch of any size is copied whole into PostgreSQL, in sequence order, and verifies."""
    _append_in_one_batch(postgres_url, count)


def test_a_failed_write_is_rolled_back_and_the_next_one_starts_afresh(tmp_path: Path) -> None:
    """A transaction that fails midway leaves nothing behind, and later writes (on a new
    connection) continue the chain from the last committed record."""
    store = LedgerStore(f"sqlite:///{tmp_path / 'rows.db'}")
    schemas = packaged_schemas()
    record = prepare_record(schemas, "access", access_body(1), actor="alice", session=None)

    def failing_signer(*_args: object) -> None:
        raise RuntimeError("the signing key is gone")

    try:
        assert store.append([record])[0] == 1
        with pytest.raises(RuntimeError, match="signing key"):
            store.append([record, record], failing_signer)
        first, hashes, _ = store.append([record])
        assert (first, len(hashes)) == (2, 1)
        report = verify_store(store, {}, allow_unsigned_tail=2)
        assert (report.records, report.head) == (2, hashes[-1])
    finally:
        store.close()


def test_closing_the_store_releases_its_writer_connection(tmp_path: Path) -> None:
    """After close, no connection is left open: SQLite folds the WAL back into the file."""
    path = tmp_path / "rows.db"
    store = LedgerStore(f"sqlite:///{path}")
    record = prepare_record(packaged_schemas(), "access", access_body(1), actor="a", session=None)
    store.append([record])
    assert Path(f"{path}-wal").exists()
    store.close()
    assert not Path(f"{path}-wal").exists()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM nbguard_ledger_records").fetchone() == (1,)
