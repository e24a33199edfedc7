"""Exports: full and redacted JSONL that verify offline, and that reveal tampering too."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nbguard.ledger import Ledger
from nbguard.ledger.canonical import canonical_bytes
from nbguard.ledger.records import commitment_of

from .conftest import SAMPLES

Run = Callable[..., tuple[int, str, str]]
#: Records in ``ledger_db``: every kind, twice.
RECORDS = 2 * len(SAMPLES)


@pytest.fixture
def ledger_db(make_ledger: Callable[..., Ledger], tmp_path: Path) -> Path:
    """A closed, signed ledger with one record of every kind (twice) and personal data."""
    ledger = make_ledger(checkpoint_every=4)
    for _ in range(2):
        for kind, body in sorted(SAMPLES.items()):
            ledger.append(kind, body, actor="alice", session="s-1")
    ledger.close()
    return tmp_path / "ledger.db"


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _write(path: Path, lines: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def _export(nbguard: Run, db: Path, out: Path, *extra: str) -> list[dict[str, Any]]:
    status, _, err = nbguard("ledger", "export", db, "-o", out, *extra)
    assert status == 0, err
    return _lines(out)


def test_full_export_verifies_and_keeps_personal_data(
    nbguard: Run, ledger_db: Path, tmp_path: Path, keypair: tuple[Path, Path]
) -> None:
    """A full export carries every value and verifies offline with the public key."""
    lines = _export(nbguard, ledger_db, tmp_path / "full.jsonl")
    header, records = lines[0], [line for line in lines if line["type"] == "record"]
    assert (header["records"], header["redacted"]) == (RECORDS, False)
    assert records[0]["record"]["actor"] == "alice"
    status, out, _ = nbguard("verify", tmp_path / "full.jsonl", "--key", keypair[1])
    assert status == 0, out
    assert out.startswith(f"OK: {RECORDS} records intact")


def test_redacted_export_verifies_without_personal_data(
    nbguard: Run, ledger_db: Path, tmp_path: Path, keypair: tuple[Path, Path]
) -> None:
    """A redacted export holds no personal value or salt, only commitments, and still verifies."""
    path = tmp_path / "redacted.jsonl"
    lines = _export(nbguard, ledger_db, path, "--redact")
    text = path.read_text()
    for secret in ("alice", "carol", "phone", "incident 42", "read_parquet", "salt"):
        assert secret not in text
    login = next(line for line in lines if line.get("record", {}).get("kind") == "login")
    assert set(login["redacted"]) == {"actor", "body.username"}
    assert "username" not in login["record"]["body"]
    status, out, _ = nbguard("verify", path, "--key", keypair[1])
    assert status == 0, out


def test_commitments_are_salted(nbguard: Run, ledger_db: Path, tmp_path: Path) -> None:
    """Equal values get different commitments, and an unsalted guess does not match any."""
    full = _export(nbguard, ledger_db, tmp_path / "full.jsonl")
    lines = _export(nbguard, ledger_db, tmp_path / "redacted.jsonl", "--redact")
    commitments = [line["commitment"] for line in lines if line["type"] == "record"]
    assert len(set(commitments)) == len(commitments) == RECORDS
    for line in full[-RECORDS:]:
        values = {path: _get(line["record"], path) for path in line["record"]["personal"]}
        assert commitment_of(canonical_bytes(values)) not in commitments
        assert commitment_of(canonical_bytes({**values, "salt": ""})) not in commitments


def test_full_export_commitments_match_redacted(
    nbguard: Run, ledger_db: Path, tmp_path: Path
) -> None:
    """A full export's values and salt open the commitment found in the redacted export."""
    full = _export(nbguard, ledger_db, tmp_path / "full.jsonl")
    redacted = _export(nbguard, ledger_db, tmp_path / "redacted.jsonl", "--redact")
    line, redacted_line = full[-1], redacted[-1]
    values = {path: _get(line["record"], path) for path in line["record"]["personal"]}
    opened = commitment_of(canonical_bytes({**values, "salt": line["salt"]}))
    assert opened == redacted_line["commitment"]


def _get(record: dict[str, Any], path: str) -> Any:
    head, _, name = path.partition(".")
    return record[head][name] if name else record[head]


def _edit_value(lines: list[dict[str, Any]]) -> int:
    line = next(line for line in lines if line.get("record", {}).get("kind") == "access")
    line["record"]["body"]["allowed"] = True
    return int(line["seq"])


def _edit_personal(lines: list[dict[str, Any]]) -> int:
    line = next(line for line in lines if line["type"] == "record" and line["seq"] == 5)
    line["record"]["actor"] = "mallory"
    return 5


def _unredact_with_lie(lines: list[dict[str, Any]]) -> int:
    """Replace a commitment by made-up values and a salt."""
    line = next(line for line in lines if line["type"] == "record" and line["seq"] == 7)
    for path in line.pop("redacted"):
        head, _, name = path.partition(".")
        if name:
            line["record"][head][name] = "mallory"
        else:
            line["record"][head] = "mallory"
    del line["commitment"]
    line["salt"] = "00" * 16
    return 7


def _swap_commitments(lines: list[dict[str, Any]]) -> int:
    first, second = [line for line in lines if line.get("record", {}).get("kind") == "access"]
    first["commitment"], second["commitment"] = second["commitment"], first["commitment"]
    return int(first["seq"])


def _misstate_redacted(lines: list[dict[str, Any]]) -> int:
    """Claim fewer fields were withheld than the record had."""
    line = next(line for line in lines if line.get("record", {}).get("kind") == "login")
    line["redacted"] = ["actor"]
    return int(line["seq"])


def _unlist_personal(lines: list[dict[str, Any]]) -> int:
    """Claim, in the record itself, fewer personal fields than it had."""
    line = next(line for line in lines if line.get("record", {}).get("kind") == "login")
    line["redacted"] = line["record"]["personal"] = ["actor"]
    return int(line["seq"])


def _drop_line(lines: list[dict[str, Any]]) -> int:
    index = next(i for i, line in enumerate(lines) if line.get("seq") == 9 and "record" in line)
    del lines[index]
    return 9


def _drop_tail(lines: list[dict[str, Any]]) -> int:
    del lines[-3:]
    last = max(line["seq"] for line in lines if line["type"] == "record")
    # Named: with a checkpoint left beyond the last record, the first record it
    # proves missing; else the last record (whose own checkpoint went).
    beyond = [
        line["seq"] for line in lines if line["type"] != "record" and line.get("seq", 0) > last
    ]
    return last + 1 if beyond else last


def _redact_public_field(lines: list[dict[str, Any]]) -> int:
    line = next(line for line in lines if line["type"] == "record" and line["seq"] == 3)
    line["redacted"].append("body.correlation_id")
    line["record"]["personal"].append("body.correlation_id")
    return 3


@pytest.mark.parametrize(
    ("redact", "tamper", "message"),
    [
        pytest.param(False, _edit_value, "was altered", id="edit-value"),
        pytest.param(False, _edit_personal, "was altered", id="edit-personal"),
        pytest.param(True, _unredact_with_lie, "was altered", id="unredact-with-lie"),
        pytest.param(True, _swap_commitments, "was altered", id="swap-commitments"),
        pytest.param(True, _misstate_redacted, "redacted fields", id="misstate-redacted"),
        pytest.param(True, _unlist_personal, "was altered", id="unlist-personal"),
        pytest.param(True, _drop_line, "is missing", id="drop-line"),
        pytest.param(False, _drop_tail, "removed", id="drop-tail"),
        pytest.param(True, _redact_public_field, "not a personal field", id="redact-public"),
    ],
)
def test_tampered_export_fails(
    nbguard: Run,
    ledger_db: Path,
    tmp_path: Path,
    keypair: tuple[Path, Path],
    redact: bool,
    tamper: Callable[[list[dict[str, Any]]], int],
    message: str,
) -> None:
    """Edits to an exported file are caught and the first broken record is named."""
    path = tmp_path / "export.jsonl"
    lines = _export(nbguard, ledger_db, path, *(["--redact"] if redact else []))
    seq = tamper(lines)
    _write(path, lines)
    status, out, _ = nbguard("verify", path, "--key", keypair[1])
    assert status == 1, out
    assert out.startswith(f"FAILED at record {seq}:"), out
    assert message in out


def test_export_to_stdout(nbguard: Run, ledger_db: Path) -> None:
    """Without -o the export goes to stdout, header first."""
    status, out, _ = nbguard("ledger", "export", f"sqlite:///{ledger_db}")
    assert status == 0
    assert json.loads(out.splitlines()[0])["type"] == "nbguard.ledger.export"
    checkpoints = -(-RECORDS // 4)  # every 4 records, and one at close for the rest
    assert len(out.splitlines()) == 1 + checkpoints + RECORDS  # header, checkpoints, records


def test_export_of_missing_ledger_is_a_usage_error(nbguard: Run, tmp_path: Path) -> None:
    """Exporting a database with no ledger exits 2 and creates no tables."""
    empty = tmp_path / "empty.db"
    status, _, err = nbguard("ledger", "export", f"sqlite:///{empty}")
    assert status == 2
    assert "no nbguard ledger" in err
