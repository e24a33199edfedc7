"""Loading Cedar policy files so that every policy has a stable id and a file and line.

Cedar numbers policies by position (``policy0``, ``policy1``, ...), which says
nothing to an admin and changes when a file is edited. Here every policy is
known by its ``@id("...")`` annotation or, without one, by ``file.cedar:LINE``;
decisions report these ids, and every parse or validation problem names the file
and line of the policy at fault.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cedarpy

from nbguard.errors import PolicyLoadError, SourceProblem


@dataclass(frozen=True, slots=True)
class PolicySource:
    """One policy or template as written: its id, where it is, and its text."""

    id: str
    path: str
    line: int
    text: str
    is_template: bool
    est: dict[str, Any]

    @property
    def location(self) -> str:
        """``file.cedar:LINE``, for messages."""
        return f"{self.path}:{self.line}"


@dataclass(frozen=True, slots=True)
class Statement:
    """A policy's text and the line it starts on, as cut from a file."""

    line: int
    text: str


def split_statements(text: str) -> list[Statement]:
    """Cut Cedar policy text into statements at each ``;`` outside strings and comments.

    Cedar has no other use for ``;``, so this finds the same policies the Cedar
    parser does, in the same order, and remembers the line each one starts on.
    """
    statements: list[Statement] = []
    start: int | None = None
    start_line = 1
    line = 1
    i = 0
    in_string = False
    n = len(text)
    while i < n:
        char = text[i]
        if in_string:
            if char == "\\":
                i += 1
            elif char == '"':
                in_string = False
            elif char == "\n":
                line += 1
        elif char == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end == -1 else end
            continue
        elif char == "\n":
            line += 1
        elif not char.isspace():
            if start is None:
                start, start_line = i, line
            if char == '"':
                in_string = True
            elif char == ";":
                statements.append(Statement(start_line, text[start : i + 1]))
                start = None
        i += 1
    if start is not None and text[start:].strip():
        # A trailing statement without ';' is a parse error; keep it so it is reported.
        statements.append(Statement(start_line, text[start:]))
    return statements


def load_policy_files(paths: list[Path], schema: cedarpy.Schema) -> list[PolicySource]:
    """Parse and validate every file; return the policies or raise PolicyLoadError.

    All problems in all files are collected before raising, so that an admin sees
    everything to fix at once.
    """
    sources: list[PolicySource] = []
    problems: list[SourceProblem] = []
    for path in paths:
        file_sources, file_problems = _load_file(path, schema)
        sources.extend(file_sources)
        problems.extend(file_problems)
    seen: dict[str, PolicySource] = {}
    for source in sources:
        first = seen.setdefault(source.id, source)
        if first is not source:
            problems.append(
                SourceProblem(
                    source.path,
                    source.line,
                    f"policy id {source.id!r} is already used at {first.location}",
                )
            )
    if problems:
        raise PolicyLoadError(problems)
    return sources


def build_policy_set(sources: list[PolicySource]) -> cedarpy.PolicySet:
    """One cedarpy PolicySet whose policy ids are the sources' ids."""
    document: dict[str, Any] = {"staticPolicies": {}, "templates": {}, "templateLinks": []}
    for source in sources:
        section = "templates" if source.is_template else "staticPolicies"
        document[section][source.id] = source.est
    return cedarpy.PolicySet.from_json_str(json.dumps(document))


def _load_file(
    path: Path, schema: cedarpy.Schema
) -> tuple[list[PolicySource], list[SourceProblem]]:
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return [], [SourceProblem(shown, None, f"cannot read policy file: {error}")]
    statements = split_statements(text)
    try:
        est = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError as error:
        return [], [_parse_problem(shown, statements, error)]
    positional = {**est.get("staticPolicies", {}), **est.get("templates", {})}
    templates = set(est.get("templates", {}))
    if len(positional) != len(statements):  # pragma: no cover - splitter and Cedar disagree
        return [], [
            SourceProblem(
                shown,
                None,
                f"found {len(statements)} statements but Cedar parsed {len(positional)} policies",
            )
        ]
    sources = []
    by_position: dict[str, PolicySource] = {}
    for index, statement in enumerate(statements):
        cedar_id = f"policy{index}"
        policy_est = positional[cedar_id]
        annotated = policy_est.get("annotations", {}).get("id")
        source = PolicySource(
            id=annotated or f"{path.name}:{statement.line}",
            path=shown,
            line=statement.line,
            text=statement.text,
            is_template=cedar_id in templates,
            est=policy_est,
        )
        sources.append(source)
        by_position[cedar_id] = source
    return sources, _validate(text, schema, shown, by_position)


def _parse_problem(path: str, statements: list[Statement], error: ValueError) -> SourceProblem:
    """Find the first statement that fails to parse on its own, to name its line."""
    for statement in statements:
        try:
            cedarpy.policies_to_json_str(statement.text)
        except ValueError as statement_error:
            return SourceProblem(path, statement.line, f"syntax error: {statement_error}")
    return SourceProblem(path, None, f"syntax error: {error}")


def _validate(
    text: str, schema: cedarpy.Schema, path: str, by_position: dict[str, PolicySource]
) -> list[SourceProblem]:
    result = cedarpy.validate_policies(text, schema)
    problems = []
    for error in result.errors:
        source = by_position.get(error.policy_id)
        message = error.error
        if source is None:
            problems.append(SourceProblem(path, None, message))
            continue
        message = message.replace(f"`{error.policy_id}`", f"`{source.id}`")
        problems.append(SourceProblem(path, source.line, message))
    return problems
