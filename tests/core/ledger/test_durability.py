"""Crash safety and multi-process ordering: acknowledged records survive, no forks appear."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from nbguard.ledger import Ledger
from nbguard.ledger.store import LedgerStore

WRITER = Path(__file__).with_name("writer_process.py")
Run = Callable[..., tuple[int, str, str]]


def _writer(url: str, key: Path, tag: str, threads: int, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WRITER), url, str(key), tag, str(threads), str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _acknowledged(output: str) -> dict[int, str]:
    acks: dict[int, str] = {}
    for line in output.splitlines():
        seq, mark = line.split()
        assert int(seq) not in acks, f"sequence number {seq} acknowledged twice"
        acks[int(seq)] = mark
    return acks


def _stored_marks(url: str) -> dict[int, str]:
    store = LedgerStore(url, create=False)
    try:
        with store.snapshot() as snapshot:
            return {
                seq: json.loads(core)["body"]["correlation_id"]
                for seq, core, _, _ in snapshot.rows()
            }
    finally:
        store.close()


@pytest.mark.slow
def test_sigkill_loses_no_acknowledged_record(
    tmp_path: Path, keypair: tuple[Path, Path], nbguard: Run, make_ledger: Callable[..., Ledger]
) -> None:
    """A writer killed mid-stream leaves a verifiable ledger holding every acknowledged record."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    writer = _writer(url, keypair[0], "w", threads=4, count=0)
    assert writer.stdout is not None
    lines = []
    for line in writer.stdout:
        lines.append(line)
        if len(lines) >= 400:
            break
    os.kill(writer.pid, signal.SIGKILL)
    rest, _ = writer.communicate(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    acks = _acknowledged("".join(lines) + rest)
    stored = _stored_marks(url)
    assert all(stored.get(seq) == mark for seq, mark in acks.items())
    status, out, _ = nbguard("verify", url, "--key", keypair[1], "--allow-unsigned-tail", 100_000)
    assert status == 0, out
    # The next writer continues the chain and a clean close signs the tail.
    ledger = make_ledger()
    ledger.append("review", {"action": "view"}, actor="auditor")
    ledger.close()
    status, out, _ = nbguard("verify", url, "--key", keypair[1])
    assert status == 0, out


def _no_fork_run(url: str, key: Path, processes: int, threads: int, count: int) -> None:
    writers = [_writer(url, key, f"p{n}", threads, count) for n in range(processes)]
    acks: dict[int, str] = {}
    for writer in writers:
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
        for seq, mark in _acknowledged(out).items():
            assert seq not in acks, f"two processes were given sequence number {seq}"
            acks[seq] = mark
    total = processes * threads * count
    assert sorted(acks) == list(range(1, total + 1))
    assert _stored_marks(url) == acks


@pytest.mark.slow
def test_processes_share_one_order_on_sqlite(
    tmp_path: Path, keypair: tuple[Path, Path], nbguard: Run
) -> None:
    """Several writer processes on one SQLite file produce one gapless, verifiable chain."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    _no_fork_run(url, keypair[0], processes=3, threads=2, count=40)
    status, out, _ = nbguard("verify", url, "--key", keypair[1])
    assert status == 0, out


@pytest.mark.postgres
@pytest.mark.slow
def test_processes_share_one_order_on_postgres(
    postgres_url: str, keypair: tuple[Path, Path], nbguard: Run
) -> None:
    """Several writer processes on one PostgreSQL database never fork the chain."""
    _no_fork_run(postgres_url, keypair[0], processes=4, threads=3, count=50)
    status, out, _ = nbguard("verify", postgres_url, "--key", keypair[1])
    assert status == 0, out
    assert out.startswith("OK: 600 records intact")
