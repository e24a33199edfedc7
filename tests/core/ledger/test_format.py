"""The documented byte format: the worked example in docs/ledger-format.md is what the code does."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from nbguard.ledger.chain import stored_commitments
from nbguard.ledger.records import (
    GENESIS_HASH,
    commitment,
    commitments_of,
    personal_entries,
    prepare_record,
    seal,
)
from nbguard.ledger.schemas import packaged_schemas

from .conftest import SAMPLES

DOC = Path(__file__).parents[3] / "docs" / "ledger-format.md"
SALTS = {
    "actor": "00112233445566778899aabbccddeeff",
    "body.username": "ffeeddccbbaa99887766554433221100",
}
CORE = {
    "body": {"method": "pam", "outcome": "success"},
    "kind": "login",
    "session": "s-1",
    "time": "2025-01-02T03:04:05.000000Z",
    "v": 1,
}
EXPECTED = "27902f6da0785da57758639c3c05e48f15b52a6469841b546d1b99655e620f3e"


def _canon(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_worked_example_independent_implementation() -> None:
    """Plain hashlib + json, following the doc, gives the documented record hash."""
    personal = {
        path: hashlib.sha256(_canon({"path": path, "salt": salt, "value": "alice"})).hexdigest()
        for path, salt in SALTS.items()
    }
    sealed = {"personal": personal, "prev": "0" * 64, "record": CORE, "seq": 1}
    assert hashlib.sha256(_canon(sealed)).hexdigest() == EXPECTED


def test_worked_example_matches_nbguard() -> None:
    """nbguard's own seal and commitments give the same hash from the stored form."""
    stored_personal = json.dumps([[path, salt, "alice"] for path, salt in SALTS.items()])
    assert commitment("actor", SALTS["actor"], "alice").startswith("37c06af0")
    assert seal(1, GENESIS_HASH, _canon(CORE), commitments_of(stored_personal)) == EXPECTED


def test_doc_shows_the_same_bytes_and_hash() -> None:
    """The documentation quotes exactly the hashed bytes and the hash the code computes."""
    personal = {path: commitment(path, salt, "alice") for path, salt in SALTS.items()}
    sealed = _canon({"personal": personal, "prev": "0" * 64, "record": CORE, "seq": 1}).decode()
    text = DOC.read_text()
    assert f"\n{sealed}\n" in text
    assert f"Record hash: `{EXPECTED}`" in text


def test_stored_preimage_lines_give_the_documented_hash() -> None:
    """The stored form (one commitment preimage per line) seals to the documented hash."""
    stored = "\n".join(
        _canon({"path": path, "salt": salt, "value": "alice"}).decode()
        for path, salt in SALTS.items()
    )
    assert seal(1, GENESIS_HASH, _canon(CORE), commitments_of(stored)) == EXPECTED


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_both_storage_forms_give_the_sealed_commitments(kind: str) -> None:
    """Old (JSON array) and current (preimage lines) stored forms give the commitments sealed."""
    record = prepare_record(
        packaged_schemas(), kind, SAMPLES[kind], actor='al\u00efce "x"', session=None
    )
    legacy = json.dumps([list(entry) for entry in personal_entries(record.personal)])
    assert commitments_of(record.personal) == record.commitments
    assert commitments_of(legacy) == record.commitments
    assert stored_commitments(record.personal.encode()) == record.commitments


def _line(path: Any, value: Any, *, spaced: bool = False) -> str:
    data = {"path": path, "salt": SALTS["actor"], "value": value}
    if spaced:
        return json.dumps(data, ensure_ascii=False, sort_keys=True)
    return _canon(data).decode()


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(_line('body.a"b', "v"), id="quote-in-path"),
        pytest.param(_line("body.a\\b", "v"), id="backslash-in-path"),
        pytest.param(_line("actor", "alice", spaced=True), id="not-canonical"),
        pytest.param(_line("actor", {"k": [1, None]}), id="structured-value"),
    ],
)
def test_unusual_stored_lines_are_parsed_and_re_encoded(line: str) -> None:
    """A line whose key is not a plain string is parsed: its map entry is the canonical one."""
    data = json.loads(line)
    expected = _canon({data["path"]: commitment(data["path"], data["salt"], data["value"])})
    assert commitments_of(line) == expected


@pytest.mark.parametrize(
    "stored",
    [
        pytest.param("not json", id="garbage"),
        pytest.param('{"path": "actor", "salt": "00"}', id="missing-value"),
        pytest.param('["actor"]', id="short-legacy-entry"),
    ],
)
def test_unreadable_stored_personal_part_raises(stored: str) -> None:
    """A personal part that is neither stored form raises ValueError or TypeError."""
    with pytest.raises((ValueError, TypeError)):
        commitments_of(stored)
