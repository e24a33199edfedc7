"""The session index: membership, joins, filters, incremental upkeep and pagination."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import create_engine

from nbguard.errors import RequestError
from nbguard.ledger import Ledger
from nbguard.ledger.store import LedgerStore
from nbguard.review.entries import store_entries
from nbguard.review.index import SessionFilter, SessionIndex
from nbguard.review.replay import refresh_index

from .conftest import ALICE, BOB, OTHER


def indexed(url: str) -> tuple[LedgerStore, SessionIndex]:
    """The ledger at ``url`` and an up-to-date index in its database."""
    store = LedgerStore(url, create=False)
    index = SessionIndex(store.engine)
    refresh_index(store, index)
    return store, index


def test_story_sessions(story: Ledger, ledger_url: str) -> None:
    """Each login session is one entry, with its user and counts; bob's approval and
    the witness alert (written without a session) join alice's session."""
    store, index = indexed(ledger_url)
    page = index.list_sessions(SessionFilter())
    assert [s["session"] for s in page.sessions] == [OTHER, ALICE, BOB]
    alice = index.session(ALICE)
    assert alice is not None
    assert (alice["user"], alice["cells"], alice["alerts"], alice["privileged"]) == (
        "alice",
        4,
        1,
        True,
    )
    assert 11 in index.members(ALICE)  # bob's approval, in bob's session too
    assert 11 in index.members(BOB)
    assert 14 in index.members(ALICE)  # the witness alert for alice's kernel
    assert 15 not in index.members(ALICE)  # an alert naming another user's subject
    assert index.resources(ALICE) == ["dataset:public", "dataset:restricted"]
    store.close()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"user": "alice"}, [ALICE]),
        ({"user": "nobody"}, []),
        ({"privileged": "1"}, [ALICE, BOB]),
        ({"alerts": "1"}, [ALICE]),
        ({"dataset": "restricted"}, [ALICE]),
        ({"dataset": "missing"}, []),
        ({"model": "fraud"}, []),
        ({"since": "2000-01-01"}, [OTHER, ALICE, BOB]),
        ({"until": "2000-01-01T00:00:00Z"}, []),
        ({"since": "2999-01-01"}, []),
        ({"privileged": "on", "user": "", "dataset": ""}, [ALICE, BOB]),
    ],
    ids=[
        "user",
        "unknown-user",
        "privileged",
        "alerts",
        "dataset",
        "dataset-untouched",
        "model",
        "since",
        "until-before",
        "since-after",
        "html-form",
    ],
)
def test_filters(
    story: Ledger, ledger_url: str, query: dict[str, str], expected: list[str]
) -> None:
    """Each filter narrows the list to the sessions it describes."""
    store, index = indexed(ledger_url)
    page = index.list_sessions(SessionFilter.parse(query))
    assert [s["session"] for s in page.sessions] == expected
    assert page.total == len(expected)
    store.close()


def test_until_a_date_includes_that_day() -> None:
    """``until`` given as a date means the end of that day (UTC), ``since`` its start."""
    where = SessionFilter.parse({"since": "2025-01-31", "until": "2025-01-31"})
    assert where.since == "2025-01-31T00:00:00.000000Z"
    assert where.until == "2025-01-31T23:59:59.999999Z"
    exact = SessionFilter.parse({"until": "2025-01-31T10:00:00+02:00"})
    assert exact.until == "2025-01-31T08:00:00.000000Z"


@pytest.mark.parametrize(
    "query",
    [
        {"since": "yesterday"},
        {"privileged": "yes"},
        {"dataset": "a", "model": "b"},
        {"user": "a\nb"},
        {"color": "red"},
        {"dataset": "x" * 600},
    ],
    ids=["bad-time", "bad-flag", "dataset-and-model", "newline", "unknown", "long"],
)
def test_bad_filters(query: dict[str, str]) -> None:
    """A malformed filter is a RequestError whose user message says what is wrong."""
    with pytest.raises(RequestError) as caught:
        SessionFilter.parse(query)
    assert caught.value.user_message == str(caught.value)


def test_incremental(story: Ledger, ledger_url: str, make_ledger: Callable[..., Ledger]) -> None:
    """A refresh reads only records appended since the last one; counts never double."""
    store, index = indexed(ledger_url)
    assert refresh_index(store, index) == 0
    ledger = make_ledger()
    ledger.append("cell_execution", _cell(9), actor="alice", session=ALICE)
    ledger.close()  # the shutdown checkpoint adds no record
    assert refresh_index(store, index) == 1
    alice = index.session(ALICE)
    assert alice is not None
    assert alice["cells"] == 5
    assert index.indexed_seq() == 17
    store.close()


def test_rebuilt_index_agrees(story: Ledger, ledger_url: str) -> None:
    """An index built in one pass equals one built a record at a time."""
    store = LedgerStore(ledger_url, create=False)

    whole = SessionIndex(create_engine("sqlite://"))
    whole.ingest(store_entries(store))
    stepwise = SessionIndex(create_engine("sqlite://"))
    for entry in store_entries(store, batch=1):
        stepwise.ingest([entry])
    for session in (ALICE, BOB, OTHER):
        assert whole.session(session) == stepwise.session(session)
        assert whole.members(session) == stepwise.members(session)
    store.close()


@pytest.mark.parametrize("batch", [1, 3, 5_000], ids=["one", "three", "default"])
def test_refresh_in_batches(story: Ledger, ledger_url: str, batch: int) -> None:
    """Catching up in short transactions of any size gives the same index, and a
    refresh with nothing new writes nothing."""
    store = LedgerStore(ledger_url, create=False)
    reference = SessionIndex(create_engine("sqlite://"))
    reference.ingest(store_entries(store))
    index = SessionIndex(create_engine("sqlite://"))
    assert refresh_index(store, index, batch=batch) == 16
    for session in (ALICE, BOB, OTHER):
        assert index.session(session) == reference.session(session)
        assert index.members(session) == reference.members(session)
    assert refresh_index(store, index, batch=batch) == 0
    store.close()


def _cell(seq: int, privileged: bool = False) -> dict[str, Any]:
    return {
        "kernel_id": "k-9",
        "seq": seq,
        "msg_id": f"m{seq}",
        "status": "ok",
        "privileged": privileged,
        "witness": "kernel",
        "code_sha256": "0" * 64,
    }


def test_pagination_large(make_ledger: Callable[..., Ledger], ledger_url: str) -> None:
    """On a 30,000-record ledger of 600 sessions, paging (with filters) returns every
    matching session exactly once, newest activity first, with the right counts."""
    rng = random.Random(7)  # noqa: S311 - a repeatable test ledger
    sessions = [f"{n:032x}" for n in range(600)]
    expected_cells: dict[str, int] = dict.fromkeys(sessions, 0)
    privileged: set[str] = set()
    records = []
    for n in range(30_000):
        session = rng.choice(sessions)
        flag = rng.random() < 0.001
        records.append(("cell_execution", _cell(n, flag), f"user{int(session, 16) % 7}", session))
        expected_cells[session] += 1
        if flag:
            privileged.add(session)
    ledger = make_ledger(checkpoint_every=10_000)
    for start in range(0, len(records), 5_000):
        ledger.append_many(records[start : start + 5_000])
    ledger.close()
    store, index = indexed(ledger_url)
    seen: list[dict[str, Any]] = []
    before = None
    while True:
        page = index.list_sessions(SessionFilter(), limit=37, before=before)
        seen.extend(page.sessions)
        assert page.total == 600
        before = page.next_before
        if before is None:
            break
    assert sorted(s["session"] for s in seen) == sorted(sessions)
    assert [s["last_seq"] for s in seen] == sorted((s["last_seq"] for s in seen), reverse=True)
    assert {s["session"]: s["cells"] for s in seen} == expected_cells
    only = index.list_sessions(SessionFilter(privileged=True, user="user3"), limit=200)
    assert {s["session"] for s in only.sessions} == {s for s in privileged if int(s, 16) % 7 == 3}
    with pytest.raises(RequestError):
        index.list_sessions(SessionFilter(), limit=0)
    store.close()
