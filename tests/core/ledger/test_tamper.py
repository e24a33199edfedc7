"""An insider with write access to the ledger database tries every edit; verify catches each.

The attacker knows the format (it is public) and can recompute hashes, so the
naive edits are caught by the hash chain and the careful ones (re-chaining
everything after the edit) by the signed checkpoints or, for a clean rollback,
by the witness. Each case names the sequence number verify must report.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nbguard.errors import LedgerIntegrityError
from nbguard.ledger import Ledger, parallel, verify_store
from nbguard.ledger.chain import GENESIS_HASH, Segment
from nbguard.ledger.checkpoints import sign_checkpoint
from nbguard.ledger.keys import generate_key_pair, load_public_keys, load_signing_key
from nbguard.ledger.ranges import join_segments, segment_from_json
from nbguard.ledger.records import commitment_of, seal
from nbguard.ledger.store import LedgerStore

from .conftest import access_body

RECORDS = 50
EVERY = 10  # checkpoints at 10, 20, 30, 40, 50


@dataclass(frozen=True)
class Pristine:
    """A signed 50-record ledger, its 30-record ancestor, witness and keys."""

    db: Path
    old_db: Path
    witness: Path
    public_key: Path
    attacker_key: Path


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    """Build the ledger once per module; each case tampers with a copy."""
    root = tmp_path_factory.mktemp("pristine")
    generate_key_pair(root / "key.pem", root / "key.pub")
    generate_key_pair(root / "attacker.pem", root / "attacker.pub")
    db, witness = root / "ledger.db", root / "witness.jsonl"

    def open_ledger() -> Ledger:
        return Ledger(
            url=f"sqlite:///{db}",
            signing_key_file=str(root / "key.pem"),
            checkpoint_every=EVERY,
            witnesses=[str(witness)],
            synchronous="normal",
        )

    with open_ledger() as ledger:
        for index in range(1, 31):
            actor = "alice" if index % 2 else "bob"
            ledger.append("access", access_body(index), actor=actor, session="s-1")
    shutil.copy(db, root / "old.db")
    with open_ledger() as ledger:
        for index in range(31, RECORDS + 1):
            actor = "alice" if index % 2 else "bob"
            ledger.append("access", access_body(index), actor=actor, session="s-1")
    return Pristine(db, root / "old.db", witness, root / "key.pub", root / "attacker.pem")


# -- the insider's tools: plain SQL on the database file --------------------------------


def _rechain(db: sqlite3.Connection, start: int) -> None:
    """Recompute every hash from ``start`` on, as an attacker who read the docs would."""
    prev = db.execute(
        "SELECT hash FROM nbguard_ledger_records WHERE seq = ?", (start - 1,)
    ).fetchone()
    prev_hash = prev[0] if prev else "0" * 64
    rows = db.execute(
        "SELECT seq, core, personal FROM nbguard_ledger_records WHERE seq >= ? ORDER BY seq",
        (start,),
    ).fetchall()
    for seq, core, personal in rows:
        prev_hash = seal(seq, prev_hash, core.encode(), commitment_of(personal))
        db.execute("UPDATE nbguard_ledger_records SET hash = ? WHERE seq = ?", (prev_hash, seq))
    db.execute("UPDATE nbguard_ledger_head SET seq = ?, hash = ?", (rows[-1][0], prev_hash))


def _edit_field(db: sqlite3.Connection, seq: int = 17) -> None:
    db.execute(
        """UPDATE nbguard_ledger_records SET core = replace(core, '"allowed":false',
        '"allowed":true') WHERE seq = ?""",
        (seq,),
    )


def edit_field(db: sqlite3.Connection, _: Pristine) -> None:
    """Turn a denial into an allow."""
    _edit_field(db)


def edit_personal_field(db: sqlite3.Connection, _: Pristine) -> None:
    """Blame someone else: change who the actor was."""
    db.execute(
        "UPDATE nbguard_ledger_records SET personal = replace(personal, 'alice', 'mallory') "
        "WHERE seq = 23"
    )


def garble_personal_field(db: sqlite3.Connection, _: Pristine) -> None:
    """Overwrite the personal part with something that is not a personal part at all."""
    db.execute("UPDATE nbguard_ledger_records SET personal = 'x\n[' WHERE seq = 23")


def drop_personal_part(db: sqlite3.Connection, _: Pristine) -> None:
    """Delete the personal part (NULL), as if the record had no personal fields."""
    db.execute("UPDATE nbguard_ledger_records SET personal = NULL WHERE seq = 23")


def borrow_personal_part(db: sqlite3.Connection, _: Pristine) -> None:
    """Give a record the (intact, well-formed) personal part of its neighbour."""
    db.execute(
        "UPDATE nbguard_ledger_records SET personal = "
        "(SELECT personal FROM nbguard_ledger_records WHERE seq = 22) WHERE seq = 23"
    )


def edit_field_and_its_hash(db: sqlite3.Connection, _: Pristine) -> None:
    """Edit a record and store its recomputed hash (but not the records after it)."""
    _edit_field(db)
    prev = db.execute("SELECT hash FROM nbguard_ledger_records WHERE seq = 16").fetchone()[0]
    core, personal = db.execute(
        "SELECT core, personal FROM nbguard_ledger_records WHERE seq = 17"
    ).fetchone()
    new = seal(17, prev, core.encode(), commitment_of(personal))
    db.execute("UPDATE nbguard_ledger_records SET hash = ? WHERE seq = 17", (new,))


def delete_record(db: sqlite3.Connection, _: Pristine) -> None:
    """Remove the record of one action."""
    db.execute("DELETE FROM nbguard_ledger_records WHERE seq = 31")


def _insert_at(db: sqlite3.Connection, seq: int) -> None:
    rows = db.execute(
        "SELECT seq FROM nbguard_ledger_records WHERE seq >= ? ORDER BY seq DESC", (seq,)
    ).fetchall()
    for (old,) in rows:  # from the top, so the primary key never collides
        db.execute("UPDATE nbguard_ledger_records SET seq = ? WHERE seq = ?", (old + 1, old))
    template = db.execute(
        "SELECT core, personal FROM nbguard_ledger_records WHERE seq = ?", (seq - 1,)
    ).fetchone()
    prev = db.execute(
        "SELECT hash FROM nbguard_ledger_records WHERE seq = ?", (seq - 1,)
    ).fetchone()[0]
    forged = seal(seq, prev, template[0].encode(), commitment_of(template[1]))
    db.execute(
        "INSERT INTO nbguard_ledger_records (seq, core, personal, hash) VALUES (?, ?, ?, ?)",
        (seq, template[0], template[1], forged),
    )


def insert_record(db: sqlite3.Connection, _: Pristine) -> None:
    """Slip in a record that never happened, correctly chained to its predecessor."""
    _insert_at(db, 12)


def insert_record_rechained(db: sqlite3.Connection, _: Pristine) -> None:
    """Slip in a record and recompute every hash after it."""
    _insert_at(db, 12)
    _rechain(db, 13)


def _swap(db: sqlite3.Connection, a: int, b: int) -> None:
    row_a = db.execute(
        "SELECT core, personal, hash FROM nbguard_ledger_records WHERE seq = ?", (a,)
    ).fetchone()
    row_b = db.execute(
        "SELECT core, personal, hash FROM nbguard_ledger_records WHERE seq = ?", (b,)
    ).fetchone()
    for seq, row in ((a, row_b), (b, row_a)):
        db.execute(
            "UPDATE nbguard_ledger_records SET core = ?, personal = ?, hash = ? WHERE seq = ?",
            (*row, seq),
        )


def reorder_two(db: sqlite3.Connection, _: Pristine) -> None:
    """Swap the order of two records."""
    _swap(db, 25, 26)


def reorder_two_rechained(db: sqlite3.Connection, _: Pristine) -> None:
    """Swap two records and recompute the chain after them."""
    _swap(db, 25, 26)
    _rechain(db, 25)


def truncate_tail(db: sqlite3.Connection, _: Pristine) -> None:
    """Drop the most recent records."""
    db.execute("DELETE FROM nbguard_ledger_records WHERE seq > 45")


def truncate_tail_and_checkpoints(db: sqlite3.Connection, _: Pristine) -> None:
    """Drop the newest records and the checkpoints that covered them."""
    db.execute("DELETE FROM nbguard_ledger_records WHERE seq > 45")
    db.execute("DELETE FROM nbguard_ledger_checkpoints WHERE seq > 40")


def replace_checkpoint(db: sqlite3.Connection, _: Pristine) -> None:
    """Point a checkpoint at another head without being able to sign it."""
    other = db.execute("SELECT hash FROM nbguard_ledger_records WHERE seq = 29").fetchone()[0]
    db.execute("UPDATE nbguard_ledger_checkpoints SET head = ? WHERE seq = 30", (other,))


def _resign(db: sqlite3.Connection, pristine: Pristine, *, spoof_key_id: bool) -> None:
    _edit_field(db, 33)
    _rechain(db, 33)
    attacker = load_signing_key(pristine.attacker_key)
    ledger_id = db.execute("SELECT ledger_id FROM nbguard_ledger_head").fetchone()[0]
    legit_key_id = db.execute("SELECT key_id FROM nbguard_ledger_checkpoints").fetchone()[0]
    for seq in (40, 50):
        head = db.execute("SELECT hash FROM nbguard_ledger_records WHERE seq = ?", (seq,))
        forged = sign_checkpoint(attacker, ledger=ledger_id, seq=seq, head=head.fetchone()[0])
        key_id = legit_key_id if spoof_key_id else forged.key_id
        db.execute(
            "UPDATE nbguard_ledger_checkpoints SET head = ?, key_id = ?, signature = ? "
            "WHERE seq = ?",
            (forged.head, key_id, forged.signature, seq),
        )


def resign_with_other_key(db: sqlite3.Connection, pristine: Pristine) -> None:
    """Rewrite history and re-sign the checkpoints after it with the attacker's key."""
    _resign(db, pristine, spoof_key_id=False)


def resign_with_spoofed_key_id(db: sqlite3.Connection, pristine: Pristine) -> None:
    """The same, claiming the legitimate key's id."""
    _resign(db, pristine, spoof_key_id=True)


def change_ledger_id(db: sqlite3.Connection, _: Pristine) -> None:
    """Pass the database off as another ledger."""
    db.execute("UPDATE nbguard_ledger_head SET ledger_id = 'ffffffffffffffffffffffffffffffff'")


Tamper = Callable[[sqlite3.Connection, Pristine], None]

CASES = [
    pytest.param(edit_field, 17, "record 17 was altered", id="edit-field"),
    pytest.param(edit_personal_field, 23, "record 23 was altered", id="edit-personal-field"),
    pytest.param(garble_personal_field, 23, "record 23 was altered", id="garble-personal"),
    pytest.param(borrow_personal_part, 23, "record 23 was altered", id="borrow-personal"),
    pytest.param(drop_personal_part, 23, "personal fields are missing", id="drop-personal"),
    pytest.param(edit_field_and_its_hash, 18, "record 18 was altered", id="edit-field-and-hash"),
    pytest.param(delete_record, 31, "record 31 is missing", id="delete-record"),
    pytest.param(insert_record, 13, "record 13 was altered", id="insert-record"),
    pytest.param(insert_record_rechained, 11, "records were rewritten", id="insert-rechained"),
    pytest.param(reorder_two, 25, "record 25 was altered", id="reorder-two"),
    pytest.param(reorder_two_rechained, 21, "records were rewritten", id="reorder-rechained"),
    pytest.param(truncate_tail, 46, "ledger ends at record 45", id="truncate-tail"),
    pytest.param(
        truncate_tail_and_checkpoints, 41, "not covered by a signed", id="truncate-with-checkpoints"
    ),
    pytest.param(replace_checkpoint, 21, "signature does not verify", id="replace-checkpoint"),
    pytest.param(resign_with_other_key, 31, "unknown key", id="resign-other-key"),
    pytest.param(
        resign_with_spoofed_key_id, 31, "signature does not verify", id="resign-spoofed-key-id"
    ),
    pytest.param(change_ledger_id, 1, "signature does not verify", id="change-ledger-id"),
]


def _copy(pristine: Pristine, tmp_path: Path, source: Path | None = None) -> Path:
    target = tmp_path / "ledger.db"
    shutil.copy(source or pristine.db, target)
    return target


@pytest.mark.parametrize("with_witness", [False, True], ids=["alone", "with-witness"])
@pytest.mark.parametrize(("tamper", "seq", "message"), CASES)
def test_verify_names_first_broken_record(
    pristine: Pristine,
    tmp_path: Path,
    nbguard,
    tamper: Tamper,
    seq: int,
    message: str,
    with_witness: bool,
) -> None:
    """Each insider edit makes ``nbguard verify`` exit 1 naming the first unproven record."""
    db_path = _copy(pristine, tmp_path)
    with sqlite3.connect(db_path) as db:
        tamper(db, pristine)
    witness = ["--witness", pristine.witness] if with_witness else []
    status, out, _ = nbguard(
        "verify", f"sqlite:///{db_path}", "--key", pristine.public_key, *witness
    )
    if with_witness and tamper is truncate_tail_and_checkpoints:
        # The witness still holds checkpoint 50: records 41..45 are fine, 46 on are gone.
        seq, message = 46, "witness checkpoint at record 50"
    assert status == 1, out
    assert out.startswith(f"FAILED at record {seq}:"), out
    assert message in out


def test_untouched_ledger_verifies(pristine: Pristine, tmp_path: Path, nbguard) -> None:
    """The pristine ledger passes, with and without its witness."""
    db_path = _copy(pristine, tmp_path)
    status, out, _ = nbguard("verify", db_path, "--key", pristine.public_key)
    assert (status, out.split(":")[0]) == (0, "OK"), out
    assert f"{RECORDS} records intact" in out
    status, out, _ = nbguard(
        "verify", db_path, "--key", pristine.public_key, "--witness", pristine.witness
    )
    assert status == 0, out


def test_rollback_behind_witness_is_caught(pristine: Pristine, tmp_path: Path, nbguard) -> None:
    """A database restored from an older (itself valid) copy fails against the newer witness."""
    db_path = _copy(pristine, tmp_path, pristine.old_db)
    status, out, _ = nbguard("verify", db_path, "--key", pristine.public_key)
    assert status == 0, "the old copy is a valid ledger on its own"
    status, out, _ = nbguard(
        "verify", db_path, "--key", pristine.public_key, "--witness", pristine.witness
    )
    assert status == 1
    assert out.startswith("FAILED at record 31: witness checkpoint at record 40"), out


def test_unknown_key_fails_verification(pristine: Pristine, tmp_path: Path, nbguard) -> None:
    """Verifying with someone else's public key fails at the first checkpoint."""
    db_path = _copy(pristine, tmp_path)
    attacker_public = pristine.attacker_key.with_suffix(".pub")
    status, out, _ = nbguard("verify", db_path, "--key", attacker_public)
    assert status == 1
    assert out.startswith("FAILED at record 1:")
    assert "unknown key" in out


def test_verify_subprocess_exit_codes(pristine: Pristine, tmp_path: Path) -> None:
    """The installed ``nbguard`` command exits 0 on intact, 1 on tampered, 2 on bad input."""
    db_path = _copy(pristine, tmp_path)
    command = [sys.executable, "-c", "import sys; from nbguard.cli import main; sys.exit(main())"]
    intact = subprocess.run(
        [*command, "verify", str(db_path), "--key", str(pristine.public_key)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert intact.returncode == 0, intact.stdout + intact.stderr
    with sqlite3.connect(db_path) as db:
        delete_record(db, pristine)
    broken = subprocess.run(
        [*command, "verify", str(db_path), "--key", str(pristine.public_key)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert broken.returncode == 1
    assert broken.stdout.startswith("FAILED at record 31: record 31 is missing")
    assert "Traceback" not in broken.stderr
    missing = subprocess.run(
        [*command, "verify", str(db_path), "--key", str(tmp_path / "nope.pub")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2
    assert missing.stderr.startswith("nbguard: error: cannot read public key")


def _counting(answered: list[int]) -> Callable[[dict[str, Any]], Segment]:
    def counted(data: dict[str, Any]) -> Segment:
        answered.append(int(data["first"]))
        return segment_from_json(data)

    return counted


def _slowly(check: Callable[..., Segment]) -> Callable[..., Segment]:
    def slow(*args: Any) -> Segment:
        time.sleep(0.1)
        return check(*args)

    return slow


def _outcome(db_path: Path, public_key: Path, jobs: int) -> tuple[int | None, str]:
    store = LedgerStore(f"sqlite:///{db_path}", create=False)
    try:
        report = verify_store(store, load_public_keys([public_key]), jobs=jobs)
    except LedgerIntegrityError as error:
        return error.seq, str(error)
    finally:
        store.close()
    return None, f"{report.records} {report.head} {report.last_signed_seq}"


@pytest.mark.parametrize(
    ("tamper", "seq", "message"), [*CASES, pytest.param(None, 0, "", id="intact")]
)
def test_parallel_verification_finds_what_one_process_finds(
    pristine: Pristine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tamper: Tamper | None,
    seq: int,
    message: str,
) -> None:
    """Split into ranges over helper processes, verify reports exactly the single-pass verdict."""
    caplog.set_level(logging.WARNING, logger="nbguard.ledger.parallel")
    answered: list[int] = []
    monkeypatch.setattr(parallel, "segment_from_json", _counting(answered))
    # A slow front (this process) leaves the back ranges, failures included, to the helpers.
    monkeypatch.setattr(parallel, "check_range", _slowly(parallel.check_range))
    monkeypatch.setattr(parallel, "RANGE_SIZE", 7)  # 50 records: 8 ranges, boundaries everywhere
    db_path = _copy(pristine, tmp_path)
    if tamper is not None:
        with sqlite3.connect(db_path) as db:
            tamper(db, pristine)
    alone = _outcome(db_path, pristine.public_key, jobs=1)
    assert _outcome(db_path, pristine.public_key, jobs=3) == alone
    assert answered, "helper processes checked some ranges"
    assert caplog.text == ""
    if tamper is not None:
        assert alone[0] == seq
        assert message in alone[1]


def test_ranges_that_do_not_join_are_not_proven() -> None:
    """Ranges that do not join (a record's hash read differently by two processes) fail there."""
    tampered = Segment(8, "f" * 64, 14, "e" * 64, {}, None)
    intact = Segment(1, GENESIS_HASH, 7, "a" * 64, {}, None)
    joined = join_segments([intact, tampered])
    assert joined.failure is not None
    assert joined.failure[0] == 8
    assert "record 7 changed while the ledger was being verified" in joined.failure[1]
    assert joined.last == 7


@pytest.mark.parametrize(
    ("command", "warning"),
    [
        pytest.param("import sys; sys.exit(3)", "helper exited with 3", id="dies"),
        pytest.param(
            "import sys\nfor line in sys.stdin: print('{\"chunk\": 0}', flush=True)",
            "answered nonsense",
            id="talks-nonsense",
        ),
        pytest.param(
            'import sys\nfor line in sys.stdin: print(\'{"chunk": 999, "segment": 1}\')',
            "answered nonsense",
            id="wrong-range",
        ),
    ],
)
def test_failing_helpers_leave_the_verdict_alone(
    pristine: Pristine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    command: str,
    warning: str,
) -> None:
    """Helpers that die or answer nonsense are logged, and this process checks their ranges."""
    monkeypatch.setattr(parallel, "RANGE_SIZE", 7)
    monkeypatch.setattr(parallel, "HELPER_COMMAND", [sys.executable, "-c", command])
    monkeypatch.setattr(parallel, "check_range", _slowly(parallel.check_range))
    db_path = _copy(pristine, tmp_path)
    with sqlite3.connect(db_path) as db:
        edit_field(db, pristine)
    with caplog.at_level(logging.WARNING, logger="nbguard.ledger.parallel"):
        outcome = _outcome(db_path, pristine.public_key, jobs=2)
    assert outcome == _outcome(db_path, pristine.public_key, jobs=1)
    assert outcome[0] == 17
    assert warning in caplog.text
