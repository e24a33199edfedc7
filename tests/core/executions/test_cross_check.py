"""The cross-check: pairing the witnesses, finding gaps, each alert once, across replicas."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from nbguard.errors import LedgerError, RequestError
from nbguard.executions.alerts import WitnessAlert
from nbguard.executions.cross_check import find_gaps
from nbguard.executions.store import ExecutionStore

from .conftest import Clock, batch, kernel_record, server_record

GRACE = 60.0


def send(
    store: ExecutionStore, witness: str, *records: dict[str, Any], user: str = "alice"
) -> None:
    """Store ``records`` of ``witness`` for ``user`` (not privileged)."""
    store.add(
        user=user, server="", batch=batch(witness, *records), privileged=[False] * len(records)
    )


def check(store: ExecutionStore, clock: Clock) -> list[tuple[str, str, str, int, int]]:
    """One pass at the clock's time: ``(kind, reason, witness, first_seq, last_seq)`` each."""
    alerts = store.cross_check(grace_seconds=GRACE, now=clock())
    return [(a.kind, a.reason, a.witness, a.first_seq, a.last_seq) for a in alerts]


@pytest.mark.parametrize(
    ("through", "seqs", "expected"),
    [
        pytest.param(-1, [(0, 0.0), (1, 0.0)], (1, []), id="contiguous"),
        pytest.param(-1, [(2, 0.0)], (2, [(0, 1)]), id="missing-start"),
        pytest.param(1, [(2, 0.0), (5, 0.0), (6, 0.0), (9, 0.0)], (9, [(3, 4), (7, 8)]),
                     id="two-gaps"),
        pytest.param(1, [(2, 0.0), (5, 99.0)], (2, []), id="young-gap-waits"),
        pytest.param(-1, [(0, 99.0), (1, 99.0)], (1, []), id="young-contiguous-advances"),
        pytest.param(3, [], (3, []), id="nothing-new"),
    ],
)  # fmt: skip
def test_find_gaps(
    through: int, seqs: list[tuple[int, float]], expected: tuple[int, list[tuple[int, int]]]
) -> None:
    """Gaps count once a later record is past the cutoff (50 here); the walk stops at a young one."""
    assert find_gaps(through, seqs, 50.0) == expected


def test_agreeing_witnesses_raise_nothing(store: ExecutionStore, clock: Clock) -> None:
    """Both witnesses report every cell, seq without gaps: no alert, now or later."""
    send(store, "kernel", *(kernel_record(seq) for seq in range(3)))
    send(store, "server", *(server_record(seq) for seq in range(3)))
    assert check(store, clock) == []
    clock.advance(GRACE + 1)
    assert check(store, clock) == []
    assert store.recent_alerts() == []


@pytest.mark.parametrize(
    ("witness", "record", "reason"),
    [
        pytest.param("kernel", kernel_record(0), "only-kernel", id="kernel-only"),
        pytest.param("server", server_record(0), "only-server", id="server-only"),
    ],
)
def test_an_execution_one_witness_reported_is_alerted_once_after_the_grace(
    store: ExecutionStore, clock: Clock, witness: str, record: dict[str, Any], reason: str
) -> None:
    """Within the grace period nothing; after it one witness-mismatch alert, and only one."""
    send(store, witness, record)
    assert check(store, clock) == []
    clock.advance(GRACE)
    assert check(store, clock) == [("witness-mismatch", reason, witness, 0, 0)]
    clock.advance(GRACE)
    assert check(store, clock) == []
    [alert] = store.recent_alerts()
    assert (alert.user, alert.kernel_id, alert.msg_id, alert.severity) == (
        "alice", "k-1", "m0", "warning"
    )  # fmt: skip
    body = alert.ledger_body()
    assert body["subject"] == "alice"
    assert body["details"]["msg_id"] == "m0"
    assert body["correlation_id"] == f"witness-alert-{alert.id}"


def test_a_late_partner_pairs_with_the_alerted_record_quietly(
    store: ExecutionStore, clock: Clock
) -> None:
    """A kernel record arriving after the server's lone record was alerted raises no second alert."""
    send(store, "server", server_record(0))
    clock.advance(GRACE)
    assert len(check(store, clock)) == 1
    send(store, "kernel", kernel_record(0))
    clock.advance(GRACE)
    assert check(store, clock) == []


def test_witnesses_that_disagree_on_the_code_are_critical(
    store: ExecutionStore, clock: Clock
) -> None:
    """Paired records whose code hashes differ raise a critical alert at once."""
    send(store, "kernel", kernel_record(0))
    send(store, "server", server_record(0, code_sha256="f" * 64))
    clock.advance(GRACE)
    assert check(store, clock) == [("witness-mismatch", "code-differs", "kernel", 0, 0)]
    assert store.recent_alerts()[0].severity == "critical"


def test_gaps_in_a_stream_are_alerted_once(store: ExecutionStore, clock: Clock) -> None:
    """Seqs 0, 1, 4 of the kernel stream: 2..3 are missing, alerted once after the grace."""
    send(store, "kernel", *(kernel_record(seq) for seq in (0, 1, 4)))
    send(store, "server", server_record(0), server_record(1), server_record(2, msg_id="m4"))
    assert check(store, clock) == []
    clock.advance(GRACE)
    assert check(store, clock) == [("kernel-seq-gap", "seq-gap", "kernel", 2, 3)]
    # Too late: the alert stands and none is added.
    send(store, "kernel", kernel_record(2, msg_id=""), kernel_record(5))
    send(store, "server", server_record(3, msg_id="m5"))
    clock.advance(GRACE)
    assert check(store, clock) == []


def test_a_stream_that_does_not_start_at_zero_has_a_gap(
    store: ExecutionStore, clock: Clock
) -> None:
    """The server's count starting at 3 means 0..2 were never reported."""
    send(store, "server", server_record(3))
    send(store, "kernel", kernel_record(0, msg_id="m3"))
    clock.advance(GRACE)
    assert check(store, clock) == [("kernel-seq-gap", "seq-gap", "server", 0, 2)]


def test_kernel_records_without_a_message_are_not_paired(
    store: ExecutionStore, clock: Clock
) -> None:
    """Code the kernel ran without an execute_request has nothing to pair with."""
    send(store, "kernel", kernel_record(0, msg_id=""))
    clock.advance(GRACE)
    assert check(store, clock) == []


def test_users_are_never_paired_with_each_other(store: ExecutionStore, clock: Clock) -> None:
    """Mallory reporting alice's kernel and message ids pairs with nothing of alice's."""
    send(store, "server", server_record(0))
    send(store, "kernel", kernel_record(0), user="mallory")
    clock.advance(GRACE)
    found = {(a.user, a.reason) for a in store.cross_check(grace_seconds=GRACE, now=clock())}
    assert found == {("alice", "only-server"), ("mallory", "only-kernel")}


def test_a_failing_ledger_leaves_the_alert_for_the_next_pass(
    store: ExecutionStore, clock: Clock
) -> None:
    """If the alerts cannot be recorded, nothing is claimed; the next pass raises them once."""

    def broken(alerts: list[WitnessAlert]) -> None:
        raise LedgerError("ledger down")

    send(store, "server", server_record(0))
    clock.advance(GRACE)
    with pytest.raises(LedgerError):
        store.cross_check(grace_seconds=GRACE, now=clock(), on_alerts=broken)
    assert store.recent_alerts() == []
    recorded: list[WitnessAlert] = []
    assert len(store.cross_check(grace_seconds=GRACE, now=clock(), on_alerts=recorded.extend)) == 1
    assert [a.id for a in recorded] == [a.id for a in store.recent_alerts()]


def test_recent_alerts_are_newest_first_and_limited(store: ExecutionStore, clock: Clock) -> None:
    """recent_alerts lists newest first, per user if asked; limit is checked."""
    for n in range(3):
        send(store, "server", server_record(0, instance=f"si-{n}", msg_id=f"x{n}"))
        clock.advance(GRACE)
        store.cross_check(grace_seconds=GRACE, now=clock())
    assert [a.msg_id for a in store.recent_alerts(limit=2)] == ["x2", "x1"]
    assert store.recent_alerts(user="bob") == []
    with pytest.raises(RequestError):
        store.recent_alerts(limit=0)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def replicas(
    request: pytest.FixtureRequest, sqlite_url: str, clock: Clock
) -> Iterator[list[ExecutionStore]]:
    """Four stores on one database (a SQLite file, then PostgreSQL) on one clock."""
    url = (
        str(request.getfixturevalue("postgres_url")) if request.param == "postgres" else sqlite_url
    )
    stores = [ExecutionStore(url, clock=clock) for _ in range(4)]
    yield stores
    for store in stores:
        store.close()


def test_replicas_racing_raise_each_alert_once(
    replicas: list[ExecutionStore], clock: Clock
) -> None:
    """Four replicas' passes at once, twice over: every alert is raised (and recorded) once."""
    first = replicas[0]
    for kernel in range(10):
        send(first, "server", *(server_record(seq, kernel_id=f"k{kernel}") for seq in (0, 2)))
    clock.advance(GRACE)
    recorded: list[WitnessAlert] = []
    lock = threading.Lock()
    start = threading.Barrier(len(replicas))

    def record(alerts: list[WitnessAlert]) -> None:
        with lock:
            recorded.extend(alerts)

    def run(store: ExecutionStore) -> int:
        start.wait()
        done = len(store.cross_check(grace_seconds=GRACE, on_alerts=record))
        return done + len(store.cross_check(grace_seconds=GRACE, on_alerts=record))

    with ThreadPoolExecutor(len(replicas)) as pool:
        counts = [f.result(timeout=120) for f in [pool.submit(run, s) for s in replicas]]
    assert sum(counts) == 30  # per kernel: two lone server records and one gap
    assert len({a.id for a in recorded}) == len(recorded) == 30
    assert len(first.recent_alerts(limit=1000)) == 30
