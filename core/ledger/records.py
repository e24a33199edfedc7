"""Building, sealing and (de)serialising ledger records.

A record has three representations, all defined in ``docs/ledger-format.md``:

* the *core*: canonical JSON of the record with every personal field removed
  (``{"body": ..., "kind": ..., "session": ..., "time": ..., "v": ...}``);
* the *personal part*: ``[[path, salt, value], ...]`` in path order for each
  personal field present (``"actor"`` and each ``"body.<name>"`` the schema marks);
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
from dataclasses import dataclass
from typing import Any, NamedTuple

from nbguard.errors import LedgerIntegrityError, RecordValidationError
from nbguard.ledger.canonical import (
    canonical_bytes,
    check_canonical,
    encode,
    encode_text,
    format_time,
)
from nbguard.ledger.schemas import SchemaRegistry

#: The ``prev`` of the first record.
GENESIS_HASH = "0" * 64
#: The personal envelope field; body fields are ``"body.<name>"``.
ACTOR = "actor"
_SALT_BYTES = 16
_MAX_ID_LENGTH = 256


@dataclass(frozen=True, slots=True)
class PreparedRecord:
    """A validated record waiting for its sequence number."""

    kind: str
    time: str
    core: str
    personal: str | None
    commitments: bytes


class ChainEntry(NamedTuple):
    """What verification needs of one record; ``prev`` is None when the source has none."""

    seq: int
    prev: str | None
    core: bytes
    commitments: bytes
    hash: str


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
    if not isinstance(body, dict):
        raise RecordValidationError(f"{kind} record: body must be an object", field="body")
    _check_id(actor, "actor", optional=False)
    _check_id(session, "session", optional=True)
    check_canonical(body, "body")
    schema.validate(body)
    personal_names = schema.personal
    public = body
    # In path order ("actor" sorts before "body.*"), as the commitments map needs.
    fields: list[tuple[str, Any]] = [(ACTOR, actor)]
    if personal_names:
        public = {name: value for name, value in body.items() if name not in personal_names}
        fields += [(f"body.{name}", body[name]) for name in personal_names if name in body]
    salts = os.urandom(_SALT_BYTES * len(fields)).hex()
    step = 2 * _SALT_BYTES
    # Each value is encoded once: the same canonical text is hashed into its
    # commitment and stored in the personal part (any compact JSON will do there).
    stored: list[str] = []
    committed: list[str] = []
    for index, (path, value) in enumerate(fields):
        path_json = encode_text(path)
        salt = salts[index * step : (index + 1) * step]
        value_json = encode(value)
        digest = _sha256(
            ('{"path":' + path_json + ',"salt":"' + salt + '","value":' + value_json + "}").encode()
        ).hexdigest()
        stored.append("[" + path_json + ',"' + salt + '",' + value_json + "]")
        committed.append(path_json + ':"' + digest + '"')
    moment = time or format_time()
    # The core's keys in canonical (sorted) order, assembled around one encoding of the body.
    core = (
        '{"body":' + encode(public) + ',"kind":' + encode_text(kind)
        + ',"session":' + ("null" if session is None else encode_text(session))
        + ',"time":' + encode_text(moment) + ',"v":' + str(schema.version) + "}"
    )  # fmt: skip
    return PreparedRecord(
        kind=kind,
        time=moment,
        core=core,
        personal="[" + ",".join(stored) + "]",
        commitments=("{" + ",".join(committed) + "}").encode(),
    )


_sha256 = hashlib.sha256


def _commitment_map(entries: list[list[Any]]) -> bytes:
    """Canonical ``{path: commitment}`` of ``[path, salt, value]`` entries sorted by path."""
    items = []
    for path, salt, value in entries:
        items.append(encode(path) + ':"' + commitment(path, salt, value) + '"')
    return ("{" + ",".join(items) + "}").encode("utf-8")


def _check_id(value: Any, field: str, *, optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_ID_LENGTH:
        raise RecordValidationError(
            f"{field} must be a non-empty string of at most {_MAX_ID_LENGTH} characters",
            field=field,
        )
    check_canonical(value, field)


def commitment(path: str, salt: str, value: Any) -> str:
    """Return the hex SHA-256 commitment to one personal field's value.

    The hashed bytes are the canonical JSON of ``{"path": ..., "salt": ..., "value": ...}``,
    assembled directly (keys already in order) because this runs for every
    personal field of every record appended or verified.
    """
    # Strings, the usual case, skip the general encoder; anything else (even a
    # tampered non-string path or salt) is encoded canonically all the same.
    text = (
        '{"path":' + (encode_text(path) if type(path) is str else encode(path))
        + ',"salt":' + (encode_text(salt) if type(salt) is str else encode(salt))
        + ',"value":' + (encode_text(value) if type(value) is str else encode(value)) + "}"
    )  # fmt: skip
    return _sha256(text.encode("utf-8")).hexdigest()


def commitments_of(personal: str | None) -> bytes:
    """Recompute the canonical commitments map from a stored personal part."""
    if not personal:
        return b"{}"
    return _commitment_map(_parse(personal))


_parse = json.JSONDecoder().decode


def seal(seq: int, prev: str, core: bytes, commitments: bytes) -> str:
    """Return the hex record hash of record ``seq`` chained after ``prev``."""
    digest = hashlib.sha256(b'{"personal":')
    digest.update(commitments)
    digest.update(b',"prev":"' + prev.encode("ascii") + b'","record":')
    digest.update(core)
    digest.update(b',"seq":%d}' % seq)
    return digest.hexdigest()


def export_line(
    seq: int, prev: str, record_hash: str, core: str, personal: str | None, *, redact: bool
) -> dict[str, Any]:
    """Return the JSON object of one exported record, with personal fields in place or redacted.

    In a full export each personal value sits where it belongs and its salt is under
    ``salts``; in a redacted one the value is gone and ``redacted`` holds its commitment.
    """
    record = json.loads(core)
    line: dict[str, Any] = {"type": "record", "seq": seq, "prev": prev, "hash": record_hash}
    entries = json.loads(personal) if personal else []
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
