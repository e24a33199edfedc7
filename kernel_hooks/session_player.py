"""``SessionPlayer``: step through a recorded session inside a notebook (ipywidgets).

A reviewer feeds it a session export (``nbguard replay SESSION -o s.jsonl`` or the
review page's JSONL button) or asks the guard service for the session with their
own token::

    from nbguard.kernel_hooks.session_player import SessionPlayer
    SessionPlayer.from_jsonl("session.jsonl")          # offline
    SessionPlayer.from_guard("1f0c...")                 # this server's guard and token

Buttons step to the previous or next cell, the next privileged cell, or the next
alert. Recorded code and output are untrusted and are shown only in read-only
text areas and labels (plain text), never as HTML. From a JSONL file, every
record is re-hashed against its own ``hash`` and ``prev``; a record that does not
match is marked ``broken``. (Checkpoint signatures are checked by ``nbguard
verify`` on the full ledger, or by the guard service for ``from_guard``.)

ipywidgets is imported on first use (the ``nbguard[review]`` extra), so importing
this module costs a kernel nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from nbguard.review.exports import SESSION_EXPORT_TYPE
from nbguard.review.integrity import record_intact
from nbguard.review.timeline import ALERT, CELL, build_timeline

#: Longest recorded text put in a text area (the rest is cut, and said so).
MAX_TEXT = 200_000


class SessionPlayer:
    """A session's events and the position of the player; ``widget`` shows it."""

    def __init__(self, events: list[dict[str, Any]], provenance: dict[str, Any]) -> None:
        self.events = events
        self.provenance = provenance
        cells = [i for i, e in enumerate(events) if e["type"] == CELL]
        self.position = cells[0] if cells else 0
        self._widget: Any = None

    # -- sources ----------------------------------------------------------------------

    @classmethod
    def from_jsonl(cls, path: str | Path) -> SessionPlayer:
        """A session export (header line, then record lines), each record re-hashed."""
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        try:
            header = json.loads(lines[0]) if lines else None
            entries = [json.loads(line) for line in lines[1:] if line.strip()]
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("type") != SESSION_EXPORT_TYPE:
            raise ValueError(f"{path} is not an nbguard session export")
        events = [e.to_dict() for e in build_timeline(entries)]
        intact = {int(entry["seq"]): record_intact(entry) for entry in entries}
        for event in events:
            event["integrity"] = "unsigned" if intact.get(event["seq"], False) else "broken"
        return cls(events, header)

    @classmethod
    def from_guard(
        cls, session: str, *, url: str | None = None, token: str | None = None
    ) -> SessionPlayer:
        """The session from the guard service's review API (the caller must be allowed
        to review it; the view is recorded). Defaults: this server's guard
        (``NBGUARD_GUARD_URL``) and token (``JUPYTERHUB_API_TOKEN``)."""
        import requests

        base = url or os.environ.get("NBGUARD_GUARD_URL", "")
        key = token or os.environ.get("JUPYTERHUB_API_TOKEN", "")
        if not base or not key:
            raise RuntimeError("give url and token (no guard service is configured here)")
        response = requests.get(
            f"{base.rstrip('/')}/api/v1/review/sessions/{quote(session, safe='')}",
            headers={"Authorization": f"token {key}"},
            timeout=60,
            allow_redirects=False,
        )
        if response.status_code != 200:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.reason
            raise PermissionError(f"the guard refused: {response.status_code} {message}")
        data = response.json()
        return cls(list(data["events"]), dict(data["provenance"]))

    # -- moving -----------------------------------------------------------------------

    @property
    def current(self) -> dict[str, Any] | None:
        """The event the player is at (None for an empty session)."""
        return self.events[self.position] if self.events else None

    def _find(self, indexes: range, wanted: str) -> bool:
        for index in indexes:
            event = self.events[index]
            if (
                (wanted == CELL and event["type"] == CELL)
                or (wanted == "privileged" and event["type"] == CELL and event["privileged"])
                or (wanted == ALERT and event["alert"])
            ):
                self.position = index
                self.render()
                return True
        return False

    def next(self) -> bool:
        """Go to the next cell; False (and stay) if there is none."""
        return self._find(range(self.position + 1, len(self.events)), CELL)

    def previous(self) -> bool:
        """Go to the previous cell; False (and stay) if there is none."""
        return self._find(range(self.position - 1, -1, -1), CELL)

    def next_privileged(self) -> bool:
        """Go to the next cell run with elevated access."""
        return self._find(range(self.position + 1, len(self.events)), "privileged")

    def next_alert(self) -> bool:
        """Go to the next alert."""
        return self._find(range(self.position + 1, len(self.events)), ALERT)

    # -- showing ----------------------------------------------------------------------

    def describe(self) -> dict[str, str]:
        """What the widget shows for the current event, as plain text."""
        event = self.current
        if event is None:
            return {"title": "This session has no records.", "code": "", "output": ""}
        data = event["data"]
        title = f"#{event['seq']} {event['time']} {event['title']} [{event['integrity']}]"
        if event.get("privileged"):
            title += " (privileged)"
        if event["type"] == CELL:
            code = data.get("code")
            if not isinstance(code, str):
                why = "redacted" if "code" in data.get("redacted", ()) else "not reported"
                code = f"(code {why}; SHA-256 {data.get('code_sha256')})"
            output = data.get("output_text") or (
                f"(output not recorded; SHA-256 {data['output_digest']})"
                if data.get("output_digest")
                else ""
            )
        else:
            code, output = "", json.dumps(data, indent=1, ensure_ascii=False)
        return {"title": title, "code": _cut(str(code)), "output": _cut(str(output))}

    @property
    def widget(self) -> Any:
        """The ipywidgets box (built on first use)."""
        if self._widget is None:
            self._widget = self._build()
            self.render()
        return self._widget

    def _build(self) -> Any:
        import ipywidgets as widgets

        buttons = []
        for label, step in (
            ("◀ Previous cell", self.previous),
            ("Next cell ▶", self.next),
            ("Next privileged", self.next_privileged),
            ("Next alert", self.next_alert),
        ):
            button = widgets.Button(description=label)
            button.on_click(lambda _button, step=step: step())
            buttons.append(button)
        self._title = widgets.Label()
        self._code = widgets.Textarea(disabled=True, layout=widgets.Layout(width="100%"))
        self._output = widgets.Textarea(disabled=True, layout=widgets.Layout(width="100%"))
        source = self.provenance
        summary = widgets.Label(
            f"session {source.get('session')} · user {source.get('user')} · ledger records "
            f"{source.get('from_seq')}..{source.get('to_seq')} · "
            + ("ledger verified" if source.get("verified") else "ledger not verified here")
        )
        return widgets.VBox([summary, widgets.HBox(buttons), self._title, self._code, self._output])

    def render(self) -> None:
        """Show the current event in the widget (if it was built)."""
        if self._widget is None:
            return
        shown = self.describe()
        self._title.value = shown["title"]
        self._code.value = shown["code"]
        self._output.value = shown["output"]

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def _cut(text: str) -> str:
    if len(text) <= MAX_TEXT:
        return text
    return text[:MAX_TEXT] + f"\n… ({len(text) - MAX_TEXT} more characters not shown)"
