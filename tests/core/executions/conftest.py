"""Fixtures for the execution tests: valid records of each witness, a clock, stores."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest

from nbguard.executions.models import ExecutionBatch, parse_batch
from nbguard.executions.store import ExecutionStore

# The elevation tests' hand-moved clock and SQLite file, as fixtures here too.
from ..elevation.conftest import Clock, clock, sqlite_url

__all__ = ["Clock", "batch", "clock", "kernel_record", "server_record", "sqlite_url"]

CODE = "import pandas as pd\ndf = pd.read_csv('nbguard://sales/2025.csv')"


def kernel_record(seq: int = 0, **overrides: Any) -> dict[str, Any]:
    """A valid kernel-witness record at ``seq`` (message ``m<seq>``), with ``overrides``."""
    code = overrides.pop("code", CODE)
    record: dict[str, Any] = {
        "kernel_id": "k-1",
        "instance": "ki-1",
        "seq": seq,
        "msg_id": f"m{seq}",
        "cell_id": f"c{seq}",
        "code": code,
        "code_sha256": hashlib.sha256(code.encode()).hexdigest(),
        "execution_count": seq + 1,
        "silent": False,
        "started": "2025-06-15T14:00:00.250Z",
        "duration_ms": 12,
        "status": "ok",
        "resources": ["dataset:sales"],
        "privileged": False,
    }
    record.update(overrides)
    return record


def server_record(seq: int = 0, **overrides: Any) -> dict[str, Any]:
    """A valid server-witness record of the same execution as ``kernel_record(seq)``."""
    record: dict[str, Any] = {
        "kernel_id": "k-1",
        "instance": "si-1",
        "seq": seq,
        "msg_id": f"m{seq}",
        "cell_id": f"c{seq}",
        "session": "s-1",
        "code_sha256": hashlib.sha256(CODE.encode()).hexdigest(),
        "silent": False,
        "received": "2025-06-15T14:00:00.200Z",
    }
    record.update(overrides)
    return record


def batch(witness: str, *records: dict[str, Any]) -> ExecutionBatch:
    """A checked batch of ``records``."""
    return parse_batch({"witness": witness, "records": list(records)})


@pytest.fixture
def store(sqlite_url: str, clock: Clock) -> Iterator[ExecutionStore]:
    """An execution store on a SQLite file and the test clock."""
    executions = ExecutionStore(sqlite_url, clock=clock)
    yield executions
    executions.close()
