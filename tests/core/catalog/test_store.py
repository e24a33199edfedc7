"""CatalogStore: upsert, get, list, remove and the generation counter, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from nbguard.catalog.models import Dataset
from nbguard.catalog.store import CatalogStore, CatalogStoreError
from nbguard.errors import ConfigError, NotFoundError, RequestError


def make(name: str, **changes: str) -> Dataset:
    """A valid dataset called ``name`` with some fields changed."""
    fields = {"team": "analytics", "sensitivity": "internal", "environment": "train"}
    return Dataset(name=name, **{**fields, **changes})


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database URL: an SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'guard.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(url: str) -> Iterator[CatalogStore]:
    """An open catalog store."""
    with CatalogStore(url) as opened:
        yield opened


def test_new_catalog_is_empty(store: CatalogStore) -> None:
    """A new catalog lists nothing and is at generation 0."""
    assert store.list() == []
    assert store.generation() == 0


def test_upsert_then_read(store: CatalogStore) -> None:
    """Upserted datasets read back equal, listed by name."""
    items = [make("zeta", storage="s3://b/z"), make("alpha", owner="dave", description="é\nx")]
    assert store.upsert(items) == 2
    assert store.list() == sorted(items, key=lambda d: d.name)
    assert store.get("zeta") == items[0]


def test_upsert_replaces(store: CatalogStore) -> None:
    """Upserting an existing name replaces every field; the last of duplicates wins."""
    store.upsert([make("sales")])
    assert store.upsert([make("sales", team="x"), make("sales", team="y")]) == 1
    assert store.get("sales").team == "y"
    assert len(store.list()) == 1


def test_every_write_bumps_the_generation(store: CatalogStore) -> None:
    """upsert and remove each move the generation by one; reads and empty upserts do not."""
    store.upsert([make("a"), make("b")])
    assert store.generation() == 1
    store.upsert([])
    store.list()
    assert store.generation() == 1
    store.remove("a")
    assert store.generation() == 2


def test_failed_remove_changes_nothing(store: CatalogStore) -> None:
    """Removing an unknown dataset is NotFoundError and leaves the generation alone."""
    with pytest.raises(NotFoundError) as caught:
        store.remove("ghost")
    assert caught.value.user_message == "There is no dataset 'ghost'."
    assert store.generation() == 0


def test_get_unknown_and_invalid_names(store: CatalogStore) -> None:
    """get raises NotFoundError for an unknown name and RequestError for an invalid one."""
    with pytest.raises(NotFoundError):
        store.get("ghost")
    with pytest.raises(RequestError, match="invalid dataset name"):
        store.get("../x")


def test_second_store_sees_changes(url: str) -> None:
    """A second store on the same database (another replica) sees the generation move."""
    with CatalogStore(url) as one, CatalogStore(url) as two:
        before = two.generation()
        one.upsert([make("sales")])
        assert two.generation() == before + 1
        assert two.get("sales") == make("sales")
        two.remove("sales")
        assert one.generation() == before + 2
        assert one.list() == []


def test_reopening_keeps_data_and_generation(url: str) -> None:
    """Reopening a catalog keeps its datasets and does not reset the generation."""
    with CatalogStore(url) as store:
        store.upsert([make("sales")])
    with CatalogStore(url) as store:
        assert store.generation() == 1
        assert [d.name for d in store.list()] == ["sales"]


def test_in_memory_sqlite_is_refused() -> None:
    """An in-memory database would lose the catalog: ConfigError."""
    with pytest.raises(ConfigError):
        CatalogStore("sqlite://")


def test_database_failure_leaks_no_sql(tmp_path: Path) -> None:
    """A broken database is CatalogStoreError; its user message has no SQL or path."""
    url = f"sqlite:///{tmp_path / 'guard.db'}"
    with CatalogStore(url) as store:
        with store.engine.begin() as connection:
            connection.execute(text("DROP TABLE nbguard_catalog_datasets"))
        with pytest.raises(CatalogStoreError) as caught:
            store.list()
    message = caught.value.user_message
    assert "SELECT" not in message
    assert "guard.db" not in message
    assert "nbguard_catalog" in str(caught.value)


def test_unopenable_database_is_a_store_error(tmp_path: Path) -> None:
    """A database that cannot be opened is CatalogStoreError at construction."""
    with pytest.raises(CatalogStoreError):
        CatalogStore(f"sqlite:///{tmp_path / 'missing-dir' / 'guard.db'}")


def test_hand_edited_bad_row_is_a_store_error(tmp_path: Path) -> None:
    """A row that fails validation (edited behind nbguard's back) is CatalogStoreError."""
    url = f"sqlite:///{tmp_path / 'guard.db'}"
    with CatalogStore(url) as store:
        store.upsert([make("sales")])
        with store.engine.begin() as connection:
            connection.execute(text("UPDATE nbguard_catalog_datasets SET sensitivity = 'x'"))
        with pytest.raises(CatalogStoreError, match="invalid dataset row 'sales'"):
            store.get("sales")


def test_datasets_are_values(store: CatalogStore) -> None:
    """What the store returns is a new, equal, immutable Dataset."""
    original = make("sales")
    store.upsert([original])
    copy = store.get("sales")
    assert copy == original
    assert dataclasses.is_dataclass(copy)


WRITER = """
import sys
from nbguard.catalog.models import Dataset
from nbguard.catalog.store import CatalogStore

url, worker = sys.argv[1], sys.argv[2]
with CatalogStore(url) as store:
    for i in range(10):
        store.upsert([Dataset(name=f"w{worker}-{i}", team="t", sensitivity="public",
                              environment="dev")])
"""


def test_processes_writing_at_once_lose_nothing(url: str) -> None:
    """Three processes opening a fresh catalog and writing at once: every write counted once."""
    processes = [
        subprocess.Popen([sys.executable, "-c", WRITER, url, str(n)], stderr=subprocess.PIPE)
        for n in range(3)
    ]
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err.decode()
    with CatalogStore(url) as store:
        assert len(store.list()) == 30
        assert store.generation() == 30
