"""A cell's outputs as one SHA-256 digest, and optionally as short text.

The digest's canonical form lets anyone holding the outputs recompute it, and
does not depend on how the kernel happened to chunk a stream. The outputs of a
cell, in the order they were produced, are grouped into *items*:

- ``stream``: consecutive writes to one stream (``stdout`` or ``stderr``) form one
  item, whose content is their text, concatenated, in UTF-8;
- ``display_data`` and ``update_display_data`` (``IPython.display``) and
  ``execute_result`` (the value of the cell's last expression): the content is the
  MIME bundle as canonical JSON (keys sorted, ``(",", ":")`` separators,
  non-ASCII kept, bytes as base64); metadata and display ids are not covered;
- ``clear_output``: empty content;
- ``error`` (the exception that ended the cell, last): its message, in UTF-8.

Each item adds one line ``"{kind} {name} {sha256 of content, hex}\\n"`` to the
digest, ``name`` being the stream name, the exception's class name, or ``-``.
The digest is the SHA-256 of those lines (of nothing, for a cell without output).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

#: The digest of a cell that produced no output.
EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()


def canonical_json(value: Any) -> bytes:
    """``value`` as the canonical JSON the digest covers."""
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_jsonable
    )
    return text.encode("utf-8", "surrogatepass")


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


class CellOutputs:
    """Collects what one cell shows: the running digest and, if asked for, the text."""

    __slots__ = ("_digest", "_run", "_run_name", "cut", "limit", "size", "text")

    def __init__(self, text_limit: int = 0) -> None:
        self._digest: Any = None
        self._run: Any = None
        self._run_name = ""
        #: Text kept for the record (only when ``text_limit`` > 0), and how much was cut.
        self.text: list[str] = []
        self.limit = text_limit
        self.size = 0
        self.cut = 0

    def stream(self, name: str, text: str) -> None:
        """A write of ``text`` to stream ``name``."""
        if self._run is None or self._run_name != name:
            self._end_run()
            self._run = hashlib.sha256()
            self._run_name = name
        self._run.update(text.encode("utf-8", "surrogatepass"))
        if self.limit:
            self._keep(text)

    def bundle(self, kind: str, data: Mapping[str, Any]) -> None:
        """A display or result: its MIME bundle."""
        self._item(kind, "-", canonical_json(dict(data)))
        if self.limit:
            plain = data.get("text/plain")
            if isinstance(plain, str):
                self._keep(plain if plain.endswith("\n") else plain + "\n")

    def clear(self) -> None:
        """``clear_output``."""
        self._item("clear_output", "-", b"")

    def error(self, name: str, message: str) -> None:
        """The exception that ended the cell."""
        self._item("error", name, message.encode("utf-8", "surrogatepass"))
        if self.limit:
            self._keep(f"{name}: {message}\n" if message else f"{name}\n")

    def digest(self) -> str:
        """The SHA-256 of the outputs so far, in the canonical form (hex)."""
        self._end_run()
        if self._digest is None:
            return EMPTY_DIGEST
        hexdigest: str = self._digest.copy().hexdigest()
        return hexdigest

    def kept_text(self) -> str:
        """The text kept, with a note of how much was cut (not yet redacted)."""
        text = "".join(self.text)
        if self.cut:
            text += f"\n[nbguard: {self.cut} more characters of output not recorded]"
        return text

    def _item(self, kind: str, name: str, content: bytes) -> None:
        self._end_run()
        self._line(kind, name, hashlib.sha256(content).hexdigest())

    def _end_run(self) -> None:
        if self._run is not None:
            self._line("stream", self._run_name, self._run.hexdigest())
            self._run = None

    def _line(self, kind: str, name: str, content_digest: str) -> None:
        if self._digest is None:
            self._digest = hashlib.sha256()
        self._digest.update(f"{kind} {name} {content_digest}\n".encode("utf-8", "surrogatepass"))

    def _keep(self, text: str) -> None:
        room = self.limit - self.size
        if room <= 0:
            self.cut += len(text)
            return
        piece = text[:room]
        self.text.append(piece)
        self.size += len(piece)
        self.cut += len(text) - len(piece)
