"""The documented byte format: the worked example in docs/ledger-format.md is what the code does."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from nbguard.errors import LedgerIntegrityError
from nbguard.ledger.chain import is_digest
from nbguard.ledger.records import (
    GENESIS_HASH,
    commitment_of,
    export_line,
    personal_values,
    prepare_record,
    seal,
    sealed_parts,
)
from nbguard.ledger.schemas import packaged_schemas

from .conftest import SAMPLES

DOC = Path(__file__).parents[3] / "docs" / "ledger-format.md"
SALT = "00112233445566778899aabbccddeeff"
PERSONAL = {"actor": "alice", "body.username": "alice", "salt": SALT}
CORE = {
    "body": {"method": "pam", "outcome": "success"},
    "kind": "login",
    "personal": ["actor", "body.username"],
    "session": "s-1",
    "time": "2025-01-02T03:04:05.000000Z",
    "v": 1,
}
COMMITMENT = "8c2034e1516930aebd1e017a61d99cb07d56f9630c75c4d2c64812f02931b49f"
EXPECTED = "06f661b1b227bd3760404cbe72bb4ae85bdd5acd896635a997e99656f9d2056b"


def _canon(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_worked_example_independent_implementation() -> None:
    """Plain hashlib + json, following the doc, gives the documented commitment and hash."""
    commitment = hashlib.sha256(_canon(PERSONAL)).hexdigest()
    assert commitment == COMMITMENT
    sealed = {"personal": commitment, "prev": "0" * 64, "record": CORE, "seq": 1}
    assert hashlib.sha256(_canon(sealed)).hexdigest() == EXPECTED


def test_worked_example_matches_nbguard(monkeypatch: pytest.MonkeyPatch) -> None:
    """nbguard, given the example's salt, stores the documented core and personal part."""
    from nbguard.ledger import records

    monkeypatch.setattr(records._salts, "take", lambda: SALT)
    record = prepare_record(
        packaged_schemas(),
        "login",
        {"outcome": "success", "method": "pam", "username": "alice"},
        actor="alice",
        session="s-1",
        time=CORE["time"],
    )
    assert record.core.encode() == _canon(CORE)
    assert record.personal.encode() == _canon(PERSONAL)
    assert record.commitment == commitment_of(record.personal) == COMMITMENT
    assert seal(1, GENESIS_HASH, record.core.encode(), record.commitment) == EXPECTED


def test_doc_shows_the_same_bytes_and_hash() -> None:
    """The documentation quotes exactly the hashed bytes and the hash the code computes."""
    sealed = _canon({"personal": COMMITMENT, "prev": "0" * 64, "record": CORE, "seq": 1}).decode()
    text = DOC.read_text()
    assert f"\n{_canon(PERSONAL).decode()}\n" in text
    assert f"= {COMMITMENT}" in text
    assert f"\n{sealed}\n" in text
    assert f"Record hash: `{EXPECTED}`" in text


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_stored_parts_are_canonical_and_export_back(kind: str) -> None:
    """Each kind's stored core and personal part are canonical JSON, and a full or redacted
    export line of them seals to the record's hash."""
    record = prepare_record(
        packaged_schemas(), kind, SAMPLES[kind], actor='al\u00efce "x"', session=None
    )
    core, personal = json.loads(record.core), json.loads(record.personal)
    assert (_canon(core), _canon(personal)) == (record.core.encode(), record.personal.encode())
    assert sorted(personal) == [*core["personal"], "salt"]
    values, salt = personal_values(record.personal)
    assert (values["actor"], salt) == ('al\u00efce "x"', personal["salt"])
    expected = seal(7, GENESIS_HASH, record.core.encode(), record.commitment)
    for redact in (False, True):
        line = export_line(7, GENESIS_HASH, expected, record.core, record.personal, redact=redact)
        assert seal(7, GENESIS_HASH, *sealed_parts(line, packaged_schemas())) == expected


@pytest.mark.parametrize(
    "commitment",
    [
        pytest.param("A" * 64, id="uppercase"),
        pytest.param("0" * 63, id="short"),
        pytest.param('0" ,"x":"' + "0" * 55, id="json-syntax"),
        pytest.param(None, id="not-a-string"),
    ],
)
def test_a_redacted_line_needs_a_real_digest(commitment: Any) -> None:
    """A redacted line's commitment must be 64 lowercase hex digits: nothing else is sealed."""
    record = prepare_record(packaged_schemas(), "login", SAMPLES["login"], actor="a", session=None)
    line = export_line(1, GENESIS_HASH, "0" * 64, record.core, record.personal, redact=True)
    line["commitment"] = commitment
    assert not is_digest(commitment)
    with pytest.raises(LedgerIntegrityError, match="malformed record line"):
        sealed_parts(line, packaged_schemas())


@pytest.mark.parametrize(
    "commitment",
    [
        pytest.param("0" * 63, id="short"),
        pytest.param("0" * 65, id="long"),
        pytest.param("\u00e9" * 64, id="not-ascii"),
    ],
)
def test_seal_refuses_a_commitment_of_another_length(commitment: str) -> None:
    """Only the core varies in length in the hashed bytes: they split back one way only."""
    with pytest.raises(ValueError, match="64 hex digits"):
        seal(1, GENESIS_HASH, b"{}", commitment)


@pytest.mark.parametrize(
    "stored",
    [
        pytest.param("not json", id="garbage"),
        pytest.param('["actor"]', id="an-array"),
    ],
)
def test_unreadable_stored_personal_part_raises(stored: str) -> None:
    """A personal part that is not a JSON object raises ValueError."""
    with pytest.raises(ValueError):  # noqa: PT011 - json's and ours
        personal_values(stored)
