"""Compiled body checks and encoders: never more lenient than the schema and the canonical
rules together, and writing exactly the canonical encoder's bytes."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from nbguard.errors import RecordValidationError
from nbguard.ledger.canonical import check_canonical, encode
from nbguard.ledger.schemas import packaged_schemas
from nbguard.ledger.validators import compile_check, compile_encoder

from .conftest import SAMPLES

#: Values put in place of each field: every JSON type, edges of the canonical rules.
VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    7,
    2**53 - 1,
    2**53,
    -(2**53),
    1.5,
    1.0,
    "",
    "x",
    "x" * 3000,
    "\u00e9t\u00e9",
    "\ud800",
    "2025-01-01T17:00:00Z",
    "ab" * 32,
    "ok",
    "kernel",
    [],
    ["a"],
    [1, None],
    ["\ud800"],
    {},
    {"a": 1},
    {"a": 1.5},
    {1: "a"},
    {"\U0001f600": 1},
    ("a",),
]


def _reference(document: dict[str, Any], body: Any) -> bool:
    """What the reference path accepts: canonical, and valid by jsonschema."""
    try:
        check_canonical(body, "body")
    except RecordValidationError:
        return False
    return bool(jsonschema.Draft7Validator(document).is_valid(body))


def _variants(body: dict[str, Any]) -> Iterator[Any]:
    """The body with each field dropped, replaced, or (inside objects) mutated, plus extras."""
    yield body
    for key in list(body):
        dropped = dict(body)
        del dropped[key]
        yield dropped
        for value in VALUES:
            yield {**body, key: value}
        if isinstance(body[key], dict):
            for inner in _variants(body[key]):
                yield {**body, key: inner}
    for value in VALUES[:6]:
        yield {**body, "unknown": value}
        yield {**body, 5: value}


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_compiled_check_is_never_more_lenient(kind: str) -> None:
    """On hundreds of variants of each kind's sample, a body the compiled check accepts is
    accepted by the reference path too, and the sample itself takes the compiled path."""
    schema = packaged_schemas().current(kind)
    document = dict(schema.document)
    check = compile_check(document)
    assert check is not None, f"{kind}: the packaged schema should compile"
    assert check(copy.deepcopy(SAMPLES[kind]))
    accepted = 0
    for body in _variants(SAMPLES[kind]):
        if check(body):
            accepted += 1
            assert _reference(document, body), body
    assert accepted > 1


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_compiled_encoder_writes_the_canonical_bytes(kind: str) -> None:
    """For every variant the compiled check accepts, the compiled encoder gives the
    canonical encoder's text of the body without its personal properties."""
    schema = packaged_schemas().current(kind)
    check = compile_check(dict(schema.document))
    encoder = compile_encoder(dict(schema.document), frozenset(schema.personal))
    assert check is not None
    assert encoder is not None
    bodies = [body for body in _variants(SAMPLES[kind]) if check(body)]
    bodies.append({**SAMPLES[kind], **dict.fromkeys(schema.personal, "p")})
    for body in bodies:
        public = {key: value for key, value in body.items() if key not in schema.personal}
        assert encoder(body) == encode(public), body
        assert schema.public_json(body) == encode(public)


def test_public_json_of_a_body_the_compiled_check_refuses() -> None:
    """A body taking the reference path (non-ASCII text) is encoded canonically too."""
    schema = packaged_schemas().current("access")
    body = {**SAMPLES["access"], "resource": 'Dataset::"caf\u00e9"', "principal": "\u00e9"}
    assert schema._fast is not None
    assert not schema._fast(body)
    assert schema.public_json(body) == encode(
        {key: value for key, value in body.items() if key != "principal"}
    )


@pytest.mark.parametrize(
    "document",
    [
        pytest.param({"type": "object", "oneOf": [{"required": ["a"]}]}, id="oneOf"),
        pytest.param({"type": "number"}, id="number"),
        pytest.param({"type": "string", "format": "date-time"}, id="format"),
        pytest.param({"enum": [1, 2]}, id="enum-of-integers"),
        pytest.param({"maxLength": 3}, id="untyped-constraint"),
        pytest.param({"type": "integer", "minimum": 0.5}, id="float-bound"),
        pytest.param({"type": "array", "items": [{"type": "string"}]}, id="tuple-items"),
    ],
)
def test_unsupported_schemas_take_the_reference_path(document: dict[str, Any]) -> None:
    """A schema with a keyword or form the compiler does not handle gets no compiled check."""
    assert compile_check(document) is None


def test_schema_text_never_becomes_source() -> None:
    """Property names, patterns and enum values reach the generated code as constants."""
    name = 'a"]: 0}\nimport os  # '
    check = compile_check(
        {
            "type": "object",
            "additionalProperties": False,
            "required": [name],
            "properties": {name: {"type": "string", "pattern": "^'''$"}},
        }
    )
    assert check is not None
    assert check({name: "'''"})
    assert not check({name: "x"})
    assert not check({})


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"outcome": "success", "method": "pam", "username": 1.5}, "body.username"),
        pytest.param(
            {"outcome": "success", "method": "pam", "username": "\ud800"}, "body.username"
        ),
        pytest.param({"outcome": "maybe", "method": "pam", "username": "a"}, "body.outcome"),
        pytest.param({"outcome": "success", "method": "pam"}, "body.username"),
    ],
)
def test_refused_bodies_name_their_field(body: dict[str, Any], field: str) -> None:
    """A body the compiled check refuses gets the reference path's error, naming the field."""
    with pytest.raises(RecordValidationError) as caught:
        packaged_schemas().current("login").check(body)
    assert caught.value.field == field


def test_non_ascii_text_is_accepted_by_the_reference_path() -> None:
    """Text beyond ASCII is not refused: the compiled check defers to the reference path."""
    schema = packaged_schemas().current("login")
    body = {"outcome": "success", "method": "pam", "username": "\u00e9l\u00e8ve"}
    assert schema._fast is not None
    assert not schema._fast(body)
    schema.check(body)
