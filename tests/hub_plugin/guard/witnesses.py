"""What a kernel and a server send the guard service: execution records and batches.

Shared by the executions, cross-check and entitlement tests. Every record of
one stream gets fresh random ids, so tests on one shared service never meet.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import requests

from nbguard.elevation.models import rfc3339

from ..conftest import ledger_bodies as shared_ledger_bodies
from .conftest import Client, Guard


def now_text(offset: float = 0.0) -> str:
    """The time ``offset`` seconds from now, RFC 3339 UTC ending in Z."""
    text = rfc3339(time.time() + offset)
    assert text is not None
    return text


@dataclass
class Kernel:
    """One kernel as both witnesses see it: its id, and each witness's stream instance."""

    kernel_id: str = field(default_factory=lambda: f"k-{secrets.token_hex(8)}")
    kernel_instance: str = field(default_factory=lambda: f"ki-{secrets.token_hex(6)}")
    server_instance: str = field(default_factory=lambda: f"si-{secrets.token_hex(6)}")

    def code(self, seq: int) -> str:
        """The source of the cell at ``seq``."""
        return f"x = {seq}  # {self.kernel_id}"

    def msg_id(self, seq: int) -> str:
        """The execute_request's message id of the cell at ``seq``."""
        return f"m-{self.kernel_id}-{seq}"

    def kernel_record(self, seq: int, **overrides: Any) -> dict[str, Any]:
        """The kernel witness's record of the cell at ``seq``."""
        code = self.code(seq)
        record: dict[str, Any] = {
            "kernel_id": self.kernel_id,
            "instance": self.kernel_instance,
            "seq": seq,
            "msg_id": self.msg_id(seq),
            "cell_id": f"cell-{seq}",
            "code": code,
            "code_sha256": hashlib.sha256(code.encode()).hexdigest(),
            "execution_count": seq + 1,
            "silent": False,
            "started": now_text(),
            "duration_ms": 3,
            "status": "ok",
            "resources": [],
            "privileged": False,
        }
        record.update(overrides)
        return record

    def server_record(self, seq: int, **overrides: Any) -> dict[str, Any]:
        """The server witness's record of the cell at ``seq``."""
        record: dict[str, Any] = {
            "kernel_id": self.kernel_id,
            "instance": self.server_instance,
            "seq": seq,
            "msg_id": self.msg_id(seq),
            "cell_id": f"cell-{seq}",
            "session": "sess-1",
            "code_sha256": hashlib.sha256(self.code(seq).encode()).hexdigest(),
            "silent": False,
            "received": now_text(),
        }
        record.update(overrides)
        return record


async def send(client: Client, witness: str, *records: dict[str, Any]) -> requests.Response:
    """POST one batch of ``witness`` records with ``client``'s token."""
    return await client.call(
        "POST", "api/v1/executions", json={"witness": witness, "records": list(records)}
    )


def ledger_bodies(guard: Guard, kind: str, actor: str | None = None) -> list[dict[str, Any]]:
    """The guard's ledger bodies of ``kind`` (of ``actor``, if given), oldest first."""
    return shared_ledger_bodies(guard.service.ledger, kind, actor)


def executions_of(guard: Guard, kernel: Kernel) -> list[dict[str, Any]]:
    """The ``cell_execution`` ledger bodies of one kernel, oldest first."""
    return [
        body
        for body in ledger_bodies(guard, "cell_execution")
        if body["kernel_id"] == kernel.kernel_id
    ]
