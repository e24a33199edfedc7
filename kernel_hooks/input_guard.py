"""The optional input guard: cells that use names the admin listed are rejected before they run.

``NBGuardKernelHooks.rejected_names`` lists dotted names, with shell-style
wildcards (``subprocess.*``). A cell is rejected when it imports one of them
(``import ctypes``, ``from subprocess import run``) or refers to one by its dotted
name (``os.system(...)``, ``subprocess.run``). IPython shows the rejection as
``InputRejected`` and stores it as the cell's error, so its record has status
``error`` and ``error_name`` ``InputRejected``.

This is a convenience that tells notebook users early what their admin does not
want run; it is not a barrier (``getattr(__import__("o" + "s"), "system")`` passes
it). Enforcement is the guard service's, on the requests themselves.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from collections.abc import Iterable

from IPython.core.error import InputRejected


def dotted_name(node: ast.AST) -> str | None:
    """``a.b.c`` for a chain of attributes on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


class InputGuard(ast.NodeVisitor):
    """An IPython AST transformer that raises ``InputRejected`` for listed names."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = [p for p in patterns if p]
        self._match = re.compile(
            "|".join(f"(?:{fnmatch.translate(p)})" for p in self.patterns) or r"(?!)"
        ).match

    def visit(self, node: ast.AST) -> ast.AST:
        """Check the whole cell; return it unchanged, or raise ``InputRejected``."""
        for child in ast.walk(node):
            for name in self._names(child):
                if self._hit(name):
                    raise InputRejected(
                        f"nbguard: this cell uses {name}, which your hub admin does not allow "
                        "in notebooks (NBGuardKernelHooks.rejected_names). The cell did not "
                        "run."
                    )
        return node

    def _names(self, node: ast.AST) -> Iterable[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            return [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        if isinstance(node, ast.Attribute | ast.Name) and isinstance(node.ctx, ast.Load):
            name = dotted_name(node)
            return [name] if name else []
        return []

    def _hit(self, name: str) -> bool:
        """Whether ``name`` or one of its parents (``os`` of ``os.path``) is listed."""
        parts = name.split(".")
        return any(self._match(".".join(parts[:i])) for i in range(len(parts), 0, -1))
