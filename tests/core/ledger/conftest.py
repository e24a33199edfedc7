"""Fixtures for the ledger tests: keys, ledgers on SQLite files, sample records, the CLI."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nbguard.cli import main
from nbguard.ledger import Ledger
from nbguard.ledger.keys import generate_key_pair

#: One valid body per record kind.
SAMPLES: dict[str, dict[str, Any]] = {
    "login": {
        "outcome": "failure",
        "method": "ldap",
        "username": "alice",
        "reason": "bad password",
    },
    "mfa": {"event": "verify", "outcome": "success", "method": "totp", "device": "phone"},
    "spawn": {
        "allowed": True,
        "server_name": "",
        "profile": "gpu",
        "policy_ids": ["spawn-gpu"],
        "correlation_id": "c-1",
    },
    "server_stop": {
        "server_name": "",
        "profile": "prod",
        "reason": "lifetime",
        "correlation_id": "c-1",
        "deadline": "2025-01-01T17:00:00Z",
        "ran_s": 3600,
    },
    "access": {
        "principal": 'User::"alice"',
        "action": 'Action::"read"',
        "resource": 'Dataset::"customers"',
        "allowed": False,
        "policy_ids": [],
        "correlation_id": "c-2",
        "cell": {"kernel_id": "k-1", "cell_id": "cell-9", "seq": 4},
    },
    "elevation": {
        "event": "approve",
        "request_id": "r-1",
        "requester": "alice",
        "approver": "carol",
        "grant": "role:pii-reader",
        "duration_s": 3600,
        "reason": "incident 42",
    },
    "cell_execution": {
        "kernel_id": "k-1",
        "seq": 4,
        "msg_id": "m-1",
        "cell_id": "cell-9",
        "code": "df = pd.read_parquet('nbguard://customers/2025.parquet')",
        "status": "ok",
        "duration_ms": 120,
        "output_digest": "ab" * 32,
        "privileged": True,
        "witness": "kernel",
    },
    "alert": {
        "alert": "witness-mismatch",
        "severity": "critical",
        "message": "execution seen by the server witness only",
        "subject": "alice",
        "details": {"kernel_id": "k-1", "seq": 5},
    },
    "lock": {
        "event": "lock",
        "lock_id": "lock-1",
        "kind": "user",
        "value": "mallory",
        "reason": "stolen laptop",
        "by": "admin",
        "until": "2025-01-01T17:00:00Z",
    },
    "review": {
        "action": "export",
        "target_session": "s-1",
        "target_user": "alice",
        "format": "ipynb",
    },
}


def access_body(index: int) -> dict[str, Any]:
    """A distinct access decision; even indexes are allowed, odd ones denied."""
    return {
        "principal": 'User::"alice"',
        "action": 'Action::"read"',
        "resource": f'Dataset::"ds{index}"',
        "allowed": index % 2 == 0,
        "policy_ids": ["p-read"] if index % 2 == 0 else [],
        "correlation_id": f"c{index}",
    }


@pytest.fixture
def keypair(tmp_path: Path) -> tuple[Path, Path]:
    """A fresh Ed25519 key pair: (private PEM, public PEM)."""
    private, public = tmp_path / "ledger-key.pem", tmp_path / "ledger-key.pub"
    generate_key_pair(private, public)
    return private, public


@pytest.fixture
def make_ledger(tmp_path: Path, keypair: tuple[Path, Path]) -> Iterator[Callable[..., Ledger]]:
    """Open ledgers on tmp_path/ledger.db (signed with ``keypair``); all closed at teardown."""
    opened: list[Ledger] = []

    def make(**traits: Any) -> Ledger:
        traits.setdefault("url", f"sqlite:///{tmp_path / 'ledger.db'}")
        traits.setdefault("signing_key_file", str(keypair[0]))
        traits.setdefault("synchronous", "normal")
        ledger = Ledger(**traits)
        opened.append(ledger)
        return ledger

    yield make
    for ledger in opened:
        ledger.close()


@pytest.fixture
def nbguard(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run ``nbguard ARGS`` in-process; return (exit status, stdout, stderr)."""

    def run(*args: str | Path) -> tuple[int, str, str]:
        capsys.readouterr()
        status = main([str(arg) for arg in args])
        out, err = capsys.readouterr()
        return status, out, err

    return run
