"""A session's timeline, its integrity status, and its exports (notebook and JSONL)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from io import StringIO
from pathlib import Path

import nbformat
import pytest

from nbguard.errors import NotFoundError
from nbguard.ledger import Ledger
from nbguard.ledger.keys import load_public_keys
from nbguard.review.entries import is_export
from nbguard.review.exports import notebook, write_jsonl
from nbguard.review.integrity import record_intact
from nbguard.review.replay import SessionReview, open_store_review
from nbguard.review.timeline import next_index

from .conftest import ALICE, XSS, cell, write_story


def review(url: str, keypair: tuple[Path, Path], session: str = ALICE) -> SessionReview:
    """The review of ``session`` from the ledger at ``url``."""
    return open_store_review(url, session, load_public_keys([keypair[1]]))


def test_timeline_order_and_links(
    story: Ledger, ledger_url: str, keypair: tuple[Path, Path]
) -> None:
    """Events come in time order with their kinds; each access decision links the cell
    that made it; the grant's expiry follows from its approval."""
    events = review(ledger_url, keypair).events
    assert [(e.seq, e.type) for e in events] == [
        (1, "login"),
        (2, "mfa"),
        (3, "spawn"),
        (4, "cell"),
        (5, "access"),
        (6, "cell"),
        (7, "access"),
        (8, "cell"),
        (10, "elevation"),
        (11, "elevation"),
        (12, "access"),
        (13, "cell"),
        (14, "alert"),
        (11, "elevation"),
    ]
    by_seq = {(e.seq, e.derived): e for e in events}
    assert by_seq[(7, False)].links == [8]
    assert by_seq[(7, False)].data["allowed"] is False
    assert by_seq[(11, True)].title == "grant expires: dataset.read on dataset:restricted"
    assert by_seq[(13, False)].privileged
    assert all(e.integrity == "intact" for e in events)


def test_player_jumps(story: Ledger, ledger_url: str, keypair: tuple[Path, Path]) -> None:
    """next_index finds the next cell, the next privileged cell and the next alert."""
    events = review(ledger_url, keypair).events
    assert events[next_index(events, 0, "cell") or 0].seq == 4
    assert events[next_index(events, 0, "privileged") or 0].seq == 13
    assert events[next_index(events, 0, "alert") or 0].seq == 14
    assert next_index(events, len(events) - 1, "cell") is None


def test_server_witness_folded(
    make_ledger: Callable[..., Ledger], ledger_url: str, keypair: tuple[Path, Path]
) -> None:
    """The server witness's record of a kernel-reported execution joins that cell; a
    server-only execution is its own cell, without code."""
    ledger = make_ledger()
    ledger.append("cell_execution", cell(0, "x = 1"), actor="alice", session=ALICE)
    for seq in (0, 1):
        server = {
            "kernel_id": "k-1",
            "instance": "srv",
            "seq": seq,
            "msg_id": f"m-{seq}",
            "code_sha256": "1" * 64,
            "status": "unknown",
            "privileged": False,
            "witness": "server",
        }
        ledger.append("cell_execution", server, actor="alice", session=ALICE)
    ledger.close()
    events = review(ledger_url, keypair).events
    assert [(e.seq, e.type) for e in events] == [(1, "cell"), (3, "cell")]
    assert events[0].data["server_seen"] is True
    assert events[0].links == [2]
    assert events[1].data["server_only"] is True


def test_unknown_session(story: Ledger, ledger_url: str, keypair: tuple[Path, Path]) -> None:
    """A session the ledger never saw is NotFoundError."""
    with pytest.raises(NotFoundError):
        review(ledger_url, keypair, "f" * 32)


def test_tampered_record_shows_break(
    make_ledger: Callable[..., Ledger], ledger_url: str, keypair: tuple[Path, Path]
) -> None:
    """A record edited in the database is broken, and so is everything after it; records
    before it are intact up to the last good checkpoint and chained only after it."""
    ledger = make_ledger(checkpoint_every=5)
    write_story(ledger)
    ledger.close()
    path = ledger_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        (core,) = db.execute("SELECT core FROM nbguard_ledger_records WHERE seq = 7").fetchone()
        db.execute(
            "UPDATE nbguard_ledger_records SET core = ? WHERE seq = 7",
            (core.replace('"allowed":false', '"allowed":true'),),
        )
    shown = review(ledger_url, keypair)
    assert shown.status.verified is False
    assert shown.status.failed_at == 7
    status = {e.seq: e.integrity for e in shown.events if not e.derived}
    assert [s for s, v in status.items() if v == "intact"] == [1, 2, 3, 4, 5]
    assert status[6] == "unsigned"
    assert {v for s, v in status.items() if s >= 7} == {"broken"}
    assert shown.status.checkpoint is not None
    assert shown.status.checkpoint["seq"] == 5
    assert shown.broken[0] == 7
    assert not record_intact(shown.entries[6])


def test_no_key_means_unsigned(story: Ledger, ledger_url: str) -> None:
    """Without a public key nothing is claimed beyond each record's own hash."""
    shown = open_store_review(ledger_url, ALICE, {})
    assert shown.status.verified is False
    assert {e.integrity for e in shown.events} == {"unsigned"}


def test_notebook_valid_with_provenance(
    story: Ledger, ledger_url: str, keypair: tuple[Path, Path]
) -> None:
    """The notebook validates as nbformat 4 and says where its records come from."""
    shown = review(ledger_url, keypair)
    document = nbformat.from_dict(notebook(shown))
    nbformat.validate(document)
    meta = document.metadata["nbguard"]
    assert (meta["session"], meta["from_seq"], meta["to_seq"]) == (ALICE, 1, 14)
    assert meta["head"] == shown.status.head
    assert meta["checkpoint"]["seq"] == 16
    assert meta["verified"] is True
    codes = [c.source for c in document.cells if c.cell_type == "code"]
    assert codes[0] == "import pandas as pd"
    assert len(codes) == 4


def test_notebook_outputs_plain_text(
    story: Ledger, ledger_url: str, keypair: tuple[Path, Path]
) -> None:
    """Recorded output (a script payload here) is a stream output, never HTML, and
    untrusted text never reaches a markdown cell."""
    document = notebook(review(ledger_url, keypair))
    outputs = [o for c in document["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    assert {o["output_type"] for o in outputs} == {"stream"}
    assert any(o["text"] == XSS for o in outputs)
    markdown = [c["source"] for c in document["cells"] if c["cell_type"] == "markdown"]
    assert all("<" not in text and ALICE not in text for text in markdown)
    assert "text/html" not in json.dumps(document)


def test_jsonl_lines_verify(story: Ledger, ledger_url: str, keypair: tuple[Path, Path]) -> None:
    """The JSONL export is a provenance header and the session's records, each of
    which re-hashes to its own hash."""
    out = StringIO()
    assert write_jsonl(review(ledger_url, keypair), out) == 13
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["type"] == "nbguard.session.export"
    assert lines[0]["session"] == ALICE
    assert [line["seq"] for line in lines[1:]] == [1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14]
    assert all(record_intact(line) for line in lines[1:])
    lines[5]["record"]["body"]["output_text"] = "edited"
    assert not record_intact(lines[5])


def test_is_export(story: Ledger, ledger_url: str, tmp_path: Path) -> None:
    """Only a file starting with an export header counts as an export."""
    path = ledger_url.removeprefix("sqlite:///")
    assert not is_export(path)
    other = tmp_path / "x.jsonl"
    other.write_text('{"type":"record"}\n')
    assert not is_export(other)
