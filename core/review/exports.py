"""Exports of one session: a notebook (``.ipynb``, nbformat 4.5) and JSON Lines.

Recorded code and outputs are untrusted: in the notebook, code is a code cell's
source, outputs are ``stream`` outputs (plain text, never HTML or JavaScript),
and the other events are *raw* cells, which no frontend renders. Only text this
module writes itself goes in the one markdown cell. Provenance (ledger, sequence
range, head hash, checkpoint, verdict) is in the notebook's ``nbguard`` metadata.

The JSONL export is a header line and then the session's records exactly as
``nbguard ledger export`` writes them, so each line can be re-hashed on its own.
"""

from __future__ import annotations

import json
from typing import IO, Any

from nbguard.ledger.canonical import canonical_text, format_time
from nbguard.review.replay import SessionReview
from nbguard.review.timeline import CELL, Event

SESSION_EXPORT_TYPE = "nbguard.session.export"
SESSION_EXPORT_VERSION = 1
#: The formats a session can be exported in.
FORMATS = ("ipynb", "jsonl")


def write_jsonl(review: SessionReview, out: IO[str]) -> int:
    """Write the session as JSON Lines; return the number of records written."""
    header = {
        "type": SESSION_EXPORT_TYPE,
        "v": SESSION_EXPORT_VERSION,
        "exported_at": format_time(),
        **review.provenance(),
    }
    out.write(json.dumps(header, sort_keys=True, ensure_ascii=False) + "\n")
    for entry in review.entries:
        out.write(canonical_text(entry) + "\n")
    return len(review.entries)


def notebook(review: SessionReview) -> dict[str, Any]:
    """The session as an nbformat 4.5 notebook (a plain dict, ready for ``json.dump``)."""
    provenance = {**review.provenance(), "exported_at": format_time()}
    cells: list[dict[str, Any]] = [
        {
            "cell_type": "markdown",
            "id": "nbguard-header",
            "metadata": {},
            "source": "# Recorded session (nbguard replay)\n\n"
            "Code cells hold the code as recorded; outputs are recorded text. Access "
            "decisions, elevations and alerts are raw cells. Where the records come "
            "from and whether the ledger verified is in the notebook metadata "
            "(`nbguard`).",
        },
        _raw("nbguard-summary", _summary_text(review), {"nbguard": provenance}),
    ]
    for number, event in enumerate(review.events):
        if event.type == CELL:
            cells.append(_code_cell(number, event))
        else:
            cells.append(_raw(f"event-{number}", _event_text(event), {"nbguard": _meta(event)}))
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
            "nbguard": provenance,
        },
        "cells": cells,
    }


def write_notebook(review: SessionReview, out: IO[str]) -> int:
    """Write the notebook JSON; return the number of cells."""
    document = notebook(review)
    json.dump(document, out, indent=1, ensure_ascii=False)
    out.write("\n")
    return len(document["cells"])


def _summary_text(review: SessionReview) -> str:
    first, last = review.seq_range
    status = review.status
    verdict = (
        f"ledger verified: {status.records} records, head {status.head}"
        if status.verified
        else f"ledger NOT verified: {status.message}"
    )
    lines = [
        f"session: {review.session}",
        f"user: {review.summary.get('user')}",
        f"records: {len(review.entries)} (ledger sequence {first}..{last})",
        verdict,
    ]
    if status.checkpoint:
        checkpoint = status.checkpoint
        lines.append(f"latest checkpoint: record {checkpoint['seq']}, key {checkpoint['key_id']}")
    if review.broken:
        lines.append(f"records not proven intact: {', '.join(map(str, review.broken))}")
    return "\n".join(lines)


def _meta(event: Event) -> dict[str, Any]:
    data = {k: v for k, v in event.to_dict().items() if k != "data"}
    if event.type == CELL:
        data.update(
            {
                k: event.data[k]
                for k in ("status", "duration_ms", "output_digest", "resources", "code_sha256")
                if k in event.data
            }
        )
    return data


def _code_cell(number: int, event: Event) -> dict[str, Any]:
    data = event.data
    code = data.get("code")
    if not isinstance(code, str):
        code = (
            f"# Code redacted in this export; SHA-256 {data.get('code_sha256')}"
            if "code" in data.get("redacted", ())
            else "# The kernel did not report this execution; the server saw code with SHA-256\n"
            f"# {data.get('code_sha256')}"
        )
    outputs = []
    text = data.get("output_text")
    if isinstance(text, str) and text:
        outputs.append({"output_type": "stream", "name": "stdout", "text": text})
    elif data.get("output_digest"):
        outputs.append(
            {
                "output_type": "stream",
                "name": "stdout",
                "text": f"[output not recorded; SHA-256 {data['output_digest']}]\n",
            }
        )
    count = data.get("execution_count")
    return {
        "cell_type": "code",
        "id": f"cell-{number}",
        "execution_count": count if isinstance(count, int) and count >= 0 else None,
        "metadata": {"nbguard": _meta(event)},
        "source": code,
        "outputs": outputs,
    }


def _raw(cell_id: str, text: str, metadata: dict[str, Any]) -> dict[str, Any]:
    return {"cell_type": "raw", "id": cell_id, "metadata": metadata, "source": text}


def _event_text(event: Event) -> str:
    """A plain-text description of a non-cell event."""
    lines = [f"[record {event.seq}] {event.time} {event.title}"]
    if event.actor:
        lines.append(f"by: {event.actor}")
    data = event.data
    for key in ("reason", "policy_ids", "message", "approver", "expires_at", "duration_s"):
        if data.get(key) not in (None, "", []):
            value = data[key]
            lines.append(f"{key}: {', '.join(value) if isinstance(value, list) else value}")
    if event.derived:
        lines.append(f"(from the grant in record {data.get('from')})")
    lines.append(f"integrity: {event.integrity}")
    return "\n".join(lines)
