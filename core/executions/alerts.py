"""Witness alerts: an execution only one witness reported, or a gap in a witness's stream.

Each alert is a value the store keeps (for the admin page and API) and the
guard writes to the ledger as an ``alert`` record, once, whichever replica
found it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from nbguard.elevation.models import rfc3339

#: Alert kinds (the ``alert`` field of the ledger record).
WITNESS_MISMATCH, SEQ_GAP = "witness-mismatch", "kernel-seq-gap"
#: Why: which witness alone reported an execution, or that they disagree on its code.
ONLY_KERNEL, ONLY_SERVER, CODE_DIFFERS, GAP = (
    "only-kernel",
    "only-server",
    "code-differs",
    "seq-gap",
)

_SEVERITY = {
    ONLY_KERNEL: "warning",
    ONLY_SERVER: "warning",
    CODE_DIFFERS: "critical",
    GAP: "warning",
}


@dataclass(frozen=True, slots=True)
class WitnessAlert:
    """One alert about a user's kernel. ``witness`` and ``instance`` name the stream
    the alert is about (the only witness that reported, or the one with the gap);
    ``first_seq``..``last_seq`` are the positions concerned in that stream."""

    kind: str
    reason: str
    user: str
    server: str
    witness: str
    kernel_id: str
    instance: str
    msg_id: str
    first_seq: int
    last_seq: int
    created: float = 0.0
    #: The store's id; 0 until stored.
    id: int = 0

    @property
    def severity(self) -> str:
        """``critical`` when the witnesses disagree on the code, else ``warning``."""
        return _SEVERITY.get(self.reason, "warning")

    @property
    def message(self) -> str:
        """What happened, in words for an admin or a reviewer."""
        kernel = f"kernel {self.kernel_id}"
        if self.reason == ONLY_SERVER:
            return (
                f"The server saw an execution (message {self.msg_id}) on {kernel} that the "
                "kernel never reported: capture in the kernel may be disabled."
            )
        if self.reason == ONLY_KERNEL:
            return (
                f"{kernel} reported an execution (message {self.msg_id}) that the server never "
                "saw: code may have reached the kernel without passing through the server."
            )
        if self.reason == CODE_DIFFERS:
            return (
                f"{kernel} reported other code for message {self.msg_id} than the server saw "
                "being sent."
            )
        missing = (
            f"execution {self.first_seq}"
            if self.first_seq == self.last_seq
            else f"executions {self.first_seq} to {self.last_seq}"
        )
        return (
            f"The {self.witness} witness's {missing} on {kernel} never arrived: records "
            "were lost or withheld."
        )

    def stored(self, alert_id: int, created: float) -> WitnessAlert:
        """This alert with the store's id and time."""
        return replace(self, id=alert_id, created=created)

    def ledger_body(self) -> dict[str, Any]:
        """The ``alert`` ledger body (subject: the user)."""
        details: dict[str, Any] = {
            "reason": self.reason,
            "server": self.server,
            "witness": self.witness,
            "kernel_id": self.kernel_id,
            "instance": self.instance,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
        }
        if self.msg_id:
            details["msg_id"] = self.msg_id
        return {
            "alert": self.kind,
            "severity": self.severity,
            "message": self.message[:2048],
            "subject": self.user,
            "correlation_id": f"witness-alert-{self.id}",
            "details": details,
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON form the admin API returns."""
        return {
            "id": self.id,
            "alert": self.kind,
            "reason": self.reason,
            "severity": self.severity,
            "message": self.message,
            "user": self.user,
            "server": self.server,
            "witness": self.witness,
            "kernel_id": self.kernel_id,
            "instance": self.instance,
            "msg_id": self.msg_id or None,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "created": rfc3339(self.created),
        }


#: What an alert says about its stream, taken as is from a record's or stream's row.
STREAM_FIELDS = ("user", "server", "witness", "kernel_id", "instance", "msg_id")


def alert_from_row(row: Mapping[Any, Any]) -> WitnessAlert:
    """An alert from a row holding its fields (columns named after them; others ignored)."""
    return WitnessAlert(**{f.name: row[f.name] for f in fields(WitnessAlert) if f.name in row})
