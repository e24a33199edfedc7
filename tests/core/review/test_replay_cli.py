"""``nbguard replay``: a session from a database or an export, as a notebook or JSONL."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest

from nbguard.ledger import Ledger

from .conftest import ALICE, cell

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def exported(story: Ledger, ledger_url: str, tmp_path: Path, nbguard: Run) -> Path:
    """The story ledger exported as JSONL."""
    path = tmp_path / "ledger.jsonl"
    status, _, err = nbguard("ledger", "export", ledger_url, "-o", path)
    assert status == 0, err
    return path


@pytest.mark.parametrize("from_export", [False, True], ids=["database", "export"])
def test_replay_notebook(
    story: Ledger,
    ledger_url: str,
    exported: Path,
    keypair: tuple[Path, Path],
    tmp_path: Path,
    nbguard: Run,
    from_export: bool,
) -> None:
    """The session comes out as a valid notebook, verified, from either source."""
    source = exported if from_export else ledger_url
    out = tmp_path / "session.ipynb"
    status, _, err = nbguard("replay", ALICE, "-s", source, "-o", out, "-k", keypair[1])
    assert status == 0, err
    assert f"session {ALICE}: 13 records (1..14) to {out}" in err
    document = nbformat.read(out, as_version=4)
    nbformat.validate(document)
    assert document.metadata["nbguard"]["verified"] is True
    assert document.metadata["nbguard"]["checkpoint"]["seq"] == 16


def test_replay_jsonl_by_suffix(
    story: Ledger, ledger_url: str, tmp_path: Path, nbguard: Run
) -> None:
    """An output ending in .jsonl is JSON Lines; without a key the ledger is not
    verified, and the command says so without failing."""
    out = tmp_path / "session.jsonl"
    status, _, err = nbguard("replay", ALICE, "--source", ledger_url, "-o", out)
    assert status == 0, err
    assert "note: ledger not verified (no public key configured" in err
    lines = out.read_text().splitlines()
    assert json.loads(lines[0])["type"] == "nbguard.session.export"
    assert len(lines) == 14


def test_replay_stdout(story: Ledger, ledger_url: str, nbguard: Run) -> None:
    """Without -o the export goes to stdout (--format picks it)."""
    status, out, _ = nbguard("replay", ALICE, "-s", ledger_url, "--format", "jsonl")
    assert status == 0
    assert out.count("\n") == 14


@pytest.mark.parametrize(
    ("session", "source", "message"),
    [
        ("f" * 32, "db", "no such session"),
        ("f" * 32, "export", "no session 'ffffffffffffffffffffffffffffffff' in"),
        (ALICE, "other", "is neither a ledger database nor an export"),
        (ALICE, "missing", "cannot read"),
    ],
    ids=["unknown-in-database", "unknown-in-export", "not-a-ledger", "missing-file"],
)
def test_replay_errors(
    story: Ledger,
    ledger_url: str,
    exported: Path,
    tmp_path: Path,
    nbguard: Run,
    session: str,
    source: str,
    message: str,
) -> None:
    """Bad input is one ``nbguard: error:`` line and exit 2, never a traceback."""
    other = tmp_path / "notes.txt"
    other.write_text("hello\n")
    sources = {
        "db": ledger_url,
        "export": str(exported),
        "other": str(other),
        "missing": str(tmp_path / "nope.jsonl"),
    }
    status, _, err = nbguard("replay", session, "-s", sources[source])
    assert status == 2
    assert err.startswith("nbguard: error: ")
    assert message in err
    assert "Traceback" not in err


def test_replay_tampered(
    story: Ledger, ledger_url: str, keypair: tuple[Path, Path], tmp_path: Path, nbguard: Run
) -> None:
    """A session with an edited record still exports (for the investigation) but the
    command fails with the broken records named."""
    with sqlite3.connect(ledger_url.removeprefix("sqlite:///")) as db:
        db.execute(
            "UPDATE nbguard_ledger_records SET personal = replace(personal, 'import pandas', "
            "'import numpy') WHERE seq = 4"
        )
    out = tmp_path / "session.ipynb"
    status, _, err = nbguard("replay", ALICE, "-s", ledger_url, "-o", out, "-k", keypair[1])
    assert status == 1
    assert "FAILED: records not proven intact: 4, 5, 6" in err
    assert json.loads(out.read_text())["metadata"]["nbguard"]["failed_at"] == 4


def test_replay_progress(
    make_ledger: Callable[..., Ledger], ledger_url: str, tmp_path: Path, nbguard: Run
) -> None:
    """On a big ledger, --progress draws a bar on stderr while indexing."""
    ledger = make_ledger()
    records = [("cell_execution", cell(n, f"x = {n}"), "alice", ALICE) for n in range(25_000)]
    ledger.append_many(records)
    ledger.close()
    out = tmp_path / "session.jsonl"
    status, _, err = nbguard("replay", ALICE, "-s", ledger_url, "-o", out, "--progress")
    assert status == 0, err
    assert "indexing [" in err
    assert len(out.read_text().splitlines()) == 25_001


def test_replay_redacted_export(
    story: Ledger, ledger_url: str, keypair: tuple[Path, Path], tmp_path: Path, nbguard: Run
) -> None:
    """A redacted export still replays and verifies; code and output are said to be
    redacted, never shown."""
    redacted = tmp_path / "redacted.jsonl"
    assert nbguard("ledger", "export", ledger_url, "--redact", "-o", redacted)[0] == 0
    out = tmp_path / "session.ipynb"
    status, _, err = nbguard("replay", ALICE, "-s", redacted, "-o", out, "-k", keypair[1])
    assert status == 0, err
    document = nbformat.read(out, as_version=4)
    nbformat.validate(document)
    codes = [c.source for c in document.cells if c.cell_type == "code"]
    assert all(code.startswith("# Code redacted in this export; SHA-256 ") for code in codes)
    assert "import pandas" not in out.read_text()
    assert document.metadata["nbguard"]["verified"] is True


def test_replay_reads_the_default_ledger_file(
    story: Ledger, tmp_path: Path, nbguard: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --source, replay reads nbguard-ledger.sqlite in the working directory (where a
    hub without Ledger.url records), and says clearly when there is none."""
    workdir = tmp_path / "hub"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    status, _, err = nbguard("replay", ALICE, "-o", "session.ipynb")
    assert status == 2
    assert "nbguard-ledger.sqlite" in err
    assert "Traceback" not in err
    with (
        sqlite3.connect(tmp_path / "ledger.db") as source,
        sqlite3.connect(workdir / "nbguard-ledger.sqlite") as copy,
    ):
        source.backup(copy)
    status, _, err = nbguard("replay", ALICE, "-o", "session.ipynb")
    assert status == 0, err
    nbformat.validate(nbformat.read(workdir / "session.ipynb", as_version=4))
