"""The hash chain: record hashes, personal commitments, and checking stored records.

This module holds what verification runs for every record, and nothing heavier:
it imports no database layer and no schema machinery, so that a verification
helper process (``python -m nbguard.ledger.ranges``) starts in a few milliseconds.
The bytes are specified in ``docs/ledger-format.md``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Container, Iterable, Sequence
from typing import NamedTuple

#: The ``prev`` of the first record.
GENESIS_HASH = "0" * 64

_sha256 = hashlib.sha256
#: A commitment or record hash: 64 lowercase hex digits.
_DIGEST = re.compile(r"[0-9a-f]{64}")


def seal(seq: int, prev: str, core: bytes, commitment: str) -> str:
    """Return the hex record hash of record ``seq`` chained after ``prev``.

    ``commitment`` is the record's personal commitment, 64 lowercase hex digits
    (:func:`is_digest`; readers of exports check that). Anything that is not 64
    bytes long raises ValueError: every part of the hashed bytes but the core then
    has a fixed length, so the bytes split back into their parts one way only.
    """
    digest = commitment.encode()
    if len(digest) != 64:
        raise ValueError("a personal commitment is 64 hex digits")
    return _sha256(
        b'{"personal":"%b","prev":"%b","record":%b,"seq":%d}' % (digest, prev.encode(), core, seq)
    ).hexdigest()


def is_digest(value: object) -> bool:
    """Whether ``value`` is a hex SHA-256 digest as the ledger writes them (64 lowercase)."""
    return type(value) is str and _DIGEST.fullmatch(value) is not None


def commitment_of(personal: str | bytes) -> str:
    """Return the hex SHA-256 commitment to a record's stored personal part.

    The stored personal part is the canonical JSON the commitment hashes, so it is
    hashed as it stands: if the record hash then matches, the stored bytes are
    exactly the ones committed to.
    """
    return _sha256(personal.encode() if isinstance(personal, str) else personal).hexdigest()


class ChainEntry(NamedTuple):
    """What verification needs of one record; ``prev`` is None when the source has none."""

    seq: int
    prev: str | None
    core: bytes
    commitment: str
    hash: str


# -- checking stored records ------------------------------------------------------------

#: ``(seq, core, personal, hash)`` of a stored record, with core and personal as UTF-8.
StoredRow = tuple[int, bytes, "bytes | None", str]


class Segment(NamedTuple):
    """What checking a run of stored records found.

    ``first`` is the run's first record and ``start_prev`` the hash it was chained
    from, ``last`` and ``head`` the last record proven and its hash, ``heads`` the
    hash at each wanted sequence number reached, and ``failure`` the first problem
    as ``(seq, message)``.
    """

    first: int
    start_prev: str
    last: int
    head: str
    heads: dict[int, str]
    failure: tuple[int, str] | None


def check_rows(
    rows: Iterable[StoredRow], *, first: int, prev: str, wanted: Container[int]
) -> Segment:
    """Check stored records, expected to be numbered ``first``, ``first + 1``, ..., in order.

    Each record is re-hashed from its stored bytes and chained after ``prev``
    (the hash of record ``first - 1``). Stops at the first problem: a missing or
    misplaced record, a missing personal part, or a hash that differs.
    """
    heads: dict[int, str] = {}
    expected = first
    start_prev = prev
    sha256 = _sha256
    prev_bytes = prev.encode()
    for seq, core, personal, stored in rows:
        if seq != expected:
            return Segment(
                first, start_prev, expected - 1, prev, heads, order_problem(expected, seq)
            )
        if personal is None:
            message = f"record {seq} was altered: its personal fields are missing"
            return Segment(first, start_prev, expected - 1, prev, heads, (seq, message))
        computed = sha256(
            b'{"personal":"%b","prev":"%b","record":%b,"seq":%d}'
            % (sha256(personal).hexdigest().encode(), prev_bytes, core, seq)
        ).hexdigest()
        if computed != stored:
            return Segment(
                first, start_prev, expected - 1, prev, heads, altered(seq, computed, stored)
            )
        prev = computed
        prev_bytes = computed.encode()
        if seq in wanted:
            heads[seq] = computed
        expected += 1
    return Segment(first, start_prev, expected - 1, prev, heads, None)


def check_chunks(
    chunks: Iterable[Sequence[StoredRow]], *, first: int, prev: str, wanted: Container[int]
) -> Segment:
    """Like :func:`check_rows`, for rows in chunks (as drivers fetch them), faster.

    A chunk is checked as a whole: each record is sealed after the *stored* hash
    of the record before it, and all the hashes are compared at once. That proves
    the same as the record-by-record chain (if every record hashes to its stored
    hash, the stored hashes are the chain). A chunk with any problem is checked
    again record by record, which finds the first problem and says what it is.
    """
    heads: dict[int, str] = {}
    expected = first
    start_prev = prev
    sha256 = _sha256
    for rows in chunks:
        count = len(rows)
        seqs, cores, personals, stored = zip(*rows, strict=True)
        computed: list[str] = []
        try:
            if seqs == tuple(range(expected, expected + count)):
                befores = [prev.encode(), *[digest.encode() for digest in stored[:-1]]]
                computed = [
                    sha256(
                        b'{"personal":"%b","prev":"%b","record":%b,"seq":%d}'
                        % (sha256(personal).hexdigest().encode(), before, core, seq)
                    ).hexdigest()
                    for personal, before, core, seq in zip(
                        personals, befores, cores, seqs, strict=True
                    )
                ]
        except (ValueError, TypeError, AttributeError):  # unreadable rows: see below
            computed = []
        if computed != list(stored):
            segment = check_rows(rows, first=expected, prev=prev, wanted=wanted)
            heads.update(segment.heads)
            return segment._replace(first=first, start_prev=start_prev, heads=heads)
        heads.update(
            (seq, digest) for seq, digest in zip(seqs, computed, strict=True) if seq in wanted
        )
        prev = computed[-1]
        expected += count
    return Segment(first, start_prev, expected - 1, prev, heads, None)


def order_problem(expected: int, seq: int) -> tuple[int, str]:
    """The failure when record ``seq`` comes where record ``expected`` should."""
    if seq > expected:
        return expected, f"record {expected} is missing (the next record is {seq})"
    return seq, f"record {seq} is out of order or duplicated (after record {expected - 1})"


def altered(seq: int, computed: str, stored: str) -> tuple[int, str]:
    """The failure when record ``seq`` does not hash to its stored hash."""
    return seq, (
        f"record {seq} was altered: its content hashes to {computed}, not to the stored {stored}"
    )
