"""``nbguard catalog``: import, list, show and remove, with clean errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbguard.cli import main

CATALOG = """\
datasets:
  sales: {description: "Monthly sales", team: analytics, owner: dave, sensitivity: internal,
          environment: train, storage: "s3://bucket/sales"}
  customers: {team: crm, sensitivity: restricted, environment: prod}
"""


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A catalog database named by NBGUARD_GUARD_DB_URL, filled from a catalog file."""
    url = f"sqlite:///{tmp_path / 'guard.db'}"
    monkeypatch.setenv("NBGUARD_GUARD_DB_URL", url)
    source = tmp_path / "catalog.yaml"
    source.write_text(CATALOG)
    assert main(["catalog", "import", str(source)]) == 0
    return url


def test_import_says_how_many(db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """import prints the number of datasets it wrote; importing again replaces, not adds."""
    assert main(["catalog", "import", str(tmp_path / "catalog.yaml")]) == 0
    assert capsys.readouterr().out.startswith("Imported 2 datasets from ")
    assert main(["catalog", "list", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2


def test_list_table(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """list prints a table sorted by name, without storage locations."""
    capsys.readouterr()
    assert main(["catalog", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "NAME",
        "TEAM",
        "OWNER",
        "SENSITIVITY",
        "ENVIRONMENT",
        "DESCRIPTION",
    ]
    assert lines[1].split()[:3] == ["customers", "crm", "-"]
    assert lines[2].split()[:3] == ["sales", "analytics", "dave"]
    assert "s3://" not in "\n".join(lines)


def test_list_json_for_admins(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """list --json includes the storage location (an admin tool)."""
    capsys.readouterr()
    assert main(["catalog", "list", "--json", "--db", db]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in data] == ["customers", "sales"]
    assert data[1]["storage"] == "s3://bucket/sales"


def test_show(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """show prints every field of one dataset, the default store named in words."""
    capsys.readouterr()
    assert main(["catalog", "show", "customers"]) == 0
    out = capsys.readouterr().out
    assert "team:        crm" in out
    assert "storage:     (the default store)" in out
    assert main(["catalog", "show", "sales", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["owner"] == "dave"


def test_remove(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """remove deletes the catalog entry; a second remove is a one-line error, exit 2."""
    assert main(["catalog", "remove", "sales"]) == 0
    assert main(["catalog", "remove", "sales"]) == 2
    assert capsys.readouterr().err.strip() == "nbguard: error: no dataset 'sales' in the catalog"


def test_show_unknown_and_invalid(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown or invalid names are one-line errors with exit status 2."""
    assert main(["catalog", "show", "ghost"]) == 2
    assert main(["catalog", "show", "../etc"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert "invalid dataset name" in err[1]


def test_import_reports_every_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad catalog file prints each problem as file:line and exits 1, writing nothing."""
    url = f"sqlite:///{tmp_path / 'guard.db'}"
    source = tmp_path / "catalog.yaml"
    source.write_text(
        "datasets:\n  sales: {team: a, sensitivity: x, environment: dev}\n  B: {team: a}\n"
    )
    assert main(["catalog", "import", str(source), "--db", url]) == 1
    err = capsys.readouterr().err
    assert f"{source}:2: dataset 'sales': invalid sensitivity" in err
    assert f"{source}:3:" in err
    assert "2 problems found" in err
    monkeypatch.setenv("NBGUARD_GUARD_DB_URL", url)
    assert main(["catalog", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_no_database(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --db or NBGUARD_GUARD_DB_URL the command says what to do."""
    monkeypatch.delenv("NBGUARD_GUARD_DB_URL", raising=False)
    assert main(["catalog", "list"]) == 2
    assert "pass --db URL or set NBGUARD_GUARD_DB_URL" in capsys.readouterr().err
