"""Replicas: several stores on one database (SQLite file or PostgreSQL) racing on one request."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest

from nbguard.elevation.store import ElevationStore
from nbguard.errors import ConflictError

from .conftest import TWO, new_request

ROUNDS = 4
APPROVERS = ("bob", "carol", "dave", "erin", "frank")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """One database URL the replicas share: a SQLite file, then a PostgreSQL database."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return sqlite_url


@pytest.fixture
def replicas(database: str) -> Iterator[tuple[ElevationStore, ElevationStore]]:
    """Two stores on the same database, as two guard-service replicas would have."""
    first, second = ElevationStore(database), ElevationStore(database)
    yield first, second
    first.close()
    second.close()


def race(calls: list[Callable[[], Any]]) -> tuple[list[Any], list[BaseException]]:
    """Run every call in its own thread, all released at once; return results and errors."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(call: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            outcome = call()
        except BaseException as error:  # every kind is counted, not lost in a thread
            with lock:
                errors.append(error)
        else:
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results, errors


def test_racing_approvals(replicas: tuple[ElevationStore, ElevationStore]) -> None:
    """Racing approvers on two replicas: exactly two approvals count, exactly one grant exists."""
    for _ in range(ROUNDS):
        request = new_request(replicas[0], rule=TWO)
        # Each approver twice, once through each replica; the requester once.
        calls = [
            partial(store.decide, request.id, approver=approver, approve=True, comment="")
            for approver in (*APPROVERS, "alice")
            for store in replicas[: 1 + (approver != "alice")]
        ]
        results, errors = race(calls)
        assert all(isinstance(error, ConflictError) for error in errors), errors
        assert len(results) == 2
        final = replicas[1].get_request(request.id)
        assert final.status == "approved"
        assert len(final.approvals) == 2
        assert len({a.approver for a in final.approvals}) == 2
        assert "alice" not in {a.approver for a in final.approvals}
        grants = [
            g for g in replicas[0].list_grants(active_only=False) if g.request_id == request.id
        ]
        assert [g.id for g in grants] == [final.grant_id]


def test_racing_approve_and_deny(replicas: tuple[ElevationStore, ElevationStore]) -> None:
    """Approvals, denials and a cancel racing: one consistent outcome, a grant only if approved."""
    for _ in range(ROUNDS):
        request = new_request(replicas[0], rule=TWO)
        first, second = replicas
        calls: list[Callable[[], Any]] = [
            partial(first.decide, request.id, approver="bob", approve=True, comment=""),
            partial(second.decide, request.id, approver="carol", approve=True, comment=""),
            partial(second.decide, request.id, approver="dave", approve=False, comment="no"),
            partial(first.cancel, request.id, by="alice"),
        ]
        _, errors = race(calls)
        assert all(isinstance(error, ConflictError) for error in errors), errors
        final = first.get_request(request.id)
        assert final.status in ("approved", "denied", "cancelled")
        grants = [g for g in second.list_grants(active_only=False) if g.request_id == request.id]
        assert len(grants) == (final.status == "approved")


def test_racing_revocations(replicas: tuple[ElevationStore, ElevationStore]) -> None:
    """Many revocations of one grant through two replicas: exactly one wins."""
    request = new_request(replicas[0])
    grant_id = replicas[0].decide(request.id, approver="bob", approve=True, comment="").grant_id
    calls = [
        partial(replicas[n % 2].revoke, str(grant_id), by=f"admin{n}", reason="stop")
        for n in range(8)
    ]
    results, errors = race(calls)
    assert len(results) == 1
    assert len(errors) == 7
    assert all(isinstance(error, ConflictError) for error in errors)
    assert replicas[1].get_grant(str(grant_id)).revoked_by == results[0].revoked_by


@pytest.mark.postgres
def test_lifecycle_on_postgres(postgres_url: str) -> None:
    """Requests, break-glass, locks and listing behave on PostgreSQL as on SQLite."""
    store = ElevationStore(postgres_url)
    try:
        request = new_request(store)
        approved = store.decide(request.id, approver="bob", approve=True, comment="ok")
        assert approved.status == "approved"
        grant = store.break_glass(
            user="alice",
            role="sre",
            duration_seconds=60,
            reason="outage",
            environment="prod",
            sensitivity="",
            rule=TWO,
        )
        assert store.active("alice").grant_ids == {approved.grant_id, grant.id}
        lock = store.lock(kind="device", value="laptop-7", reason="lost", by="carol")
        assert store.locks_for(user="alice", device_id="laptop-7") == [lock]
        assert [r.id for r in store.list_requests(requester="alice")] == [
            grant.request_id,
            request.id,
        ]
    finally:
        store.close()
