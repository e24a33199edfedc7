"""Compiled body checks: schema validation and the canonical-JSON rules in one pass.

Every append validates its body against the kind's schema and checks that it has
a canonical form (``nbguard.ledger.canonical``). Done separately, by
``fastjsonschema`` and a recursive walk, that cost more than all the hashing of
a record. :func:`compile_check` turns a schema document into one Python function
that does both and only answers *yes* or *no*; a *no* sends the body down the
reference path (``check_canonical``, then the schema validators), which decides
and names the offending field. So the compiled check may be stricter than the
schema (non-ASCII text, for instance, always takes the reference path) but never
more lenient: it accepts only bodies both checks accept.

Only the JSON Schema keywords the packaged schemas use are compiled; a schema
with any other keyword gets no compiled check (None) and always takes the
reference path. Every value taken from the schema reaches the generated code as
a named constant, never as source text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from nbguard.errors import RecordValidationError
from nbguard.ledger.canonical import MAX_SAFE_INTEGER, check_canonical, encode, encode_text

#: A compiled check: True if the body is valid and canonical, False to ask the reference.
BodyCheck = Callable[[Any], bool]
#: A compiled encoder: the canonical JSON of a body the compiled check accepted.
BodyEncoder = Callable[[dict[str, Any]], str]

#: Keywords that only annotate a schema.
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$comment", "version", "title", "description", "x-personal", "examples"}
)
_KEYWORDS = frozenset(
    {
        "type",
        "enum",
        "maxLength",
        "minLength",
        "pattern",
        "minimum",
        "maximum",
        "properties",
        "required",
        "additionalProperties",
        "maxProperties",
        "items",
        "maxItems",
        "minItems",
        "anyOf",
    }
)
_TYPES = {
    "string": "str",
    "integer": "int",
    "boolean": "bool",
    "null": "NoneType",
    "object": "dict",
    "array": "list",
}

#: ``keyword: (what is measured, the comparison that refuses)``.
_BOUNDS = {
    "maxLength": ("len({})", ">"),
    "minLength": ("len({})", "<"),
    "maximum": ("{}", ">"),
    "minimum": ("{}", "<"),
    "maxItems": ("len({})", ">"),
    "minItems": ("len({})", "<"),
    "maxProperties": ("len({})", ">"),
}


class Unsupported(Exception):
    """The schema uses something the compiler does not handle (the reference path will)."""


def compile_check(document: Mapping[str, Any]) -> BodyCheck | None:
    """Return the compiled check of a schema document, or None if it cannot be compiled."""
    compiler = _Compiler()
    try:
        body = compiler.emit(document, "v0", 1)
    except Unsupported:
        return None
    source = "\n".join(["def check(v0):", *body, "    return True"])
    namespace: dict[str, Any] = {
        **compiler.constants,
        "_MISSING": _MISSING,
        "_canonical": _canonical,
        "NoneType": type(None),
        "MAX": MAX_SAFE_INTEGER,
    }
    # The source holds only generated names and syntax: schema values are constants.
    exec(compile(source, "<nbguard ledger body check>", "exec"), namespace)  # noqa: S102
    check: BodyCheck = namespace["check"]
    return check


def compile_encoder(
    document: Mapping[str, Any], leave_out: frozenset[str] = frozenset()
) -> BodyEncoder | None:
    """Return a function giving the canonical JSON of a body, without its top-level
    properties named in ``leave_out``; None unless the schema is a closed object.

    Use it only on bodies the compiled check accepted: it relies on their exact
    types (``int``, not an ``int`` subclass whose text differs) and has no checks.
    Parts it cannot write more simply go through the canonical encoder.
    """
    if document.get("type") != "object" or document.get("additionalProperties") is not False:
        return None
    compiler = _Compiler()
    lines = compiler.encode_object(document, "v0", "p0", 1, leave_out)
    source = "\n".join(["def encode_body(v0):", *lines, "    return '{' + ','.join(p0) + '}'"])
    namespace: dict[str, Any] = {
        **compiler.constants,
        "_MISSING": _MISSING,
        "_text": encode_text,
        "_encode": encode,
    }
    # As for the checks: schema values reach the source only as named constants.
    exec(compile(source, "<nbguard ledger body encoder>", "exec"), namespace)  # noqa: S102
    encoder: BodyEncoder = namespace["encode_body"]
    return encoder


_MISSING = object()


def _canonical(value: Any) -> bool:
    """True if ``value`` has a canonical form (for parts of a schema that allow any value)."""
    try:
        check_canonical(value)
    except RecordValidationError:
        return False
    return True


class _Compiler:
    def __init__(self) -> None:
        self.constants: dict[str, Any] = {}
        self._names = 0

    def name(self, prefix: str) -> str:
        self._names += 1
        return f"{prefix}{self._names}"

    def constant(self, value: Any) -> str:
        name = self.name("C")
        self.constants[name] = value
        return name

    def emit(self, schema: Any, var: str, depth: int) -> list[str]:
        """Lines (indented ``depth`` levels) that ``return False`` unless ``var`` passes."""
        if not isinstance(schema, Mapping):
            raise Unsupported("a schema must be an object")
        unknown = set(schema) - _ANNOTATIONS - _KEYWORDS
        if unknown:
            raise Unsupported(f"keywords {sorted(unknown)}")
        pad = "    " * depth
        keywords = set(schema) & _KEYWORDS
        if not keywords:
            return [f"{pad}if not _canonical({var}): return False"]
        types = schema.get("type")
        if "enum" in schema:
            return self._enum(schema, var, depth)
        if types is None:
            raise Unsupported("constraints without a type")
        names = [types] if isinstance(types, str) else list(types)
        if not names or any(name not in _TYPES for name in names):
            raise Unsupported(f"type {types!r}")
        kind = self.name("t")
        lines = [f"{pad}{kind} = type({var})"]
        for index, name in enumerate(names):
            test = "if" if index == 0 else "elif"
            lines.append(f"{pad}{test} {kind} is {_TYPES[name]}:")
            lines += self._typed(name, schema, var, depth + 1) or [f"{pad}    pass"]
        lines.append(f"{pad}else: return False")
        return lines

    def _enum(self, schema: Mapping[str, Any], var: str, depth: int) -> list[str]:
        values = schema["enum"]
        others = set(schema) & _KEYWORDS - {"enum", "type"}
        if (
            others
            or not isinstance(values, list)
            or not all(type(item) is str and item.isascii() for item in values)
            or schema.get("type", "string") != "string"
        ):
            raise Unsupported("an enum other than of ASCII strings")
        allowed = self.constant(frozenset(values))
        pad = "    " * depth
        return [f"{pad}if type({var}) is not str or {var} not in {allowed}: return False"]

    def _typed(self, name: str, schema: Mapping[str, Any], var: str, depth: int) -> list[str]:
        pad = "    " * depth
        if name == "string":
            lines = [f"{pad}if not {var}.isascii(): return False"]
            lines += self._bounds(schema, var, pad, "maxLength", "minLength")
            if "pattern" in schema:
                pattern = self.constant(re.compile(str(schema["pattern"])))
                lines.append(f"{pad}if {pattern}.search({var}) is None: return False")
            return lines
        if name == "integer":
            lines = [f"{pad}if not -MAX <= {var} <= MAX: return False"]
            return lines + self._bounds(schema, var, pad, "minimum", "maximum")
        if name == "object":
            return self._object(schema, var, depth)
        if name == "array":
            return self._array(schema, var, depth)
        return []

    def _bounds(self, schema: Mapping[str, Any], var: str, pad: str, *keywords: str) -> list[str]:
        """Lines checking the size or value bounds ``keywords`` (those the schema has)."""
        lines = []
        for keyword in keywords:
            if keyword in schema:
                bound = schema[keyword]
                if type(bound) is not int:
                    raise Unsupported("a bound that is not an integer")
                measure, refused = _BOUNDS[keyword]
                lines.append(
                    f"{pad}if {measure.format(var)} {refused} {self.constant(bound)}: return False"
                )
        return lines

    def _object(self, schema: Mapping[str, Any], var: str, depth: int) -> list[str]:
        pad = "    " * depth
        properties = schema.get("properties", {})
        required = schema.get("required", [])
        if not isinstance(properties, Mapping) or not isinstance(required, list):
            raise Unsupported("properties or required of the wrong type")
        if not all(type(key) is str and key.isascii() for key in [*properties, *required]):
            raise Unsupported("a property name that is not ASCII")
        count = self.name("n")
        lines = [f"{pad}{count} = 0"]
        for key in sorted(properties):
            item = self.name("w")
            lines.append(f"{pad}{item} = {var}.get({self.constant(key)}, _MISSING)")
            lines.append(f"{pad}if {item} is not _MISSING:")
            lines.append(f"{pad}    {count} += 1")
            lines += self.emit(properties[key], item, depth + 1)
            if key in required:
                lines.append(f"{pad}else: return False")
        for key in required:
            if key not in properties:
                lines.append(f"{pad}if {self.constant(key)} not in {var}: return False")
        lines += self._bounds(schema, var, pad, "maxProperties")
        lines += self._any_of(schema, var, depth)
        extra = schema.get("additionalProperties", True)
        if extra is False:
            lines.append(f"{pad}if {count} != len({var}): return False")
            return lines
        # Keys beyond the properties: strings with a canonical form, values as the
        # schema says (or any canonical value).
        key, item = self.name("k"), self.name("x")
        known = self.constant(frozenset(properties))
        lines.append(f"{pad}if {count} != len({var}):")
        lines.append(f"{pad}    for {key}, {item} in {var}.items():")
        lines.append(f"{pad}        if {key} in {known}: continue")
        lines.append(f"{pad}        if type({key}) is not str or not {key}.isascii(): return False")
        if extra is True:
            lines.append(f"{pad}        if not _canonical({item}): return False")
        else:
            lines += self.emit(extra, item, depth + 2)
        return lines

    def _any_of(self, schema: Mapping[str, Any], var: str, depth: int) -> list[str]:
        branches = schema.get("anyOf")
        if branches is None:
            return []
        tests = []
        for branch in branches if isinstance(branches, list) else [None]:
            if (
                not isinstance(branch, Mapping)
                or set(branch) - _ANNOTATIONS != {"required"}
                or not isinstance(branch["required"], list)
            ):
                raise Unsupported("anyOf other than of required lists")
            tests.append(f"{self.constant(frozenset(branch['required']))} <= {var}.keys()")
        pad = "    " * depth
        return [f"{pad}if not ({' or '.join(tests) or 'False'}): return False"]

    def _array(self, schema: Mapping[str, Any], var: str, depth: int) -> list[str]:
        pad = "    " * depth
        lines = self._bounds(schema, var, pad, "maxItems", "minItems")
        items = schema.get("items")
        if items is None:
            lines.append(f"{pad}if not _canonical({var}): return False")
            return lines
        if not isinstance(items, Mapping):
            raise Unsupported("items as a list")
        item = self.name("i")
        lines.append(f"{pad}for {item} in {var}:")
        lines += self.emit(items, item, depth + 1)
        return lines

    def encode_object(
        self,
        schema: Mapping[str, Any],
        var: str,
        parts: str,
        depth: int,
        leave_out: frozenset[str] = frozenset(),
    ) -> list[str]:
        """Lines that collect the ``"key":value`` texts of a closed object in ``parts``,
        in canonical (sorted) key order."""
        pad = "    " * depth
        lines = [f"{pad}{parts} = []"]
        properties = schema.get("properties", {})
        for key in sorted(properties):
            if key in leave_out:
                continue
            item = self.name("w")
            prefix = self.constant(encode_text(key) + ":")
            lines.append(f"{pad}{item} = {var}.get({self.constant(key)}, _MISSING)")
            lines.append(f"{pad}if {item} is not _MISSING:")
            value, setup = self.encode_value(properties[key], item, depth + 1)
            lines += setup
            lines.append(f"{pad}    {parts}.append({prefix} + {value})")
        return lines

    def encode_value(self, schema: Any, var: str, depth: int) -> tuple[str, list[str]]:
        """An expression giving the canonical JSON of ``var``, and lines to run first."""
        if not isinstance(schema, Mapping):
            return f"_encode({var})", []
        # Enums are compiled only when they hold strings.
        kind = "string" if "enum" in schema else schema.get("type")
        simple = {
            "string": f"_text({var})",
            "integer": f"str({var})",
            "boolean": f"('true' if {var} else 'false')",
            "null": "'null'",
        }
        if isinstance(kind, str) and kind in simple:
            return simple[kind], []
        items = schema.get("items")
        if (
            kind == "array"
            and isinstance(items, Mapping)
            and (items.get("type") == "string" or "enum" in items)
        ):
            return f"'[' + ','.join(map(_text, {var})) + ']'", []
        if kind == "object" and schema.get("additionalProperties") is False:
            parts = self.name("p")
            lines = self.encode_object(schema, var, parts, depth)
            return f"'{{' + ','.join({parts}) + '}}'", lines
        return f"_encode({var})", []
