"""Catalog files: datasets read from YAML, every problem reported with its line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from nbguard.catalog.files import load_catalog_file
from nbguard.catalog.models import Dataset
from nbguard.errors import PolicyLoadError, SourceProblem

GOOD = """\
datasets:
  sales:
    description: Monthly sales
    team: analytics
    owner: dave
    sensitivity: internal
    environment: train
    storage: "file:///srv/data/sales"
  customers: {team: crm, sensitivity: restricted, environment: prod}
"""


def write(tmp_path: Path, text: str) -> Path:
    """Write a catalog file and return its path."""
    path = tmp_path / "catalog.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[SourceProblem]:
    """The problems load_catalog_file reports for a file."""
    with pytest.raises(PolicyLoadError) as caught:
        load_catalog_file(path)
    return caught.value.problems


def test_loads_datasets_in_file_order(tmp_path: Path, sales: Dataset) -> None:
    """Each entry becomes a Dataset; missing optional fields default to ""."""
    datasets = load_catalog_file(write(tmp_path, GOOD))
    assert [d.name for d in datasets] == ["sales", "customers"]
    assert datasets[0] == dataclasses.replace(sales, storage="file:///srv/data/sales")
    assert (datasets[1].owner, datasets[1].storage, datasets[1].description) == ("", "", "")


@pytest.mark.parametrize("text", ["", "# nothing\n", "datasets:\n", "datasets: {}\n"], ids=repr)
def test_empty_files_have_no_datasets(tmp_path: Path, text: str) -> None:
    """An empty file or empty section is an empty catalog, not an error."""
    assert load_catalog_file(write(tmp_path, text)) == []


def test_every_problem_is_reported_with_its_line(tmp_path: Path) -> None:
    """All problems come at once, each at the line of the offending field or entry."""
    text = """\
datasets:
  sales:
    team: analytics
    sensitivity: secret
    environment: train
  Bad-Name: {team: a, sensitivity: public, environment: dev}
  nofields:
  colours: {team: a, sensitivity: public, environment: dev, colour: red}
  numbers:
    team: a
    owner: 123
    sensitivity: public
    environment: dev
  missing: {team: a}
  sales: {team: b, sensitivity: public, environment: dev}
extra: 1
"""
    path = write(tmp_path, text)
    found = problems_of(path)
    lines = [p.line for p in found]
    assert lines == [4, 6, 7, 8, 11, 14, 15, 16]
    assert all(p.path == str(path) for p in found)
    messages = [p.message for p in found]
    assert "invalid sensitivity 'secret'" in messages[0]
    assert "invalid dataset name 'Bad-Name'" in messages[1]
    assert "missing dataset field(s): team" in messages[2]
    assert "unknown field 'colour'" in messages[3]
    assert "owner must be text (quote it)" in messages[4]
    assert "sensitivity, environment" in messages[5]
    assert "already defined on line 2" in messages[6]
    assert "unknown section 'extra'" in messages[7]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        pytest.param("datasets: [a, b]\n", 1, "datasets must be a mapping", id="list-section"),
        pytest.param("- a\n", 1, "expected a mapping", id="list-root"),
        pytest.param(
            "datasets:\n  sales: x\n", 2, "must be a mapping of fields", id="scalar-entry"
        ),
        pytest.param("datasets:\n  sales: {team: [a]}\n", 2, "team must be text", id="list-field"),
        pytest.param("datasets:\n  a: {\n", 3, "invalid YAML", id="bad-yaml"),
    ],
)
def test_shape_problems(tmp_path: Path, text: str, line: int, message: str) -> None:
    """Wrongly shaped files are one problem at the right line."""
    (problem,) = problems_of(write(tmp_path, text))
    assert problem.line == line
    assert message in problem.message


def test_unreadable_file(tmp_path: Path) -> None:
    """A missing file is one problem naming the file."""
    (problem,) = problems_of(tmp_path / "absent.yaml")
    assert problem.line is None
    assert "cannot read" in problem.message


def test_quoted_values_are_text(tmp_path: Path) -> None:
    """Quoting makes number-like names usable as owners and teams."""
    text = (
        'datasets:\n  "2025": {team: "42", owner: "007", sensitivity: public, environment: dev}\n'
    )
    (dataset,) = load_catalog_file(write(tmp_path, text))
    assert (dataset.name, dataset.team, dataset.owner) == ("2025", "42", "007")
