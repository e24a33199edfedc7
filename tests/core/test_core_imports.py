"""The core is framework-free: it imports without any Jupyter framework installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbguard

FRAMEWORKS = ("jupyterhub", "jupyter_server", "IPython", "ipykernel", "tornado")
CORE = Path(nbguard.__file__).parent

# Runs in a fresh interpreter: a meta-path finder makes every framework
# unimportable (as if not installed), then every core module is imported.
PROBE = """
import importlib, importlib.abc, pkgutil, sys
BLOCKED = {blocked!r}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None

sys.meta_path.insert(0, Block())
import nbguard
skip = ("nbguard.hub_plugin", "nbguard.server_extension", "nbguard.kernel_hooks")
names = [m.name for m in pkgutil.walk_packages(nbguard.__path__, "nbguard.")
         if not m.name.startswith(skip)]
for name in names:
    importlib.import_module(name)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(len(names), leaked)
"""


def test_core_imports_without_frameworks() -> None:
    """Every core module imports with jupyterhub, jupyter_server, IPython, ipykernel, tornado absent."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(blocked=FRAMEWORKS)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    count, leaked = result.stdout.split(" ", 1)
    assert int(count) >= 10
    assert leaked.strip() == "[]"


def test_core_source_names_no_framework() -> None:
    """No core source file imports a framework, even in a branch the probe did not take."""
    offenders = []
    for path in CORE.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            words = line.split()
            if words[:1] in (["import"], ["from"]) and words[1].split(".")[0] in FRAMEWORKS:
                offenders.append(f"{path}:{number}")
    assert offenders == []
