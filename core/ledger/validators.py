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
from nbguard.ledger.canonical import MAX_SAFE_INTEGER, check_canonical

#: A compiled check: True if the body is valid and canonical, False to ask the reference.
BodyCheck = Callable[[Any], bool]

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
