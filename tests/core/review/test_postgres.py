"""The session index on PostgreSQL, kept up to date by several replicas at once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from nbguard.database import open_engine
from nbguard.ledger import Ledger
from nbguard.ledger.keys import load_public_keys
from nbguard.ledger.store import LedgerStore
from nbguard.review.index import SessionFilter, SessionIndex
from nbguard.review.replay import open_store_review, refresh_index

from .conftest import ALICE, BOB, OTHER, STORY, write_story


def test_replicas_index_together(
    postgres_url: str, make_ledger: Callable[..., Ledger], keypair: tuple[Path, Path]
) -> None:
    """Four replicas catching up at once, in small batches, leave the index a single
    pass would: every record counted once, joins made, the session verifiable."""
    ledger = make_ledger(url=postgres_url)
    for _ in range(20):
        write_story(ledger)
    ledger.close()
    stores = [LedgerStore(postgres_url, create=False) for _ in range(4)]
    indexes = [SessionIndex(open_engine(store.url)) for store in stores]
    errors: list[BaseException] = []

    def catch_up(store: LedgerStore, index: SessionIndex) -> None:
        try:
            refresh_index(store, index, batch=7)
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [
        threading.Thread(target=catch_up, args=pair) for pair in zip(stores, indexes, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    index = indexes[0]
    assert index.indexed_seq() == 20 * len(STORY)
    alice = index.session(ALICE)
    assert alice is not None
    assert (alice["records"], alice["cells"], alice["alerts"]) == (20 * 13, 20 * 4, 20)
    assert len(index.members(ALICE)) == 20 * 13
    page = index.list_sessions(SessionFilter())
    assert {s["session"] for s in page.sessions} == {ALICE, BOB, OTHER}
    shown = open_store_review(postgres_url, ALICE, load_public_keys([keypair[1]]))
    assert shown.status.verified
    assert shown.broken == []
    for store, each in zip(stores, indexes, strict=True):
        each.engine.dispose()
        store.close()
