"""Fixtures for the review tests: a signed ledger holding a realistic session story."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nbguard.ledger import Ledger

from ..ledger.conftest import keypair, make_ledger, nbguard

ALICE, BOB, OTHER = "a" * 32, "b" * 32, "c" * 32
XSS = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'


def cell(
    seq: int, code: str, *, privileged: bool = False, output: str = "", **extra: Any
) -> dict[str, Any]:
    """A kernel-witness cell_execution body of kernel k-1."""
    body: dict[str, Any] = {
        "kernel_id": "k-1",
        "instance": "i-1",
        "seq": seq,
        "msg_id": f"m-{seq}",
        "code": code,
        "code_sha256": hashlib.sha256(code.encode()).hexdigest(),
        "status": "ok",
        "duration_ms": 10 + seq,
        "execution_count": seq + 1,
        "privileged": privileged,
        "witness": "kernel",
        "server": "alice",
    }
    if output:
        body["output_text"] = output
    body.update(extra)
    return body


def access(resource: str, allowed: bool, seq: int) -> dict[str, Any]:
    """An access decision made by cell ``seq`` of kernel k-1."""
    body: dict[str, Any] = {
        "principal": "user:alice",
        "action": "dataset.read",
        "resource": resource,
        "allowed": allowed,
        "policy_ids": ["read-public"] if allowed else [],
        "correlation_id": f"c-{resource}-{seq}",
        "cell": {"kernel_id": "k-1", "instance": "i-1", "seq": seq, "msg_id": f"m-{seq}"},
    }
    if not allowed:
        body["reason"] = "dataset:restricted needs role pii-reader or an approved grant"
    return body


#: (kind, body, actor, session): alice's session with a denial, a grant approved by
#: bob (in bob's session), privileged cells, an XSS payload, and a witness alert
#: written without a session; then another user's session.
STORY: list[tuple[str, dict[str, Any], str, str | None]] = [
    ("login", {"outcome": "success", "method": "pam", "username": "alice"}, "alice", ALICE),
    ("mfa", {"event": "verify", "outcome": "success", "method": "totp"}, "alice", ALICE),
    (
        "spawn",
        {
            "allowed": True,
            "server_name": "",
            "profile": "default",
            "policy_ids": ["spawn"],
            "correlation_id": "sp-1",
        },
        "alice",
        ALICE,
    ),
    ("cell_execution", cell(0, "import pandas as pd", output="ok\n"), "alice", ALICE),
    ("access", access("dataset:public", True, 1), "alice", ALICE),
    (
        "cell_execution",
        cell(1, "pd.read_parquet('nbguard://public/a.parquet')", output=XSS),
        "alice",
        ALICE,
    ),
    ("access", access("dataset:restricted", False, 2), "alice", ALICE),
    (
        "cell_execution",
        cell(
            2,
            "pd.read_parquet('nbguard://restricted/a.parquet')",
            status="error",
            error_name="AccessDenied",
        ),
        "alice",
        ALICE,
    ),
    ("login", {"outcome": "success", "method": "pam", "username": "bob"}, "bob", BOB),
    (
        "elevation",
        {
            "event": "request",
            "request_id": "r-1",
            "requester": "alice",
            "grant": "dataset.read on dataset:restricted",
            "duration_s": 900,
            "reason": "ticket 7",
        },
        "alice",
        ALICE,
    ),
    (
        "elevation",
        {
            "event": "approve",
            "request_id": "r-1",
            "requester": "alice",
            "approver": "bob",
            "grant": "dataset.read on dataset:restricted",
            "grant_id": "g-1",
            "duration_s": 900,
            "expires_at": "2099-01-01T00:15:00Z",
        },
        "bob",
        BOB,
    ),
    ("access", access("dataset:restricted", True, 3), "alice", ALICE),
    (
        "cell_execution",
        cell(
            3,
            "pd.read_parquet('nbguard://restricted/a.parquet')",
            privileged=True,
            output="42 rows\n",
        ),
        "alice",
        ALICE,
    ),
    (
        "alert",
        {
            "alert": "witness-mismatch",
            "severity": "warning",
            "message": "execution seen by one witness only",
            "subject": "alice",
            "details": {"kernel_id": "k-1", "instance": "i-1", "first_seq": 4, "last_seq": 4},
        },
        "nbguard-guard",
        None,
    ),
    (
        "alert",
        {
            "alert": "witness-mismatch",
            "severity": "warning",
            "message": "forged by mallory",
            "subject": "mallory",
            "details": {"kernel_id": "k-1"},
        },
        "nbguard-guard",
        None,
    ),
    ("login", {"outcome": "success", "method": "pam", "username": "dave"}, "dave", OTHER),
]


def write_story(ledger: Ledger) -> None:
    """Append STORY to ``ledger``."""
    for kind, body, actor, session in STORY:
        ledger.append(kind, body, actor=actor, session=session)


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    """The SQLite URL of the test ledger."""
    return f"sqlite:///{tmp_path / 'ledger.db'}"  # where the ledger tests' make_ledger writes


__all__ = ["keypair", "make_ledger", "nbguard"]  # their fixtures, shared here


@pytest.fixture
def story(make_ledger: Callable[..., Ledger]) -> Ledger:
    """A closed (fully checkpointed) ledger holding STORY."""
    ledger = make_ledger()
    write_story(ledger)
    ledger.close()
    return ledger
