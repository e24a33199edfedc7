"""The documented byte format: the worked example in docs/ledger-format.md is what the code does."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from nbguard.ledger.records import GENESIS_HASH, commitment, commitments_of, seal

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
