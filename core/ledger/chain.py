"""The hash chain: record hashes, commitments, and checking stored records against them.

This module holds what verification runs for every record, and nothing heavier:
it imports no database layer and no schema machinery, so that a verification
worker process (``nbguard.ledger.verify_worker``) starts in a few milliseconds.
The bytes are specified in ``docs/ledger-format.md``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Container, Iterable, Sequence
from typing import Any, NamedTuple

from nbguard.ledger.canonical import encode, encode_text

#: The ``prev`` of the first record.
GENESIS_HASH = "0" * 64

_sha256 = hashlib.sha256
_parse = json.JSONDecoder().decode


def seal(seq: int, prev: str, core: bytes, commitments: bytes) -> str:
    """Return the hex record hash of record ``seq`` chained after ``prev``."""
    return _sha256(
        b'{"personal":%b,"prev":"%b","record":%b,"seq":%d}'
        % (commitments, prev.encode(), core, seq)
    ).hexdigest()


def commitment(path: Any, salt: Any, value: Any) -> str:
    """Return the hex SHA-256 commitment to one personal field's value.

    The hashed bytes are the canonical JSON of ``{"path": ..., "salt": ..., "value": ...}``,
    assembled directly (keys already in order).
    """
    # Strings, the usual case, skip the general encoder; anything else (even a
    # tampered non-string path or salt) is encoded canonically all the same.
    text = (
        '{"path":' + (encode_text(path) if type(path) is str else encode(path))
        + ',"salt":' + (encode_text(salt) if type(salt) is str else encode(salt))
        + ',"value":' + (encode_text(value) if type(value) is str else encode(value)) + "}"
    )  # fmt: skip
    return _sha256(text.encode("utf-8")).hexdigest()


class ChainEntry(NamedTuple):
    """What verification needs of one record; ``prev`` is None when the source has none."""

    seq: int
    prev: str | None
    core: bytes
    commitments: bytes
    hash: str


# -- the stored personal part ---------------------------------------------------------
#
# Stored form: each personal field's commitment preimage, one per line, exactly as
# hashed. Older databases hold a JSON array of [path, salt, value] instead.

#: ``{"path":"actor"`` (a stored line up to its salt) -> ``"actor"`` (its key in the map).
_keys: dict[bytes, bytes] = {}
_MAX_KEYS = 4096
_LINE_START = b'{"path":"'
_SALT = b',"salt":'


def _plain_key(prefix: bytes) -> bytes | None:
    """Return the map key of a stored line's prefix, or None if it is not a plain string.

    A key is taken from the stored text as it stands only when it is a JSON string
    with no quote or backslash inside, so that the commitments map splits back into
    keys and digests one way only: a tampered line cannot pose as two entries.
    """
    key = prefix[8:]
    if (
        not prefix.startswith(_LINE_START)
        or len(key) < 2
        or key[-1:] != b'"'
        or b'"' in key[1:-1]
        or b"\\" in key
        or b"\n" in key
    ):
        return None
    if len(_keys) < _MAX_KEYS:  # bounded: tampered rows could bring endless variants
        _keys[prefix] = key
    return key


def stored_commitments(personal: bytes | None) -> bytes:
    """Return the canonical ``{path: commitment}`` map of a stored personal part (UTF-8).

    Lines of the current form are hashed as they are stored: if the record hash
    then matches, the stored bytes are exactly the ones committed to. Lines that
    do not have the plain form, and the older JSON-array form, are parsed and
    re-encoded. Raises ValueError or TypeError if the text cannot be read at all
    (verification reports that as an altered record).
    """
    if not personal:
        return b"{}"
    if personal[:1] == b"[":
        entries = _parse(personal.decode())
        return _commitment_map([(path, salt, value) for path, salt, value in entries])
    items = []
    keys = _keys
    for line in personal.split(b"\n"):
        prefix = line[: line.find(_SALT, 8)]
        key = keys.get(prefix) or _plain_key(prefix)
        if key is None:
            path, salt, value = _entry(line.decode())
            items.append(
                b'%b:"%b"' % (encode(path).encode(), commitment(path, salt, value).encode())
            )
        else:
            items.append(key + b':"' + _sha256(line).hexdigest().encode() + b'"')
    return b"{" + b",".join(items) + b"}"


def commitments_of(personal: str | None) -> bytes:
    """Like :func:`stored_commitments`, for a personal part read as text."""
    return stored_commitments(personal.encode() if personal else None)


def personal_entries(personal: str | None) -> list[tuple[Any, Any, Any]]:
    """Return ``(path, salt, value)`` of each personal field in a stored personal part.

    Reads both storage forms; raises ValueError if the text is neither.
    """
    if not personal:
        return []
    if personal[0] == "[":
        return [(path, salt, value) for path, salt, value in _parse(personal)]
    return [_entry(line) for line in personal.split("\n")]


def _entry(line: str) -> tuple[Any, Any, Any]:
    data = _parse(line)
    if type(data) is not dict or data.keys() != {"path", "salt", "value"}:
        raise ValueError("a personal field must be an object of path, salt and value")
    return data["path"], data["salt"], data["value"]


def _commitment_map(entries: list[tuple[Any, Any, Any]]) -> bytes:
    """Canonical ``{path: commitment}`` of ``(path, salt, value)`` entries sorted by path."""
    items = [f'{encode(path)}:"{commitment(path, salt, value)}"' for path, salt, value in entries]
    return f"{{{','.join(items)}}}".encode()


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
    misplaced record, an unreadable personal part, or a hash that differs.
    """
    heads: dict[int, str] = {}
    expected = first
    start_prev = prev
    sha256 = _sha256
    commitments_of_row = stored_commitments
    prev_bytes = prev.encode()
    for seq, core, personal, stored in rows:
        if seq != expected:
            return Segment(
                first, start_prev, expected - 1, prev, heads, order_problem(expected, seq)
            )
        try:
            commitments = commitments_of_row(personal)
        except (ValueError, TypeError):
            message = f"record {seq} was altered: its personal fields are unreadable"
            return Segment(first, start_prev, expected - 1, prev, heads, (seq, message))
        computed = sha256(
            b'{"personal":%b,"prev":"%b","record":%b,"seq":%d}'
            % (commitments, prev_bytes, core, seq)
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
                        b'{"personal":%b,"prev":"%b","record":%b,"seq":%d}'
                        % (commitments, before, core, seq)
                    ).hexdigest()
                    for commitments, before, core, seq in zip(
                        map(stored_commitments, personals), befores, cores, seqs, strict=True
                    )
                ]
        except (ValueError, TypeError):
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
