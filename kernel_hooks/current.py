"""The link between the guard client and the cell being recorded, if any.

The client (``nbguard://``) tags each request with the running cell and tells the
recorder which governed resources the cell touched. It works without the hooks
too (a script with the server's environment): then there is no cell to name.
"""

from __future__ import annotations

from typing import Protocol


class CellSource(Protocol):
    """What the recorder offers the client."""

    def cell_header(self) -> str | None:
        """The ``X-NBGuard-Cell`` header value for the running cell, or None."""

    def touch(self, resource: str) -> None:
        """Note that the running cell touched ``resource`` (``dataset:sales``)."""


_source: CellSource | None = None


def attach(source: CellSource | None) -> None:
    """Make ``source`` the recorder the client reports to (None: no recorder)."""
    global _source
    _source = source


def cell_header() -> str | None:
    """The ``X-NBGuard-Cell`` header for the running cell, or None outside a recorded cell."""
    source = _source
    return source.cell_header() if source is not None else None


def touch(resource: str) -> None:
    """Tell the recorder, if any, that the running cell touched ``resource``."""
    source = _source
    if source is not None:
        source.touch(resource)
