"""The cross-check, as pure functions over stored records: pairing and gap finding.

The store reads the rows and claims the outcome in one transaction; these
functions only decide. Both take ``cutoff``: a record that arrived after it is
still within its grace period, so its partner, or the records missing before
it, may still come.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nbguard.executions.alerts import (
    CODE_DIFFERS,
    GAP,
    ONLY_KERNEL,
    ONLY_SERVER,
    SEQ_GAP,
    STREAM_FIELDS,
    WITNESS_MISMATCH,
    WitnessAlert,
)
from nbguard.executions.models import KERNEL, SERVER
from nbguard.executions.tables import PENDING

#: A stored record with its stream: ``id``, ``user``, ``server``, ``witness``,
#: ``kernel_id``, ``instance``, ``msg_id``, ``seq``, ``code_sha256``, ``arrived``,
#: ``pair_state``.
Row = Mapping[Any, Any]


@dataclass
class Pairing:
    """What one pass decided about the pending records it was given."""

    #: Records matched with one of the other witness.
    paired: list[int] = field(default_factory=list)
    #: Records alone past their grace period (each has an alert).
    alerted: list[int] = field(default_factory=list)
    alerts: list[WitnessAlert] = field(default_factory=list)


def _alert(row: Row, kind: str, reason: str, first: int, last: int) -> WitnessAlert:
    facts = {name: row[name] for name in STREAM_FIELDS}
    return WitnessAlert(kind=kind, reason=reason, first_seq=first, last_seq=last, **facts)


def pair_witnesses(rows: Iterable[Row], cutoff: float) -> Pairing:
    """Pair records by ``(user, kernel_id, msg_id)``, one kernel record with one server
    record, in the order of arrival.

    ``rows`` are pending records and, as partners for late ones, records already
    alerted on (``pair_state`` ``alerted``): a record that arrives after its
    partner's alert is paired with it quietly, since the alert already stands.
    A pair whose code hashes differ is paired and alerted on (``code-differs``).
    A pending record left alone is alerted on (``witness-mismatch``) once it
    arrived at or before ``cutoff``; younger ones wait for the next pass.
    """
    groups: dict[tuple[str, str, str], dict[str, list[Row]]] = {}
    for row in rows:
        key = (row["user"], row["kernel_id"], row["msg_id"])
        groups.setdefault(key, {KERNEL: [], SERVER: []})[row["witness"]].append(row)
    outcome = Pairing()
    for sides in groups.values():
        kernels, servers = (sorted(sides[w], key=_arrival) for w in (KERNEL, SERVER))
        for kernel, server in zip(kernels, servers, strict=False):
            if kernel["pair_state"] != PENDING and server["pair_state"] != PENDING:
                continue
            outcome.paired += [kernel["id"], server["id"]]
            if kernel["code_sha256"] != server["code_sha256"]:
                seq = kernel["seq"]
                outcome.alerts.append(_alert(kernel, WITNESS_MISMATCH, CODE_DIFFERS, seq, seq))
        for row in kernels[len(servers) :] or servers[len(kernels) :]:
            if row["pair_state"] != PENDING or row["arrived"] > cutoff:
                continue
            reason = ONLY_KERNEL if row["witness"] == KERNEL else ONLY_SERVER
            outcome.alerted.append(row["id"])
            outcome.alerts.append(_alert(row, WITNESS_MISMATCH, reason, row["seq"], row["seq"]))
    return outcome


def _arrival(row: Row) -> tuple[float, int]:
    return (row["arrived"], row["id"])


def find_gaps(
    checked_through: int, seqs: Sequence[tuple[int, float]], cutoff: float
) -> tuple[int, list[tuple[int, int]]]:
    """Walk a stream's ``(seq, arrived)`` past ``checked_through``, in seq order.

    Returns the new ``checked_through`` and the missing ranges ``(first, last)``
    to alert on. A gap counts only once a record after it arrived at or before
    ``cutoff``: until then the missing ones may still be on their way (the
    walk stops there, to resume on a later pass).
    """
    expected = checked_through + 1
    gaps: list[tuple[int, int]] = []
    for seq, arrived in seqs:
        if seq < expected:
            continue
        if seq > expected:
            if arrived > cutoff:
                break
            gaps.append((expected, seq - 1))
        expected = seq + 1
    return expected - 1, gaps


def gap_alerts(stream: Row, gaps: Iterable[tuple[int, int]]) -> list[WitnessAlert]:
    """The ``kernel-seq-gap`` alerts of a stream (a row with the stream's columns)."""
    return [_alert({**stream, "msg_id": ""}, SEQ_GAP, GAP, first, last) for first, last in gaps]
