"""Verification: prove a ledger (database or export) has not been altered.

A ledger verifies when its records form an unbroken hash chain from sequence 1,
every checkpoint (stored or held by a witness) carries a valid signature by one of
the given public keys over the hash the chain really has at that point, no witness
checkpoint lies beyond the last record, and at most ``allow_unsigned_tail`` records
come after the last valid checkpoint. Verification stops at the first problem and
raises :class:`LedgerIntegrityError` whose ``seq`` is the first sequence number not
proven intact: the record itself for a record-level problem, or the first record
after the last good checkpoint when only a checkpoint can tell.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from nbguard.errors import LedgerIntegrityError
from nbguard.ledger import parallel
from nbguard.ledger.chain import (
    GENESIS_HASH,
    ChainEntry,
    Segment,
    altered,
    order_problem,
    seal,
)
from nbguard.ledger.checkpoints import Checkpoint
from nbguard.ledger.export import read_export
from nbguard.ledger.ranges import check_range
from nbguard.ledger.schemas import SchemaRegistry, packaged_schemas
from nbguard.ledger.store import LedgerStore

#: Called now and then with the last sequence number verified.
Progress = Callable[[int], None]
_PROGRESS_EVERY = 20_000


@dataclass(frozen=True)
class VerifyReport:
    """What a successful verification proved."""

    records: int
    head: str
    checkpoints: int
    witness_checkpoints: int
    last_signed_seq: int
    key_ids: frozenset[str] = field(default_factory=frozenset)

    @property
    def unsigned_tail(self) -> int:
        """Records after the last valid checkpoint (chained, but not yet signed)."""
        return self.records - self.last_signed_seq


@dataclass
class _Claim:
    checkpoint: Checkpoint
    source: str
    problem: str | None


def verify_chain(
    entries: Iterable[ChainEntry],
    *,
    ledger_id: str,
    checkpoints: Sequence[Checkpoint],
    keys: Mapping[str, Ed25519PublicKey],
    witness: Sequence[Checkpoint] = (),
    allow_unsigned_tail: int = 0,
    progress: Progress | None = None,
) -> VerifyReport:
    """Verify a stream of records against checkpoints; return a report or raise."""
    claims = _claims(ledger_id, checkpoints, keys, witness)
    segment = _check_entries(entries, claims, progress)
    report = _conclude(segment, claims, checkpoints, witness, allow_unsigned_tail)
    if progress is not None:
        progress(report.records)
    return report


def _check_entries(
    entries: Iterable[ChainEntry], wanted: Container[int], progress: Progress | None
) -> Segment:
    """Check a stream of chain entries from record 1 on; stop at the first problem."""
    expected = 1
    prev = GENESIS_HASH
    heads: dict[int, str] = {}
    failure: tuple[int, str] | None = None
    try:
        for seq, claimed_prev, core, commitment, stored in entries:
            if seq != expected:
                failure = order_problem(expected, seq)
                break
            if claimed_prev is not None and claimed_prev != prev:
                failure = (
                    seq,
                    f"record {seq} claims previous hash {claimed_prev}, but record "
                    f"{seq - 1} hashes to {prev}",
                )
                break
            computed = seal(seq, prev, core, commitment)
            if computed != stored:
                failure = altered(seq, computed, stored)
                break
            prev = computed
            if seq in wanted:
                heads[seq] = computed
            if progress is not None and seq % _PROGRESS_EVERY == 0:
                progress(seq)
            expected += 1
    except LedgerIntegrityError as error:  # an unreadable entry, where it stands
        failure = (error.seq if error.seq is not None else -1, str(error))
    return Segment(1, GENESIS_HASH, expected - 1, prev, heads, failure)


def _conclude(
    segment: Segment,
    claims: dict[int, list[_Claim]],
    checkpoints: Sequence[Checkpoint],
    witness: Sequence[Checkpoint],
    allow_unsigned_tail: int,
) -> VerifyReport:
    """Judge the checkpoints against the records checked, in sequence order; report or raise.

    Problems are reported in the order a single pass over the records meets them:
    the checkpoints at records before the first bad record come first.
    """
    last = segment.last
    last_signed = 0
    key_ids: set[str] = set()
    for seq in sorted(claims):
        if seq > last:
            break
        computed = segment.heads[seq]
        for claim in claims.pop(seq):
            unproven = f"records {last_signed + 1}..{seq} are not proven intact"
            if claim.problem:
                _fail(
                    last_signed + 1,
                    f"{claim.source} checkpoint at record {seq}: {claim.problem}; {unproven}",
                )
            if claim.checkpoint.head != computed:
                _fail(
                    last_signed + 1,
                    f"{claim.source} checkpoint at record {seq} signed head "
                    f"{claim.checkpoint.head}, but the chain there is {computed}: the "
                    f"records were rewritten; {unproven}",
                )
            key_ids.add(claim.checkpoint.key_id)
            last_signed = seq
    if segment.failure is not None:
        seq, message = segment.failure
        raise LedgerIntegrityError(message, seq=None if seq < 0 else seq)
    if claims:
        beyond = min(claims)
        source = claims[beyond][0].source
        _fail(
            last + 1,
            f"{source} checkpoint at record {beyond}, but the ledger ends at record "
            f"{last}: records from {last + 1} on were removed (truncated or rolled back)",
        )
    if last - last_signed > allow_unsigned_tail:
        _fail(
            last_signed + 1,
            f"records {last_signed + 1}..{last} are not covered by a signed "
            f"checkpoint (allowed unsigned tail: {allow_unsigned_tail})",
        )
    return VerifyReport(
        records=last,
        head=segment.head,
        checkpoints=len(checkpoints),
        witness_checkpoints=len(witness),
        last_signed_seq=last_signed,
        key_ids=frozenset(key_ids),
    )


def _claims(
    ledger_id: str,
    checkpoints: Sequence[Checkpoint],
    keys: Mapping[str, Ed25519PublicKey],
    witness: Sequence[Checkpoint],
) -> dict[int, list[_Claim]]:
    claims: dict[int, list[_Claim]] = defaultdict(list)
    seen: set[Checkpoint] = set()
    for source, group in (("stored", checkpoints), ("witness", witness)):
        for checkpoint in group:
            if checkpoint in seen:  # the witness copy of a stored checkpoint
                continue
            seen.add(checkpoint)
            problem = checkpoint.problem(keys)
            if checkpoint.ledger != ledger_id:
                problem = f"belongs to ledger {checkpoint.ledger}, not {ledger_id}"
            if checkpoint.seq < 1:
                raise LedgerIntegrityError(
                    f"{source} checkpoint at impossible record {checkpoint.seq}", seq=1
                )
            claims[checkpoint.seq].append(_Claim(checkpoint, source, problem))
    return dict(claims)


def _fail(seq: int, message: str) -> None:
    raise LedgerIntegrityError(message, seq=seq)


def verify_store(
    store: LedgerStore,
    keys: Mapping[str, Ed25519PublicKey],
    *,
    witness: Sequence[Checkpoint] = (),
    allow_unsigned_tail: int = 0,
    progress: Progress | None = None,
    on_total: Callable[[int], None] | None = None,
    jobs: int | None = None,
) -> VerifyReport:
    """Verify the ledger in a database, in one consistent snapshot.

    ``jobs`` is how many processes check records: None (default) uses every
    available core (up to 4) for ledgers of at least ``PARALLEL_MIN_RECORDS``
    records and one process otherwise; 1 never starts a helper process.
    """
    with store.snapshot() as snapshot:
        total = snapshot.last_seq()
        if on_total is not None:
            on_total(total)
        checkpoints = snapshot.checkpoints()
        claims = _claims(snapshot.ledger_id, checkpoints, keys, witness)
        helpers = _helpers(jobs, total)
        if helpers:
            segment = parallel.check_in_parallel(
                snapshot.driver,
                snapshot.dialect,
                total,
                list(claims),
                snapshot.helper_job(),
                helpers,
                progress,
            )
        else:
            segment = check_range(snapshot.driver, snapshot.dialect, 1, total, claims, progress)
    report = _conclude(segment, claims, checkpoints, witness, allow_unsigned_tail)
    if progress is not None:
        progress(report.records)
    return report


#: Below this many records one process is as fast: a helper takes ~50 ms to start
#: (about 10,000 records' work). Measured on 2 cores: no gain at 20,000 records,
#: 1.3x at 60,000, 1.8x at 150,000.
PARALLEL_MIN_RECORDS = 50_000


def _helpers(jobs: int | None, total: int) -> int:
    """How many helper processes to start besides this one."""
    if jobs is None:
        if total < PARALLEL_MIN_RECORDS:
            return 0
        jobs = min(parallel.available_cores(), 4)
    ranges = -(-total // parallel.RANGE_SIZE)
    return max(0, min(jobs - 1, ranges - 1))


def verify_export(
    path: str | Path,
    keys: Mapping[str, Ed25519PublicKey],
    *,
    witness: Sequence[Checkpoint] = (),
    allow_unsigned_tail: int = 0,
    progress: Progress | None = None,
    on_total: Callable[[int], None] | None = None,
    schemas: SchemaRegistry | None = None,
) -> VerifyReport:
    """Verify an exported JSONL ledger (full or redacted)."""
    with read_export(path, schemas or packaged_schemas()) as export:
        if on_total is not None:
            on_total(export.records)
        report = verify_chain(
            export.entries(),
            ledger_id=export.ledger_id,
            checkpoints=export.checkpoints,
            keys=keys,
            witness=witness,
            allow_unsigned_tail=allow_unsigned_tail,
            progress=progress,
        )
    if report.records < export.records:
        _fail(
            report.records + 1,
            f"the export ends at record {report.records}, but its "
            f"header announces {export.records} records",
        )
    return report
