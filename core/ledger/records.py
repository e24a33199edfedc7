"""Building, sealing and (de)serialising ledger records.

A record has three representations, all defined in ``docs/ledger-format.md``:

* the *core*: canonical JSON of the record with every personal field removed and
  the list of the personal fields it had
  (``{"body": ..., "kind": ..., "personal": [paths], "session": ..., "time": ..., "v": ...}``);
* the *personal part*: canonical JSON of ``{path: value, ..., "salt": salt}`` for
  each personal field present (``"actor"`` and each ``"body.<name>"`` the schema
  marks), with one fresh random salt;
* the *commitment*: SHA-256 of the personal part, in hex.

The record hash is SHA-256 over the canonical JSON of
``{"personal": commitment, "prev": previous hash, "record": core, "seq": seq}``,
so it commits to the personal values without containing them: an export may
replace them (and the salt) by the commitment and still verify. The random salt
stops anyone holding a redacted export from guessing low-entropy values.
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
from nbguard.ledger.chain import GENESIS_HASH, ChainEntry, commitment_of, is_digest, seal
from nbguard.ledger.schemas import SchemaRegistry

__all__ = [
    "ACTOR",
    "GENESIS_HASH",
    "ChainEntry",
    "PreparedRecord",
    "commitment_of",
    "export_line",
    "personal_values",
    "prepare_record",
    "seal",
    "sealed_parts",
]

#: The personal envelope field; body fields are ``"body.<name>"``.
ACTOR = "actor"
#: The personal part's key for its salt (never a path: paths are ``actor`` or ``body.*``).
SALT = "salt"
_SALT_BYTES = 16
_MAX_ID_LENGTH = 256


class PreparedRecord(NamedTuple):
    """A validated record waiting for its sequence number (a tuple: cheap to make and keep)."""

    kind: str
    time: str
    #: Canonical JSON of the core, as stored and hashed.
    core: str
    #: The stored personal part: canonical JSON of ``{path: value, ..., "salt": salt}``.
    personal: str
    #: Hex SHA-256 of ``personal``.
    commitment: str


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
    body_json = schema.public_json(body)  # validates; without the personal properties
    # The personal part is assembled as canonical JSON directly: its keys in
    # canonical (sorted) order, "actor" < "body.*" < "salt".
    fields = [f'"actor":{encode_text(actor)}']
    paths = '"actor"'
    for name, path_json in schema.personal_paths:
        if name in body:
            value = body[name]
            value_json = encode_text(value) if type(value) is str else encode(value)
            fields.append(f"{path_json}:{value_json}")
            paths += f",{path_json}"
    personal = f'{{{",".join(fields)},"salt":"{_salts.take()}"}}'
    if time is None:
        moment = format_time()  # digits, '-', ':', '.', 'T', 'Z': nothing to escape
        moment_json = f'"{moment}"'
    else:
        check_canonical(time, "time")
        moment, moment_json = time, encode_text(time)
    session_json = "null" if session is None else encode_text(session)
    # The core's keys in canonical (sorted) order, assembled around one encoding of the body.
    core = (
        f'{{"body":{body_json},"kind":{schema.kind_json},"personal":[{paths}],'
        f'"session":{session_json},"time":{moment_json},"v":{schema.version}}}'
    )
    return PreparedRecord(kind, moment, core, personal, _sha256(personal.encode()).hexdigest())


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
        self._salts: list[str] = []

    def take(self) -> str:
        """Return an unused salt (32 hex characters)."""
        with self._lock:
            if not self._salts:
                text = os.urandom(_SALT_BYTES * self._SIZE).hex()
                width = 2 * _SALT_BYTES
                self._salts = [text[i : i + width] for i in range(0, len(text), width)]
            return self._salts.pop()


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


def personal_values(personal: str | None) -> tuple[dict[str, Any], str | None]:
    """Return ``({path: value}, salt)`` of a stored personal part.

    Raises ValueError if the text is not a personal part (a JSON object).
    """
    if not personal:
        return {}, None
    data = json.loads(personal)
    if type(data) is not dict:
        raise ValueError("a personal part must be a JSON object")
    salt = data.pop(SALT, None)
    return data, salt


def export_line(
    seq: int, prev: str, record_hash: str, core: str, personal: str | None, *, redact: bool
) -> dict[str, Any]:
    """Return the JSON object of one exported record, with personal fields in place or redacted.

    In a full export each personal value sits where it belongs and the record's salt
    is under ``salt``; in a redacted one the values are gone, ``redacted`` lists
    their paths and ``commitment`` holds the commitment to them.
    """
    record = json.loads(core)
    line: dict[str, Any] = {"type": "record", "seq": seq, "prev": prev, "hash": record_hash}
    if redact:
        line["redacted"] = list(record.get("personal", ()))
        line["commitment"] = commitment_of(personal or "")
    else:
        values, salt = personal_values(personal)
        for path, value in values.items():
            _put(record, path, value)
        line["salt"] = salt
    line["record"] = record
    return line


def sealed_parts(line: dict[str, Any], schemas: SchemaRegistry) -> tuple[bytes, str]:
    """Return ``(core, commitment)`` of an exported record line, to :func:`seal` it.

    Raises :class:`LedgerIntegrityError` if the line is malformed or names personal
    fields its schema does not have.
    """
    seq = line.get("seq")
    try:
        record = dict(line["record"])
        record["body"] = dict(record["body"])
        schema = schemas.get(record["kind"], record["v"])
        paths = record["personal"]
        if type(paths) is not list:
            raise TypeError("the personal paths are not a list")
        allowed = {ACTOR, *(f"body.{name}" for name in schema.personal)}
        for path in paths:
            if path not in allowed:
                raise LedgerIntegrityError(
                    f"record {seq}: {path} is not a personal field of {schema.schema_id}",
                    seq=seq,
                )
        if ("salt" in line) == ("commitment" in line):
            raise KeyError("a record line has either a salt or a commitment")
        if "salt" in line:
            values: dict[str, Any] = {path: _pop(record, path) for path in paths}
            values[SALT] = line["salt"]
            digest = commitment_of(canonical_bytes(values))
        else:
            digest = line["commitment"]
            if not is_digest(digest):
                raise ValueError("the commitment is not 64 lowercase hex digits")
            if line.get("redacted") != paths:
                raise LedgerIntegrityError(
                    f"record {seq}: the redacted fields are not the record's personal fields",
                    seq=seq,
                )
        core = canonical_bytes(record)
    except (KeyError, TypeError, AttributeError, ValueError, RecordValidationError) as error:
        raise LedgerIntegrityError(
            f"record {seq}: malformed record line ({error})", seq=seq
        ) from None
    return core, digest


def _split(path: str) -> tuple[str, str | None]:
    head, _, name = path.partition(".")
    return head, name or None


def _pop(record: dict[str, Any], path: str) -> Any:
    head, name = _split(path)
    return record.pop(head) if name is None else record[head].pop(name)


def _put(record: dict[str, Any], path: str, value: Any) -> None:
    head, name = _split(path)
    if name is None:
        record[head] = value
    else:
        record[head][name] = value
