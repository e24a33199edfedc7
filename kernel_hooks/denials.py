"""Showing nbguard's refusals in a notebook as their message, without a traceback.

A denial raised deep inside pandas or fsspec would otherwise show dozens of
library frames above the lines that matter: why the access was refused, and
what would allow it. IPython lets one extension handle chosen exception types
(``set_custom_exc``); nbguard takes that slot for its own client errors only,
and only when nobody else holds it. The error still reaches the frontend as an
``error`` message named after the class (``GuardPermissionError``), still fails
the cell, and is still recorded.
"""

from __future__ import annotations

from typing import Any

from nbguard.kernel_hooks.errors import GuardClientError

#: The exception types shown as their message alone.
SHOWN_BRIEFLY = (GuardClientError,)


def _show_briefly(
    shell: Any, etype: type[BaseException], value: BaseException, tb: Any, tb_offset: Any = None
) -> list[str]:
    # The name and the message, as IPython shows a SyntaxError's last line.
    shell.showtraceback((etype, value, tb), exception_only=True)
    return []


def install(shell: Any) -> bool:
    """Show nbguard's client errors briefly in ``shell``; False if the slot is taken."""
    if getattr(shell, "custom_exceptions", None) != ():
        return False
    shell.set_custom_exc(SHOWN_BRIEFLY, _show_briefly)
    return True


def uninstall(shell: Any) -> None:
    """Give the slot back, if it is still nbguard's."""
    if getattr(shell, "custom_exceptions", None) == SHOWN_BRIEFLY:
        shell.set_custom_exc((), None)
