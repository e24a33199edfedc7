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
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from nbguard.errors import LedgerIntegrityError
from nbguard.ledger.checkpoints import Checkpoint
from nbguard.ledger.export import read_export
from nbguard.ledger.records import GENESIS_HASH, ChainEntry, commitments_of, seal
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
    expected = 1
    prev = GENESIS_HASH
    last_signed = 0
    key_ids: set[str] = set()
    for seq, claimed_prev, core, commitments, stored in entries:
        if seq != expected:
            if seq > expected:
                _fail(expected, f"record {expected} is missing (the next record is {seq})")
            _fail(seq, f"record {seq} is out of order or duplicated (after record {expected - 1})")
        if claimed_prev is not None and claimed_prev != prev:
            _fail(
                seq,
                f"record {seq} claims previous hash {claimed_prev}, but record "
                f"{seq - 1} hashes to {prev}",
            )
        computed = seal(seq, prev, core, commitments)
        if computed != stored:
            _fail(
                seq,
                f"record {seq} was altered: its content hashes to {computed}, "
                f"not to the stored {stored}",
            )
        prev = computed
        for claim in claims.pop(seq, ()):
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
        if progress is not None and seq % _PROGRESS_EVERY == 0:
            progress(seq)
        expected += 1
    last = expected - 1
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
    if progress is not None:
        progress(last)
    return VerifyReport(
        records=last,
        head=prev,
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
) -> VerifyReport:
    """Verify the ledger in a database, in one consistent snapshot."""
    with store.snapshot() as snapshot:
        if on_total is not None:
            on_total(snapshot.last_seq())
        with closing(snapshot.rows()) as rows:
            entries = (
                ChainEntry(seq, None, core.encode("utf-8"), commitments_of(personal), record_hash)
                for seq, core, personal, record_hash in rows
            )
            return verify_chain(
                entries,
                ledger_id=snapshot.ledger_id,
                checkpoints=snapshot.checkpoints(),
                keys=keys,
                witness=witness,
                allow_unsigned_tail=allow_unsigned_tail,
                progress=progress,
            )


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
