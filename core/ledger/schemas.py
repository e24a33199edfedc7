"""The versioned JSON schemas of ledger record bodies, shipped in ``nbguard/ledger/schemas``.

Every record kind has one file per version, ``<kind>.v<version>.json``, written in
JSON Schema draft-07 with ``$id`` ``urn:nbguard:ledger:<kind>:v<version>`` and an
integer ``version``. A property marked ``"x-personal": true`` holds personal data:
its value is committed to by a salted hash, so exports can redact it (see
``docs/ledger-format.md``). Only top-level body properties may be personal, and
``number`` types are refused because records carry no floats.

Each schema is compiled once into one function that validates a body and checks
its canonical form in a single pass, and one that writes the canonical JSON of a
body it accepted (``nbguard.ledger.validators``); a body it does not accept
takes the reference path: ``check_canonical``, the schema compiled
with ``fastjsonschema``, and, when that rejects it, ``jsonschema`` (the reference
implementation, which also checks the schemas themselves) for the message naming
the offending field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import fastjsonschema
import jsonschema

from nbguard.errors import ConfigError, RecordValidationError
from nbguard.ledger.canonical import check_canonical, encode, encode_text
from nbguard.ledger.validators import BodyCheck, BodyEncoder, compile_check, compile_encoder

_ID = re.compile(r"^urn:nbguard:ledger:(?P<kind>[a-z][a-z0-9_]*):v(?P<version>[1-9][0-9]*)$")


@dataclass(frozen=True)
class RecordSchema:
    """One version of one record kind's body schema."""

    kind: str
    version: int
    schema_id: str
    document: Mapping[str, Any] = field(repr=False)
    #: Names of the top-level body properties that hold personal data, sorted.
    personal: tuple[str, ...]
    #: ``(name, canonical JSON of "body.<name>")`` for each personal property, sorted.
    personal_paths: tuple[tuple[str, str], ...] = field(repr=False, compare=False)
    #: The kind as canonical JSON, ready to be placed in a record's core.
    kind_json: str = field(repr=False, compare=False)
    _check: Callable[[Any], Any] = field(repr=False, compare=False)
    _reference: jsonschema.Draft7Validator = field(repr=False, compare=False)
    #: Validation and the canonical check in one pass; None if the schema cannot be compiled.
    _fast: BodyCheck | None = field(default=None, repr=False, compare=False)
    #: The canonical JSON of a body ``_fast`` accepted, without its personal properties.
    _fast_public: BodyEncoder | None = field(default=None, repr=False, compare=False)

    def check(self, body: Any) -> None:
        """Raise :class:`RecordValidationError` naming the field unless ``body`` is valid
        and has a canonical form (see ``nbguard.ledger.canonical``)."""
        fast = self._fast
        if fast is not None and fast(body):
            return
        check_canonical(body, "body")
        self.validate(body)

    def public_json(self, body: dict[str, Any]) -> str:
        """Check ``body`` as :meth:`check` does; return its canonical JSON without its
        personal properties (the body of a record's core)."""
        fast, public = self._fast, self._fast_public
        if fast is not None and public is not None and fast(body):
            return public(body)
        self.check(body)
        if self.personal:
            return encode({key: value for key, value in body.items() if key not in self.personal})
        return encode(body)

    def validate(self, body: Any) -> None:
        """Raise :class:`RecordValidationError` naming the field unless ``body`` is valid."""
        try:
            self._check(body)
        except fastjsonschema.JsonSchemaValueException as fast_error:
            raise self._explain(body, str(fast_error)) from None

    def _explain(self, body: Any, fallback: str) -> RecordValidationError:
        error = jsonschema.exceptions.best_match(self._reference.iter_errors(body))
        if error is None:  # pragma: no cover - the two validators disagree
            return RecordValidationError(f"{self.kind} record: {fallback}")
        path = [str(part) for part in error.absolute_path]
        instance = error.instance
        if error.validator == "required" and isinstance(instance, dict):
            missing = [name for name in error.validator_value if name not in instance]
            path.append(missing[0] if missing else "")
        elif error.validator == "additionalProperties" and isinstance(instance, dict):
            known = error.schema.get("properties", {})
            extra = sorted(name for name in instance if name not in known)
            path.append(extra[0] if extra else "")
        where = ".".join(["body", *path]).rstrip(".")
        return RecordValidationError(f"{self.kind} record: {where}: {error.message}", field=where)


def _load(document: Mapping[str, Any], source: str) -> RecordSchema:
    match = _ID.match(str(document.get("$id", "")))
    if match is None:
        raise ConfigError(f"{source}: $id must look like urn:nbguard:ledger:<kind>:v<N>")
    version = document.get("version")
    if version != int(match["version"]):
        raise ConfigError(f"{source}: version {version!r} does not match $id {document['$id']}")
    try:
        jsonschema.Draft7Validator.check_schema(document)
    except jsonschema.SchemaError as error:
        raise ConfigError(f"{source}: not a valid draft-07 schema: {error.message}") from None
    _refuse_floats(document, source)
    personal = tuple(
        sorted(
            name
            for name, spec in document.get("properties", {}).items()
            if isinstance(spec, dict) and spec.get("x-personal") is True
        )
    )
    # Commitments cover whole top-level fields; a nested mark would promise a
    # redaction the format cannot make.
    if _count_marks(document) != len(personal):
        raise ConfigError(f"{source}: x-personal is only allowed on top-level properties")
    try:  # personal names become paths in the hashed commitments map
        check_canonical(dict.fromkeys(personal))
    except RecordValidationError as error:
        raise ConfigError(f"{source}: personal property name: {error}") from None
    return RecordSchema(
        kind=match["kind"],
        version=int(version),
        schema_id=document["$id"],
        document=document,
        personal=personal,
        personal_paths=tuple((name, encode_text(f"body.{name}")) for name in personal),
        kind_json=encode_text(match["kind"]),
        _check=fastjsonschema.compile(dict(document)),
        _reference=jsonschema.Draft7Validator(document),
        _fast=compile_check(document),
        _fast_public=compile_encoder(document, frozenset(personal)),
    )


def _refuse_floats(node: Any, source: str) -> None:
    if isinstance(node, dict):
        types = node.get("type")
        if types == "number" or (isinstance(types, list) and "number" in types):
            raise ConfigError(f"{source}: type 'number' is not allowed (records carry no floats)")
        for value in node.values():
            _refuse_floats(value, source)
    elif isinstance(node, list):
        for value in node:
            _refuse_floats(value, source)


def _count_marks(node: Any) -> int:
    if isinstance(node, dict):
        own = 1 if node.get("x-personal") is True else 0
        return own + sum(_count_marks(value) for value in node.values())
    if isinstance(node, list):
        return sum(_count_marks(value) for value in node)
    return 0


class SchemaRegistry:
    """Every known version of every record kind; appends use each kind's newest version."""

    def __init__(self, schemas: Iterable[RecordSchema]) -> None:
        self._by_version: dict[tuple[str, int], RecordSchema] = {}
        self._current: dict[str, RecordSchema] = {}
        for schema in schemas:
            self._by_version[schema.kind, schema.version] = schema
            newest = self._current.get(schema.kind)
            if newest is None or schema.version > newest.version:
                self._current[schema.kind] = schema

    @classmethod
    def from_documents(cls, documents: Mapping[str, Mapping[str, Any]]) -> SchemaRegistry:
        """Build a registry from ``{source: schema document}``; ConfigError if one is bad."""
        return cls(_load(document, source) for source, document in documents.items())

    @property
    def kinds(self) -> list[str]:
        """The record kinds that can be appended, sorted."""
        return sorted(self._current)

    def current(self, kind: str) -> RecordSchema:
        """Return the newest schema of ``kind``; RecordValidationError if the kind is unknown."""
        try:
            return self._current[kind]
        except KeyError:
            raise RecordValidationError(
                f"unknown record kind {kind!r} (known: {', '.join(self.kinds)})", field="kind"
            ) from None

    def get(self, kind: str, version: int) -> RecordSchema:
        """Return one exact schema version; RecordValidationError if it is not shipped."""
        try:
            return self._by_version[kind, version]
        except KeyError:
            raise RecordValidationError(
                f"no schema for record kind {kind!r} version {version!r}", field="v"
            ) from None


@cache
def packaged_schemas() -> SchemaRegistry:
    """Return the registry of the schemas shipped with this nbguard (loaded once)."""
    folder = resources.files("nbguard.ledger") / "schemas"
    documents = {
        f"nbguard/ledger/schemas/{entry.name}": json.loads(entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".json")
    }
    return SchemaRegistry.from_documents(documents)
