"""Building, sealing and (de)serialising ledger records.

A record has three representations, all defined in ``docs/ledger-format.md``:

* the *core*: canonical JSON of the record with every personal field removed
  (``{"body": ..., "kind": ..., "session": ..., "time": ..., "v": ...}``);
* the *personal part*: for each personal field present (``"actor"`` and each
  ``"body.<name>"`` the schema marks), in path order, the canonical
  ``{"path": ..., "salt": ..., "value": ...}`` its commitment hashes, one per line;
* the *commitments*: ``{path: SHA-256(canonical {"path", "salt", "value"})}``.

The record hash is SHA-256 over the canonical JSON of
``{"personal": commitments, "prev": previous hash, "record": core, "seq": seq}``,
so it commits to each personal value without containing it: an export may replace
a value (and its salt) by its commitment and still verify. The random per-field
salt stops anyone holding a redacted export from guessing low-entropy values.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from typing import Any, NamedTuple

from nbguard.errors import LedgerIntegrityError, RecordValidationError
from nbguard.ledger.canonical import (
    canonical_bytes,
    check_canonical,
    encode,
    encode_text,
    format_time,
)
from nbguard.ledger.chain import (
    GENESIS_HASH,
    ChainEntry,
    commitment,
    commitments_of,
    personal_entries,
    seal,
)
from nbguard.ledger.schemas import SchemaRegistry

__all__ = [
    "ACTOR",
    "GENESIS_HASH",
    "ChainEntry",
    "PreparedRecord",
    "commitment",
    "commitments_of",
    "export_line",
    "personal_entries",
    "prepare_record",
    "seal",
    "sealed_parts",
]

#: The personal envelope field; body fields are ``"body.<name>"``.
ACTOR = "actor"
_SALT_BYTES = 16
_MAX_ID_LENGTH = 256


class PreparedRecord(NamedTuple):
    """A validated record waiting for its sequence number (a tuple: cheap to make and keep)."""

    kind: str
    time: str
    #: Canonical JSON of the core, as stored and hashed.
    core: str
    #: The stored personal part: each field's commitment preimage, one per line.
    personal: str
    #: Canonical JSON bytes of ``{path: commitment}``.
    commitments: bytes


def prepare_record(
    schemas: SchemaRegistry,
    kind: str,
    body: Any,
    *,
    actor: str,
    session: str | None,
    time: str | None = None,
) -> PreparedRecord:
    """Validate a record against its kind's newest schema and split out its personal fields.

    Raises :class:`RecordValidationError` naming the offending field; nothing is
    kept on failure.
    """
    schema = schemas.current(kind)
    if type(body) is not dict:
        raise RecordValidationError(f"{kind} record: body must be an object", field="body")
    # Plain ASCII ids of sane length, the usual case, need no further look.
    if type(actor) is not str or not 0 < len(actor) <= _MAX_ID_LENGTH or not actor.isascii():
        _check_id(actor, "actor", optional=False)
    if session is not None and (
        type(session) is not str or not 0 < len(session) <= _MAX_ID_LENGTH or not session.isascii()
    ):
        _check_id(session, "session", optional=True)
    check_canonical(body, "body")
    schema.validate(body)
    public = body
    salts = _salts.take(1 + len(schema.personal))
    # The preimage of each commitment is stored as it is hashed (one per line:
    # canonical JSON has no raw newline), so verification hashes the stored text
    # as it stands instead of parsing and re-encoding it. Paths in path order:
    # "actor" sorts before every "body.*".
    preimage = f'{{"path":"actor","salt":"{salts[:32]}","value":{encode_text(actor)}}}'
    stored = [preimage]
    committed = [f'"actor":"{_sha256(preimage.encode()).hexdigest()}"']
    if schema.personal:
        public = body.copy()
        offset = 32
        for name, path_json in schema.personal_paths:
            if name not in public:
                continue
            value = public.pop(name)
            value_json = encode_text(value) if type(value) is str else encode(value)
            salt = salts[offset : offset + 32]
            offset += 32
            preimage = f'{{"path":{path_json},"salt":"{salt}","value":{value_json}}}'
            stored.append(preimage)
            committed.append(f'{path_json}:"{_sha256(preimage.encode()).hexdigest()}"')
    if time is None:
        moment = format_time()  # digits, '-', ':', '.', 'T', 'Z': nothing to escape
        moment_json = f'"{moment}"'
    else:
        check_canonical(time, "time")
        moment, moment_json = time, encode_text(time)
    session_json = "null" if session is None else encode_text(session)
    # The core's keys in canonical (sorted) order, assembled around one encoding of the body.
    core = (
        f'{{"body":{encode(public)},"kind":{schema.kind_json},"session":{session_json},'
        f'"time":{moment_json},"v":{schema.version}}}'
    )
    return PreparedRecord(
        kind, moment, core, "\n".join(stored), f"{{{','.join(committed)}}}".encode()
    )


_sha256 = hashlib.sha256


class _SaltPool:
    """Fresh random salts (hex), drawn from the OS a few hundred at a time.

    One ``getrandom`` call per record cost a third as much as hashing it. Each
    salt is handed out once: under a lock, and a forked child starts with an
    empty pool rather than a copy of its parent's.
    """

    _SIZE = 256

    def __init__(self) -> None:
        self._forget()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._text = ""
        self._used = self._SIZE

    def take(self, count: int) -> str:
        """Return ``count`` unused salts, concatenated (32 hex characters each)."""
        width = 2 * _SALT_BYTES
        with self._lock:
            if self._used + count > self._SIZE:
                self._text = os.urandom(_SALT_BYTES * max(self._SIZE, count)).hex()
                self._used = 0
            start = self._used * width
            self._used += count
            return self._text[start : start + count * width]


_salts = _SaltPool()


def _check_id(value: Any, field: str, *, optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_ID_LENGTH:
        raise RecordValidationError(
            f"{field} must be a non-empty string of at most {_MAX_ID_LENGTH} characters",
            field=field,
        )
    check_canonical(value, field)


def export_line(
    seq: int, prev: str, record_hash: str, core: str, personal: str | None, *, redact: bool
) -> dict[str, Any]:
    """Return the JSON object of one exported record, with personal fields in place or redacted.

    In a full export each personal value sits where it belongs and its salt is under
    ``salts``; in a redacted one the value is gone and ``redacted`` holds its commitment.
    """
    record = json.loads(core)
    line: dict[str, Any] = {"type": "record", "seq": seq, "prev": prev, "hash": record_hash}
    entries = personal_entries(personal)
    if redact:
        line["redacted"] = {path: commitment(path, salt, value) for path, salt, value in entries}
    else:
        for path, _salt, value in entries:
            _put(record, path, value)
        line["salts"] = {path: salt for path, salt, _value in entries}
    line["record"] = record
    return line


def sealed_parts(line: dict[str, Any], schemas: SchemaRegistry) -> tuple[bytes, bytes]:
    """Return ``(core, commitments)`` bytes of an exported record line, to :func:`seal` it.

    Raises :class:`LedgerIntegrityError` if the line is malformed or names personal
    fields its schema does not have.
    """
    seq = line.get("seq")
    try:
        record = dict(line["record"])
        record["body"] = dict(record["body"])
        schema = schemas.get(record["kind"], record["v"])
        salts = line.get("salts", {})
        redacted = line.get("redacted", {})
        paths = [ACTOR, *(f"body.{name}" for name in sorted(schema.personal))]
        unknown = (set(salts) | set(redacted)) - set(paths)
        if unknown:
            raise LedgerIntegrityError(
                f"record {seq}: {', '.join(sorted(unknown))} is not a personal field of "
                f"{schema.schema_id}",
                seq=seq,
            )
        commitments = {}
        for path in paths:
            if _has(record, path):
                commitments[path] = commitment(path, salts[path], _pop(record, path))
            elif path in redacted:
                commitments[path] = redacted[path]
    except (KeyError, TypeError, AttributeError, RecordValidationError) as error:
        raise LedgerIntegrityError(
            f"record {seq}: malformed record line ({error})", seq=seq
        ) from None
    return canonical_bytes(record), canonical_bytes(commitments)


def _split(path: str) -> tuple[str, str | None]:
    head, _, name = path.partition(".")
    return head, name or None


def _has(record: dict[str, Any], path: str) -> bool:
    head, name = _split(path)
    return head in record if name is None else name in record[head]


def _pop(record: dict[str, Any], path: str) -> Any:
    head, name = _split(path)
    return record.pop(head) if name is None else record[head].pop(name)


def _put(record: dict[str, Any], path: str, value: Any) -> None:
    head, name = _split(path)
    if name is None:
        record[head] = value
    else:
        record[head][name] = value
