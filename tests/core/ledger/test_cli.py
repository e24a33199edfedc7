"""``nbguard ledger keygen`` and the verify command's edges: keys, progress, bad input."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

from nbguard.ledger import Ledger
from nbguard.ledger.keys import load_public_keys, load_signing_key

from .conftest import access_body

Run = Callable[..., tuple[int, str, str]]


def test_keygen_writes_private_files(nbguard: Run, tmp_path: Path) -> None:
    """keygen writes a usable Ed25519 pair, both mode 0600, and prints the key id."""
    private = tmp_path / "ledger.pem"
    status, out, _ = nbguard("ledger", "keygen", private)
    assert status == 0
    public = tmp_path / "ledger.pem.pub"
    for path in (private, public):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key_id = load_signing_key(private).key_id
    assert key_id in out
    assert list(load_public_keys([public])) == [key_id]


def test_keygen_creates_missing_directories_private(nbguard: Run, tmp_path: Path) -> None:
    """keygen creates each missing parent directory with mode 0700 and leaves existing ones."""
    tmp_path.chmod(0o755)
    private = tmp_path / "etc" / "nbguard" / "ledger.pem"
    status, out, _ = nbguard("ledger", "keygen", private)
    assert status == 0, out
    for folder in (tmp_path / "etc", tmp_path / "etc" / "nbguard"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert load_signing_key(private).key_id in out


def test_keygen_never_overwrites(nbguard: Run, tmp_path: Path) -> None:
    """keygen refuses to replace an existing key (exit 2, file untouched)."""
    private = tmp_path / "ledger.pem"
    private.write_text("precious")
    status, _, err = nbguard("ledger", "keygen", private, "--public", tmp_path / "new.pub")
    assert status == 2
    assert "already exists" in err
    assert private.read_text() == "precious"


def test_progress_bar_on_request(
    nbguard: Run, make_ledger: Callable[..., Ledger], tmp_path: Path, keypair: tuple[Path, Path]
) -> None:
    """--progress draws a bar on stderr; without a terminal there is none by default."""
    ledger = make_ledger()
    for index in range(30):
        ledger.append_nowait("access", access_body(index), actor="alice")
    ledger.close()
    db = tmp_path / "ledger.db"
    status, out, err = nbguard("verify", db, "--key", keypair[1], "--progress")
    assert status == 0, out
    assert "verifying [" in err
    assert "30/30 records" in err
    status, _, err = nbguard("verify", db, "--key", keypair[1])
    assert status == 0
    assert err == ""


def test_unsigned_tail_is_reported_and_can_be_allowed(
    nbguard: Run, make_ledger: Callable[..., Ledger], tmp_path: Path, keypair: tuple[Path, Path]
) -> None:
    """A live ledger's unsigned tail fails by default and passes with --allow-unsigned-tail."""
    ledger = make_ledger()
    for index in range(3):
        ledger.append("access", access_body(index), actor="alice")
    db = tmp_path / "ledger.db"
    status, out, _ = nbguard("verify", db, "--key", keypair[1])
    assert status == 1
    assert out.startswith("FAILED at record 1: records 1..3 are not covered")
    status, out, _ = nbguard("verify", db, "--key", keypair[1], "--allow-unsigned-tail", "5")
    assert status == 0
    assert "note: records 1..3 are chained but not covered" in out


def test_bad_verify_input_exits_2(nbguard: Run, tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    """A missing source, a non-ledger file or a bad key is one error line and exit 2."""
    not_export = tmp_path / "notes.txt"
    not_export.write_text("hello\n")
    cases = [
        ("verify", tmp_path / "missing.jsonl", "--key", keypair[1]),
        ("verify", not_export, "--key", keypair[1]),
        ("verify", f"sqlite:///{tmp_path / 'empty.db'}", "--key", keypair[1]),
        ("verify", not_export, "--key", not_export),
    ]
    for args in cases:
        status, _, err = nbguard(*args)
        assert status == 2, args
        assert err.startswith("nbguard: error: ")
        assert len(err.strip().splitlines()) == 1
