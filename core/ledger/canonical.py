"""Canonical JSON: the exact bytes that ledger hashes and signatures are computed over.

The form is RFC 8785 (JCS) restricted so that Python's C JSON encoder produces it
byte for byte: object keys sorted, no insignificant whitespace, UTF-8, strings
escaped as ECMAScript's ``JSON.stringify`` does. Three restrictions make that hold,
and values that break them are refused rather than silently re-encoded:

* no floats (JCS number formatting is subtle and lossy; records use integers,
  strings such as ``"0.25"``, or integer units such as milliseconds);
* integers within +/-(2**53 - 1), the range every JSON implementation keeps exact;
* object keys inside the Basic Multilingual Plane, where code-point order (what
  Python sorts by) equals the UTF-16 order RFC 8785 prescribes; and no lone
  surrogates anywhere, since they have no UTF-8 encoding.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from json import encoder as _json_encoder
from typing import Any

from nbguard.errors import RecordValidationError

#: Largest integer magnitude allowed in a record (IEEE-754 double's exact range).
MAX_SAFE_INTEGER = 2**53 - 1

_encoder = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
)


def check_canonical(value: Any, field: str = "") -> None:
    """Raise :class:`RecordValidationError` naming the field if ``value`` has no canonical form.

    ``field`` is the dotted path of ``value`` inside the record, used in the error.
    """
    kind = type(value)
    if kind is dict:
        _check_object(value, field)
    elif kind is list:
        _check_array(value, field)
    else:
        _check_scalar(value, field)


# The hot path of every append: plain type tests, scalars checked inline, and
# paths built only when descending into a container or failing.


def _check_object(value: dict[Any, Any], field: str) -> None:
    for key, item in value.items():
        if type(key) is not str or not key.isascii():
            _check_key(key, _join(field, key))
        kind = type(item)
        if kind is str:
            if not item.isascii():
                _check_text(item, _join(field, key))
        elif kind is int:
            if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                _refuse_int(item, _join(field, key))
        elif kind is dict:
            _check_object(item, _join(field, key))
        elif kind is list:
            _check_array(item, _join(field, key))
        elif item is not None and kind is not bool:
            _check_scalar(item, _join(field, key))


def _check_array(value: list[Any], field: str) -> None:
    for index, item in enumerate(value):
        kind = type(item)
        if kind is str:
            if not item.isascii():
                _check_text(item, _join(field, index))
        elif kind is int:
            if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                _refuse_int(item, _join(field, index))
        elif kind is dict:
            _check_object(item, _join(field, index))
        elif kind is list:
            _check_array(item, _join(field, index))
        elif item is not None and kind is not bool:
            _check_scalar(item, _join(field, index))


def _check_scalar(value: Any, field: str) -> None:
    kind = type(value)
    if kind is str:
        if not value.isascii():
            _check_text(value, field)
    elif kind is int:
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            _refuse_int(value, field)
    elif value is not None and kind is not bool:
        if kind is float:
            raise RecordValidationError(
                f"{field or 'record'}: floats are not allowed in ledger records "
                "(use an integer unit or a string)",
                field=field,
            )
        raise RecordValidationError(
            f"{field or 'record'}: {kind.__name__} is not a JSON value", field=field
        )


def _join(field: str, key: object) -> str:
    return f"{field}.{key}" if field else str(key)


def _refuse_int(value: int, field: str) -> None:
    raise RecordValidationError(
        f"{field or 'record'}: integer {value} is outside +/-(2**53 - 1)", field=field
    )


def _check_key(key: object, path: str) -> None:
    if type(key) is not str:
        raise RecordValidationError(f"{path}: object keys must be strings", field=path)
    _check_text(key, path)
    if key and max(key) > "\uffff":
        raise RecordValidationError(
            f"{path}: object keys must not contain characters beyond U+FFFF", field=path
        )


def _check_text(text: str, field: str) -> None:
    # Surrogate code points (U+D800..U+DFFF) cannot be encoded as UTF-8.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RecordValidationError(
            f"{field or 'record'}: string contains a lone surrogate", field=field
        ) from None


def canonical_bytes(value: Any) -> bytes:
    """Return the canonical UTF-8 JSON bytes of a value that passed :func:`check_canonical`."""
    return encode(value).encode("utf-8")


def canonical_text(value: Any) -> str:
    """Return the canonical JSON of a checked value as text (what the database stores)."""
    return encode(value)


def _no_default(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def _fast_encoder() -> Callable[[Any], str]:
    # JSONEncoder.encode builds a fresh C encoder (and a circular-reference map)
    # on every call, about a third of its cost on a record. Values reaching the
    # encoder passed check_canonical, which already recursed through them, so
    # one C encoder without the circular check gives the same bytes for less.
    make = getattr(_json_encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has the C accelerator
        return _encoder.encode
    chunks = make(
        None, _no_default, _json_encoder.encode_basestring, None, ":", ",", True, False, False
    )
    join = "".join

    def encode(value: Any) -> str:
        return join(chunks(value, 0))

    return encode


#: Canonical JSON text of one checked value (the fast path for hot loops).
encode: Callable[[Any], str] = _fast_encoder()
#: Canonical JSON text of one string (no check for lone surrogates: do that first).
encode_text: Callable[[str], str] = _json_encoder.encode_basestring

_second_cache = (-1, "")


def format_time(moment: datetime | float | None = None) -> str:
    """Return ``moment`` (default: now) as RFC 3339 UTC with microseconds, ending in ``Z``.

    ``moment`` is an aware datetime or a POSIX timestamp.
    """
    if moment is None:  # every append: integer clock, no float rounding
        seconds, micros = divmod(time.time_ns() // 1000, 1_000_000)
    else:
        if isinstance(moment, datetime):
            moment = moment.timestamp()
        seconds = int(moment // 1)
        micros = round((moment - seconds) * 1_000_000)
        if micros == 1_000_000:
            seconds, micros = seconds + 1, 0
    global _second_cache  # one entry, swapped atomically: strftime is most of the cost
    cached = _second_cache
    if cached[0] != seconds:
        cached = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
        _second_cache = cached
    return f"{cached[1]}.{micros:06d}Z"
