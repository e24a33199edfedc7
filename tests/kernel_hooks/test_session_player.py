"""The notebook SessionPlayer, headless: stepping, untrusted text kept plain, tampering
shown, and the real guard's review API as a source."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from nbguard.ledger import Ledger
from nbguard.ledger.keys import generate_key_pair, load_public_keys
from nbguard.review.exports import write_jsonl
from nbguard.review.replay import open_store_review

pytest.importorskip("ipywidgets")

from nbguard.kernel_hooks.session_player import SessionPlayer

SESSION = "5" * 32
XSS = "<script>alert(1)</script>"


def _cell(seq: int, code: str, privileged: bool = False, output: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {
        "kernel_id": "k",
        "instance": "i",
        "seq": seq,
        "msg_id": f"m{seq}",
        "code": code,
        "code_sha256": hashlib.sha256(code.encode()).hexdigest(),
        "status": "ok",
        "privileged": privileged,
        "witness": "kernel",
    }
    if output:
        body["output_text"] = output
    return body


@pytest.fixture
def export(tmp_path: Path) -> Path:
    """A session export: login, a cell, a denial, a privileged cell printing a script
    payload, an alert, and a last cell."""
    generate_key_pair(tmp_path / "k", tmp_path / "k.pub")
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger(url=url, signing_key_file=str(tmp_path / "k"), synchronous="normal") as ledger:
        records = [
            ("login", {"outcome": "success", "method": "pam", "username": "alice"}),
            ("cell_execution", _cell(0, "a = 1")),
            (
                "access",
                {
                    "principal": "user:alice",
                    "action": "dataset.read",
                    "resource": "dataset:customers",
                    "allowed": False,
                    "policy_ids": [],
                    "correlation_id": "c1",
                },
            ),
            ("cell_execution", _cell(1, "secret()", privileged=True, output=XSS)),
            (
                "alert",
                {
                    "alert": "witness-mismatch",
                    "severity": "warning",
                    "message": "seen by one witness",
                    "subject": "alice",
                    "details": {"kernel_id": "k"},
                },
            ),
            ("cell_execution", _cell(2, "b = 2")),
        ]
        for kind, body in records:
            ledger.append(kind, body, actor="alice", session=SESSION)
    review = open_store_review(url, SESSION, load_public_keys([tmp_path / "k.pub"]))
    path = tmp_path / "session.jsonl"
    with path.open("w", encoding="utf-8") as out:
        write_jsonl(review, out)
    return path


def test_steps_and_widget_state(export: Path) -> None:
    """The player starts at the first cell; next, previous and the jumps move it, and
    the widget's text areas follow."""
    player = SessionPlayer.from_jsonl(export)
    widget = player.widget
    assert player.current is not None
    assert player.current["seq"] == 2
    assert player.describe()["code"] == "a = 1"
    assert player.previous() is False
    assert player.next() is True
    assert player.current["seq"] == 4
    code_area, output_area = widget.children[3], widget.children[4]
    assert code_area.value == "secret()"
    assert output_area.value == XSS  # plain text in a text area, never HTML
    assert code_area.disabled
    assert player.next_alert() is True
    assert player.current["type"] == "alert"
    assert player.next_privileged() is False
    assert player.previous() is True
    assert player.current["seq"] == 4
    assert "(privileged)" in widget.children[2].value
    buttons = widget.children[1].children
    buttons[1].click()
    assert player.current["seq"] == 6
    buttons[0].click()
    assert player.current["seq"] == 4


def test_no_html_widgets(export: Path) -> None:
    """Nothing the player builds renders HTML."""
    import ipywidgets

    player = SessionPlayer.from_jsonl(export)

    def walk(widget: Any) -> list[Any]:
        return [widget, *(w for child in getattr(widget, "children", ()) for w in walk(child))]

    kinds = {type(w) for w in walk(player.widget)}
    assert not kinds & {ipywidgets.HTML, ipywidgets.HTMLMath}


def test_tampered_line_is_broken(export: Path) -> None:
    """A record edited in the export file shows as broken; the others as unsigned."""
    lines = export.read_text().splitlines()
    record = json.loads(lines[4])
    record["record"]["body"]["output_text"] = "nothing to see"
    lines[4] = json.dumps(record)
    export.write_text("\n".join(lines) + "\n")
    player = SessionPlayer.from_jsonl(export)
    status = {e["seq"]: e["integrity"] for e in player.events}
    assert status[4] == "broken"
    assert {v for s, v in status.items() if s != 4} == {"unsigned"}


@pytest.mark.parametrize(
    "content",
    ["", '{"type": "nbguard.ledger.export"}\n', "not json\n"],
    ids=["empty", "ledger-export", "garbage"],
)
def test_not_a_session_export(tmp_path: Path, content: str) -> None:
    """Anything but a session export is refused with a ValueError."""
    path = tmp_path / "x.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match="is not an nbguard session export"):
        SessionPlayer.from_jsonl(path)
