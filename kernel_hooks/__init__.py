"""nbguard's IPython extension (user zone): cell capture and the ``nbguard://`` client.

Kernel hooks are a witness the user can disable; the server extension is the second.
Loaded in every kernel of an environment where nbguard is installed (see
``docs/kernel-hooks.md``), or by hand with ``%load_ext nbguard.kernel_hooks``.
The extension's modules are imported only when it loads, so that using
``nbguard://`` alone (``nbguard.kernel_hooks.filesystem``) stays light.
"""

from __future__ import annotations

from typing import Any


def load_ipython_extension(shell: Any) -> None:
    """IPython's entry point: start recording this kernel's executions."""
    from nbguard.kernel_hooks.extension import load_ipython_extension as load

    load(shell)


def unload_ipython_extension(shell: Any) -> None:
    """IPython's entry point for ``%unload_ext``: stop recording."""
    from nbguard.kernel_hooks.extension import unload_ipython_extension as unload

    unload(shell)


def status() -> dict[str, Any]:
    """Whether this kernel's executions are being recorded, with the stream and counters."""
    from nbguard.kernel_hooks.extension import status as current_status

    return current_status()
