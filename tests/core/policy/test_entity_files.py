"""Entity files: the friendly YAML form, Cedar JSON, and line-accurate errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbguard.errors import PolicyLoadError
from nbguard.policy.entity_files import load_entity_file

from .conftest import write_file


def test_yaml_sections_build_cedar_entities(tmp_path: Path) -> None:
    """Users become members of their roles and teams; datasets get a grant key."""
    path = write_file(
        tmp_path,
        "entities.yaml",
        "roles: [r]\nusers:\n  alice: {roles: [r], teams: [t]}\n"
        "datasets:\n  d: {sensitivity: internal, environment: dev, team: t}\n",
    )
    entities = {e["uid"]["id"]: e for e in load_entity_file(path)}
    assert {"type": "nbguard::Role", "id": "r"} in entities["alice"]["parents"]
    assert entities["d"]["attrs"]["key"] == "dataset:d"


def test_model_version_inherits_from_its_model(tmp_path: Path) -> None:
    """A model version takes sensitivity and team from its model and is its child."""
    path = write_file(
        tmp_path,
        "entities.yaml",
        "models:\n  m: {sensitivity: restricted, environment: prod, team: t}\n"
        "model_versions:\n  m/2: {registered_by: bob, stage: Staging}\n",
    )
    version = next(e for e in load_entity_file(path) if e["uid"]["id"] == "m/2")
    assert version["attrs"]["sensitivity"] == "restricted"
    assert version["parents"] == [{"type": "nbguard::Model", "id": "m"}]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        pytest.param("users:\n  a: {role: [x]}\n", 2, "unknown field(s) role", id="typo-field"),
        pytest.param(
            "datasets:\n  d: {sensitivity: secret, environment: dev, team: t}\n",
            2,
            "secret",
            id="bad-sensitivity",
        ),
        pytest.param(
            "datasets:\n  ok: {sensitivity: public, environment: dev, team: t}\n  d: {environment: dev}\n",
            3,
            "missing",
            id="missing-fields",
        ),
        pytest.param("userz:\n  a: {}\n", 1, "unknown section", id="unknown-section"),
        pytest.param(
            "model_versions:\n  noslash: {registered_by: b}\n",
            2,
            "MODEL/VERSION",
            id="version-name",
        ),
        pytest.param("users: [\n", 2, "invalid YAML", id="broken-yaml"),
        pytest.param(
            "elevation_requests:\n  r: {requester: a}\n",
            2,
            "either a role",
            id="request-without-target",
        ),
    ],
)
def test_bad_entries_are_located(tmp_path: Path, text: str, line: int, message: str) -> None:
    """Each bad entry is reported with the file, its line and what is wrong."""
    path = write_file(tmp_path, "entities.yaml", text)
    with pytest.raises(PolicyLoadError) as raised:
        load_entity_file(path)
    problem = raised.value.problems[0]
    assert (problem.line, message in problem.message) == (line, True), problem


def test_cedar_json_entities_load_as_is(tmp_path: Path) -> None:
    """A Cedar JSON entity list is accepted unchanged."""
    items = [{"uid": {"type": "nbguard::Role", "id": "r"}, "attrs": {}, "parents": []}]
    path = write_file(tmp_path, "entities.json", json.dumps(items))
    assert load_entity_file(path) == items


def test_cedar_json_must_be_a_list(tmp_path: Path) -> None:
    """A JSON document that is not an entity list is refused clearly."""
    path = write_file(tmp_path, "entities.json", '{"uid": 1}')
    with pytest.raises(PolicyLoadError, match="JSON list"):
        load_entity_file(path)
