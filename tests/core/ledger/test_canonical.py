"""Canonical JSON: byte-exact output, and refusal of values with no single encoding."""

from __future__ import annotations

import json

import pytest

from nbguard.errors import RecordValidationError
from nbguard.ledger.canonical import (
    MAX_SAFE_INTEGER,
    canonical_bytes,
    check_canonical,
    format_time,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param({"b": 1, "a": [True, None]}, b'{"a":[true,null],"b":1}', id="sorted-compact"),
        pytest.param({"z": {"y": 1, "x": 2}}, b'{"z":{"x":2,"y":1}}', id="nested-sorted"),
        pytest.param("caf\u00e9 \u20ac", '"caf\u00e9 \u20ac"'.encode(), id="utf8-not-escaped"),
        pytest.param("\U0001f600", '"\U0001f600"'.encode(), id="astral-utf8"),
        pytest.param('a\nb\t\x01"\\', b'"a\\nb\\t\\u0001\\"\\\\"', id="control-escapes"),
        pytest.param("\u007f</script>", '"\u007f</script>"'.encode(), id="no-extra-escapes"),
        pytest.param(-MAX_SAFE_INTEGER, b"-9007199254740991", id="min-safe-int"),
        pytest.param({"\u00e9": 1, "z": 2}, '{"z":2,"\u00e9":1}'.encode(), id="keys-by-code-point"),
    ],
)
def test_canonical_bytes_match_rfc8785(value: object, expected: bytes) -> None:
    """Accepted values serialise exactly as RFC 8785 (JCS) prescribes."""
    check_canonical(value)
    assert canonical_bytes(value) == expected


@pytest.mark.parametrize(
    ("value", "field"),
    [
        pytest.param({"ratio": 0.5}, "ratio", id="float"),
        pytest.param({"n": 1.0}, "n", id="integral-float"),
        pytest.param({"a": [1, float("nan")]}, "a.1", id="nan-in-list"),
        pytest.param({"n": MAX_SAFE_INTEGER + 1}, "n", id="unsafe-int"),
        pytest.param({"k\U0001f600": 1}, "k\U0001f600", id="astral-key"),
        pytest.param({"s": "\ud800"}, "s", id="lone-surrogate"),
        pytest.param({"b": b"bytes"}, "b", id="bytes"),
        pytest.param({"t": (1, 2)}, "t", id="tuple"),
        pytest.param({1: "x"}, "1", id="non-string-key"),
    ],
)
def test_values_without_canonical_form_are_refused(value: object, field: str) -> None:
    """Floats, unsafe integers, astral keys, surrogates and non-JSON types name their field."""
    with pytest.raises(RecordValidationError) as caught:
        check_canonical(value)
    assert caught.value.field == field


def test_canonical_bytes_round_trip() -> None:
    """Canonical output parses back to the same value."""
    value = {"x": [1, "two", {"three": False}], "y": None}
    assert json.loads(canonical_bytes(value)) == value


def test_format_time_is_rfc3339_utc_with_z() -> None:
    """Timestamps are UTC with microseconds and end in Z, from a POSIX time or a datetime."""
    assert format_time(0) == "1970-01-01T00:00:00.000000Z"
    assert format_time(1_700_000_000.25) == "2023-11-14T22:13:20.250000Z"
    assert format_time().endswith("Z")
