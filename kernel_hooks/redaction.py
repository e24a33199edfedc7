"""Hiding secrets in recorded output text: a table of named patterns, and literal secrets.

Used only when ``NBGuardKernelHooks.record_output_text`` is on; the output digest
always covers the outputs as they were.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

#: Literal secrets shorter than this are not searched for (they would match everywhere).
_MIN_LITERAL = 8


class Redactor:
    """Replaces each match of a named pattern with ``[REDACTED:name]``.

    A pattern's group named ``keep`` (a key such as ``password =``) stays visible.
    Literal secrets (the kernel's own hub token) are replaced first, wherever they are.
    """

    def __init__(self, patterns: Mapping[str, str], literals: Iterable[str] = ()) -> None:
        self._patterns = [(name, re.compile(pattern)) for name, pattern in patterns.items()]
        self._literals = sorted({s for s in literals if len(s) >= _MIN_LITERAL}, key=len)[::-1]

    def __call__(self, text: str) -> str:
        """``text`` with every secret the table knows replaced."""
        for literal in self._literals:
            if literal in text:
                text = text.replace(literal, "[REDACTED:hub-token]")
        for name, pattern in self._patterns:
            text = pattern.sub(_replacement(name, pattern), text)
        return text


def _replacement(name: str, pattern: re.Pattern[str]) -> str | _KeepGroup:
    if "keep" in pattern.groupindex:
        return _KeepGroup(name)
    return f"[REDACTED:{name}]"


class _KeepGroup:
    """A ``re.sub`` replacement that keeps the ``keep`` group (it may not have matched)."""

    __slots__ = ("marker",)

    def __init__(self, name: str) -> None:
        self.marker = f"[REDACTED:{name}]"

    def __call__(self, match: re.Match[str]) -> str:
        return (match.group("keep") or "") + self.marker
