"""nbguard's jupyter-server extension (user zone): mediation and the execute witness.

It only carries requests to the guard service and witnesses what crosses the
kernel websocket; it never decides governed access. See docs/server-extension.md.
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """The extension's one entry point (imported only when a server loads it)."""
    from nbguard.server_extension.app import NBGuardExtension

    return [{"module": "nbguard.server_extension", "app": NBGuardExtension}]
