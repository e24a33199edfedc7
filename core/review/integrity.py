"""Integrity of the records a reviewer sees: each record's own hash, and the whole chain.

Two checks, both from :mod:`nbguard.ledger`:

- each shown record is re-hashed from its content and the hash of the record
  before it, exactly as verification does (cheap, always fresh): an edited record
  shows as ``broken`` even when nothing else was checked;
- the ledger as a whole is verified (:func:`verify_store` / :func:`verify_export`,
  chain and signed checkpoints). A record at or after the first record not proven
  intact is ``broken``; one covered by a valid checkpoint is ``intact``; one after
  the last checkpoint is ``unsigned`` (chained only, until the next checkpoint).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from nbguard.errors import LedgerIntegrityError
from nbguard.ledger.chain import seal
from nbguard.ledger.checkpoints import Checkpoint
from nbguard.ledger.records import sealed_parts
from nbguard.ledger.schemas import packaged_schemas
from nbguard.ledger.store import LedgerStore
from nbguard.ledger.verify import VerifyReport, verify_export, verify_store
from nbguard.review.entries import Entry

INTACT, UNSIGNED, BROKEN = "intact", "unsigned", "broken"


@dataclass(frozen=True)
class LedgerStatus:
    """The verdict on the whole ledger when the review was built."""

    verified: bool
    records: int
    head: str
    last_signed_seq: int
    checkpoint: dict[str, Any] | None
    #: The first record not proven intact (None when verified).
    failed_at: int | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (API, pages, export provenance)."""
        return {
            "verified": self.verified,
            "records": self.records,
            "head": self.head,
            "last_signed_seq": self.last_signed_seq,
            "checkpoint": self.checkpoint,
            "failed_at": self.failed_at,
            "message": self.message,
        }


def _status(
    run: Any, checkpoints: Sequence[Checkpoint], keys: Mapping[str, Ed25519PublicKey]
) -> LedgerStatus:
    if not keys:
        return LedgerStatus(
            False, 0, "", 0, None, None, "no public key configured: checkpoints not checked"
        )
    try:
        report: VerifyReport = run()
    except LedgerIntegrityError as error:
        failed_at = error.seq or 1
        # Verification meets problems in sequence order, so a validly signed
        # checkpoint before the first bad record was checked and held.
        good = [c for c in checkpoints if c.seq < failed_at and c.problem(keys) is None]
        last = good[-1] if good else None
        return LedgerStatus(
            False,
            0,
            "",
            last.seq if last else 0,
            last.to_json() if last else None,
            failed_at,
            str(error),
        )
    signed = [c for c in checkpoints if c.seq == report.last_signed_seq]
    checkpoint = signed[-1].to_json() if signed else None
    return LedgerStatus(
        True, report.records, report.head, report.last_signed_seq, checkpoint, None, ""
    )


def store_status(store: LedgerStore, keys: Mapping[str, Ed25519PublicKey]) -> LedgerStatus:
    """Verify the ledger database (records after the last checkpoint are allowed:
    a live ledger has some; they show as ``unsigned``)."""
    with store.snapshot() as snapshot:
        checkpoints = snapshot.checkpoints()
    return _status(
        lambda: verify_store(store, keys, allow_unsigned_tail=2**62, jobs=1),
        checkpoints,
        keys,
    )


def export_status(
    path: str | Path, checkpoints: Sequence[Checkpoint], keys: Mapping[str, Ed25519PublicKey]
) -> LedgerStatus:
    """Verify an export file the same way."""
    return _status(lambda: verify_export(path, keys, allow_unsigned_tail=2**62), checkpoints, keys)


def record_intact(entry: Entry) -> bool:
    """True if the record's hash, recomputed from its content and ``prev``, is its own."""
    try:
        core, commitments = sealed_parts(entry, packaged_schemas())
        computed = seal(int(entry["seq"]), str(entry["prev"]), core, commitments)
        return bool(computed == entry["hash"])
    except (LedgerIntegrityError, KeyError, TypeError, ValueError):
        return False


def record_status(entry: Entry, ledger: LedgerStatus) -> str:
    """``intact``, ``unsigned`` or ``broken`` for one shown record."""
    seq = int(entry["seq"])
    if not record_intact(entry):
        return BROKEN
    if ledger.failed_at is not None and seq >= ledger.failed_at:
        return BROKEN
    if seq <= ledger.last_signed_seq:
        return INTACT
    return UNSIGNED
