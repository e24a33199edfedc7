"""Reading the entities admins write: ``entities.yaml`` (friendly) or ``entities.json`` (Cedar).

The YAML form has one section per kind::

    roles: [data-scientist, ml-engineer]
    teams: [analytics]
    users:
      alice: {roles: [data-scientist], teams: [analytics], email: alice@example.org}
    datasets:
      sales: {sensitivity: internal, environment: train, team: analytics}
    models:
      fraud: {sensitivity: confidential, environment: prod, team: ml-platform}
    model_versions:
      fraud/3: {registered_by: bob, stage: Production, aliases: [champion]}
    profiles:
      prod: {environment: prod, sensitivity: confidential}
    servers:
      alice: {owner: alice, environment: train}
    elevation_requests:
      req-1: {requester: alice, action: dataset.read, target: "dataset:customers"}

A model version takes its sensitivity, environment and team from its model unless
it names its own. Problems are reported with the file and line of the entry.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from nbguard.errors import EntityError, NBGuardError, PolicyLoadError, RequestError, SourceProblem
from nbguard.policy import entities as build
from nbguard.policy.entities import Entity
from nbguard.policy.refs import EntityRef

SECTIONS = (
    "roles",
    "teams",
    "groups",
    "users",
    "datasets",
    "models",
    "model_versions",
    "profiles",
    "servers",
    "elevation_requests",
)

_SECTION_FIELDS: dict[str, set[str]] = {
    "users": {"roles", "teams", "groups", "display_name", "email"},
    "datasets": {"sensitivity", "environment", "team", "owner"},
    "models": {"sensitivity", "environment", "team", "owner"},
    "model_versions": {"sensitivity", "environment", "team", "registered_by", "stage", "aliases"},
    "profiles": {"environment", "sensitivity"},
    "servers": {"owner", "environment"},
    "elevation_requests": {
        "requester",
        "role",
        "action",
        "target",
        "environment",
        "sensitivity",
        "break_glass",
    },
}


def load_entity_file(path: Path) -> list[Entity]:
    """Entities from a ``.yaml``/``.yml`` or Cedar ``.json`` file; raise PolicyLoadError."""
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PolicyLoadError([SourceProblem(shown, None, f"cannot read: {error}")]) from error
    if path.suffix == ".json":
        return _load_json(shown, text)
    return _load_yaml(shown, text)


def _load_json(path: str, text: str) -> list[Entity]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        problem = SourceProblem(path, error.lineno, f"invalid JSON: {error.msg}")
        raise PolicyLoadError([problem]) from error
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise PolicyLoadError([SourceProblem(path, None, "expected a JSON list of Cedar entities")])
    for item in data:
        try:
            build.ref_of(item)
        except NBGuardError as error:
            raise PolicyLoadError([SourceProblem(path, None, str(error))]) from error
    return data


def _load_yaml(path: str, text: str) -> list[Entity]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise PolicyLoadError([SourceProblem(path, line, f"invalid YAML: {error}")]) from error
    if data is None:
        return []
    if not isinstance(data, dict):
        raise PolicyLoadError([SourceProblem(path, 1, "expected a mapping of sections")])
    lines = _entry_lines(root)
    problems: list[SourceProblem] = []
    unknown = sorted(set(data) - set(SECTIONS))
    for section in unknown:
        problems.append(
            SourceProblem(
                path,
                lines.get((section, None)),
                f"unknown section {section!r}; known: {', '.join(SECTIONS)}",
            )
        )
    result: list[Entity] = []
    models: dict[str, Mapping[str, Any]] = {}
    for section in SECTIONS:
        entries = data.get(section) or {}
        if section in ("roles", "teams", "groups"):
            entries = {name: {} for name in entries} if isinstance(entries, list) else entries
        if not isinstance(entries, dict):
            problems.append(
                SourceProblem(path, lines.get((section, None)), f"{section} must be a mapping")
            )
            continue
        for name, fields in entries.items():
            line = lines.get((section, str(name)))
            try:
                entity = _build(section, str(name), fields or {}, models)
            except (EntityError, RequestError) as error:
                problems.append(SourceProblem(path, line, str(error)))
                continue
            if section == "models":
                models[str(name)] = fields or {}
            result.append(entity)
    if problems:
        raise PolicyLoadError(problems)
    return result


def _build(section: str, name: str, fields: Any, models: Mapping[str, Mapping[str, Any]]) -> Entity:
    if not isinstance(fields, Mapping):
        raise EntityError(f"{section} entry {name!r} must be a mapping of fields")
    allowed = _SECTION_FIELDS.get(section, set())
    extra = sorted(set(fields) - allowed)
    if extra:
        raise EntityError(
            f"{section} entry {name!r}: unknown field(s) {', '.join(extra)}; "
            f"known: {', '.join(sorted(allowed)) or 'none'}"
        )
    builders: dict[str, Callable[..., Entity]] = {
        "users": build.user,
        "datasets": build.dataset,
        "models": build.model,
        "profiles": build.profile,
        "servers": build.server,
        "elevation_requests": build.elevation_request,
    }
    if section == "roles":
        return build.entity(EntityRef.of("Role", name), {})
    if section == "teams":
        return build.entity(EntityRef.of("Team", name), {})
    if section == "groups":
        return build.entity(EntityRef.of("Group", name), {})
    if section == "model_versions":
        model_name, sep, version = name.rpartition("/")
        if not sep or not model_name or not version:
            raise EntityError(f"model version {name!r} must be written MODEL/VERSION")
        inherited = {
            k: v
            for k, v in models.get(model_name, {}).items()
            if k in ("sensitivity", "environment", "team")
        }
        return build.model_version(model_name, version, **{**inherited, **fields})
    try:
        return builders[section](name, **fields)
    except TypeError as error:
        raise EntityError(f"{section} entry {name!r}: {_missing(error)}") from error


def _missing(error: TypeError) -> str:
    message = str(error)
    marker = "missing "
    return message[message.index(marker) :] if marker in message else message


def _entry_lines(root: yaml.Node | None) -> dict[tuple[str, str | None], int]:
    """Map (section, entry name) and (section, None) to 1-based line numbers."""
    lines: dict[tuple[str, str | None], int] = {}
    if not isinstance(root, yaml.MappingNode):
        return lines
    for key_node, value_node in root.value:
        section = str(key_node.value)
        lines[(section, None)] = key_node.start_mark.line + 1
        if isinstance(value_node, yaml.MappingNode):
            for entry_key, _ in value_node.value:
                lines[(section, str(entry_key.value))] = entry_key.start_mark.line + 1
        elif isinstance(value_node, yaml.SequenceNode):
            for item in value_node.value:
                lines[(section, str(item.value))] = item.start_mark.line + 1
    return lines
