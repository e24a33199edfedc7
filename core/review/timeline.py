"""One session's timeline: its records as events a reviewer reads, in ledger order.

Every event keeps the ``seq`` of the record it shows (and its integrity status,
added by :mod:`nbguard.review.integrity`). Cells come from the kernel witness
(code, outputs, duration, status); the server witness's record of the same
execution (same kernel and ``msg_id``) is folded into it as ``server_seen``, and a
server-only record is shown as a cell whose code the kernel never reported.
A grant's expiry is an event at the time its approval set (``derived`` from that
record): the ledger holds the approval that fixed it, not a separate record.

Every string here came from the records and may hold whatever a user typed or
printed: callers escape it (pages) or keep it as plain text (exports).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nbguard.review.entries import Entry
from nbguard.review.index import GRANTING

#: Event types a player can jump between.
CELL, ACCESS, ELEVATION, ALERT = "cell", "access", "elevation", "alert"


@dataclass
class Event:
    """One line of the timeline."""

    seq: int
    time: str
    type: str
    actor: str | None
    title: str
    data: dict[str, Any]
    privileged: bool = False
    alert: bool = False
    derived: bool = False
    #: ``intact``, ``unsigned`` (chained, after the last checkpoint) or ``broken``.
    integrity: str = "unknown"
    links: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (API, exports, the notebook player)."""
        return {
            "seq": self.seq,
            "time": self.time,
            "type": self.type,
            "actor": self.actor,
            "title": self.title,
            "privileged": self.privileged,
            "alert": self.alert,
            "derived": self.derived,
            "integrity": self.integrity,
            "links": self.links,
            "data": self.data,
        }


def build_timeline(entries: list[Entry]) -> list[Event]:
    """The events of a session's records (export lines), ordered by time then ``seq``."""
    events: list[Event] = []
    kernel_cells: dict[tuple[str, str], Event] = {}
    server_only: list[tuple[tuple[str, str], Entry]] = []
    cell_seq: dict[tuple[str, str, int], int] = {}
    for entry in sorted(entries, key=lambda e: int(e["seq"])):
        record = entry["record"]
        body = record.get("body") or {}
        kind = record.get("kind")
        if kind == "cell_execution" and body.get("witness") == "server":
            server_only.append(((str(body.get("kernel_id")), str(body.get("msg_id"))), entry))
            continue
        event = _event(entry, kind, body)
        events.append(event)
        if kind == "cell_execution":
            stream = (str(body.get("kernel_id")), str(body.get("instance", "")))
            cell_seq[(*stream, int(body.get("seq", -1)))] = event.seq
            if body.get("msg_id"):
                kernel_cells[(str(body.get("kernel_id")), str(body["msg_id"]))] = event
        if kind == "elevation" and body.get("event") in GRANTING and body.get("expires_at"):
            events.append(_expiry(event, body))
    for key, entry in server_only:
        paired = kernel_cells.get(key)
        if paired is not None:
            paired.data["server_seen"] = True
            paired.links.append(int(entry["seq"]))
            continue
        record = entry["record"]
        event = _event(entry, "cell_execution", record.get("body") or {})
        event.data["server_only"] = True
        events.append(event)
    for event in events:
        cell = event.data.get("cell") if event.type == ACCESS else None
        if isinstance(cell, dict):
            position = cell.get("seq")
            ref = (str(cell.get("kernel_id")), str(cell.get("instance", "")), position)
            found = cell_seq.get(ref) if isinstance(position, int) else None  # type: ignore[arg-type]
            if found is not None:
                event.links.append(found)
    events.sort(key=lambda e: (_instant(e.time), e.seq, e.derived))
    return events


def _event(entry: Entry, kind: Any, body: dict[str, Any]) -> Event:
    record = entry["record"]
    seq, time, actor = int(entry["seq"]), str(record.get("time")), record.get("actor")
    if kind == "cell_execution":
        data: dict[str, Any] = {
            key: body[key]
            for key in (
                "code",
                "code_truncated",
                "code_sha256",
                "status",
                "duration_ms",
                "execution_count",
                "output_text",
                "output_digest",
                "error_name",
                "resources",
                "kernel_id",
                "instance",
                "seq",
                "msg_id",
                "cell_id",
                "server",
                "witness",
                "claimed_privileged",
                "started",
                "received",
            )
            if key in body
        }
        # A redacted export keeps commitments in place of personal fields.
        hidden = sorted(
            path.removeprefix("body.")
            for path in entry.get("redacted") or {}
            if path in ("body.code", "body.output_text")
        )
        if hidden:
            data["redacted"] = hidden
        count = body.get("execution_count")
        title = f"cell [{count if count is not None else ' '}] {body.get('status', 'unknown')}"
        privileged = body.get("privileged") is True
        return Event(seq, time, CELL, actor, title, data, privileged=privileged)
    if kind == "access":
        verdict = "allowed" if body.get("allowed") else "denied"
        title = f"{body.get('action')} on {body.get('resource')}: {verdict}"
        return Event(seq, time, ACCESS, actor, title, dict(body))
    if kind == "elevation":
        title = f"elevation {body.get('event')}: {body.get('grant')}"
        privileged = body.get("event") in GRANTING
        return Event(seq, time, ELEVATION, actor, title, dict(body), privileged=privileged)
    if kind == "alert":
        title = f"alert ({body.get('severity')}): {body.get('alert')}"
        return Event(seq, time, ALERT, actor, title, dict(body), alert=True)
    if kind == "mfa":
        title = f"second factor {body.get('event')}: {body.get('outcome')}"
        return Event(seq, time, "mfa", actor, title, dict(body))
    if kind == "login":
        title = f"login ({body.get('method')}): {body.get('outcome')}"
        return Event(seq, time, "login", actor, title, dict(body))
    if kind == "spawn":
        verdict = "allowed" if body.get("allowed") else "refused"
        title = f"spawn {body.get('server_name') or 'default'} ({body.get('profile')}): {verdict}"
        return Event(seq, time, "spawn", actor, title, dict(body))
    if kind == "server_stop":
        title = f"server {body.get('server_name') or 'default'} stopped: {body.get('reason')}"
        return Event(seq, time, "server_stop", actor, title, dict(body))
    return Event(seq, time, str(kind), actor, f"{kind} record", dict(body))


def _expiry(granted: Event, body: dict[str, Any]) -> Event:
    """The grant's expiry, at the time its approval fixed."""
    data = {"grant": body.get("grant"), "request_id": body.get("request_id"), "from": granted.seq}
    return Event(
        granted.seq,
        str(body["expires_at"]),
        ELEVATION,
        None,
        f"grant expires: {body.get('grant')}",
        data,
        derived=True,
    )


def _instant(text: str) -> datetime:
    """A record time for ordering (an unreadable one sorts first: it shows, not hides)."""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def next_index(events: list[Event], current: int, what: str) -> int | None:
    """The index of the next event after ``current`` that is a ``cell``, a
    ``privileged`` cell or an ``alert`` (None when there is none)."""
    for index in range(current + 1, len(events)):
        event = events[index]
        if what == CELL and event.type == CELL:
            return index
        if what == "privileged" and event.type == CELL and event.privileged:
            return index
        if what == ALERT and event.alert:
            return index
    return None
