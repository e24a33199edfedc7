"""Reading the catalog file admins write (``catalog.yaml``)::

    datasets:
      sales:
        description: Monthly sales by region
        team: analytics
        owner: dave
        sensitivity: internal
        environment: train
        storage: "file:///srv/data/sales"

``team``, ``sensitivity`` and ``environment`` are required; ``description``,
``owner`` and ``storage`` default to ``""`` (no owner; the default store). Every
problem in the file is reported at once, each with its file and line, as one
PolicyLoadError; a name given twice is a problem (YAML would silently keep the last).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nbguard.catalog.models import FIELDS, Dataset, DatasetFieldError
from nbguard.errors import PolicyLoadError, SourceProblem

SECTION = "datasets"
_ENTRY_FIELDS = tuple(f for f in FIELDS if f != "name")


def load_catalog_file(path: str | Path) -> list[Dataset]:
    """Every dataset in a catalog YAML file, in file order; raise PolicyLoadError."""
    shown = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PolicyLoadError([SourceProblem(shown, None, f"cannot read: {error}")]) from error
    try:
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise PolicyLoadError([SourceProblem(shown, line, f"invalid YAML: {error}")]) from error
    problems: list[SourceProblem] = []
    datasets = _read_root(shown, root, problems)
    if problems:
        raise PolicyLoadError(problems)
    return datasets


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _read_root(path: str, root: yaml.Node | None, problems: list[SourceProblem]) -> list[Dataset]:
    if root is None:
        return []
    if not isinstance(root, yaml.MappingNode):
        problems.append(SourceProblem(path, _line(root), f"expected a mapping with {SECTION!r}"))
        return []
    datasets: list[Dataset] = []
    for key, value in root.value:
        if key.value != SECTION:
            problems.append(
                SourceProblem(path, _line(key), f"unknown section {key.value!r}; known: {SECTION}")
            )
        elif isinstance(value, yaml.MappingNode):
            datasets = _read_entries(path, value, problems)
        elif not (isinstance(value, yaml.ScalarNode) and value.tag.endswith(":null")):
            problems.append(SourceProblem(path, _line(key), f"{SECTION} must be a mapping"))
    return datasets


def _read_entries(
    path: str, section: yaml.MappingNode, problems: list[SourceProblem]
) -> list[Dataset]:
    datasets: list[Dataset] = []
    seen: dict[str, int] = {}
    for key, value in section.value:
        name = str(key.value)
        if name in seen:
            problems.append(
                SourceProblem(
                    path, _line(key), f"dataset {name!r} is already defined on line {seen[name]}"
                )
            )
            continue
        seen[name] = _line(key)
        try:
            datasets.append(_read_entry(name, value))
        except _FieldProblem as problem:
            problems.append(SourceProblem(path, problem.line or _line(key), problem.message))
    return datasets


class _FieldProblem(Exception):
    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def _read_entry(name: str, node: yaml.Node) -> Dataset:
    if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
        fields_node: list[tuple[yaml.Node, yaml.Node]] = []
    elif isinstance(node, yaml.MappingNode):
        fields_node = node.value
    else:
        raise _FieldProblem(f"dataset {name!r} must be a mapping of fields")
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for key, value in fields_node:
        field = str(key.value)
        lines[field] = _line(key)
        if field not in _ENTRY_FIELDS:
            raise _FieldProblem(
                f"dataset {name!r}: unknown field {field!r}; known: {', '.join(_ENTRY_FIELDS)}",
                lines[field],
            )
        # Plain text only: ``owner: 123`` or ``environment: yes`` are not names.
        if not (isinstance(value, yaml.ScalarNode) and value.tag.endswith(":str")):
            raise _FieldProblem(f"dataset {name!r}: {field} must be text (quote it)", lines[field])
        values[field] = value.value
    try:
        return Dataset.from_dict({"name": name, **values})
    except DatasetFieldError as error:
        raise _FieldProblem(f"dataset {name!r}: {error}", lines.get(error.field)) from error
