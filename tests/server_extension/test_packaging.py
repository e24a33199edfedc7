"""Installing the wheel enables the extension: its JSON file lands in etc/jupyter and Jupyter reads it."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "etc/jupyter/jupyter_server_config.d/nbguard.json"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def packaging_tests() -> ModuleType:
    """tests/packaging/test_wheel.py, imported by path for its ``wheel`` fixture."""
    path = ROOT / "tests" / "packaging" / "test_wheel.py"
    spec = importlib.util.spec_from_file_location("nbguard_tests_packaging_wheel", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: The wheel built from this checkout (the packaging tests' own fixture).
wheel = packaging_tests().wheel


@pytest.fixture(scope="module")
def fresh_venv(wheel: zipfile.ZipFile, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv with the wheel installed by pip, as a user would install it.

    Its dependencies (jupyter_server and the rest) are borrowed from the test
    environment through a ``.pth`` line after its own site-packages, so the
    venv's ``nbguard`` and ``etc/jupyter`` are the wheel's and nothing else's.
    """
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            # Without it pip would first uninstall the nbguard this test runs from.
            "--ignore-installed",
            "--disable-pip-version-check",
            "--prefix",
            str(venv),
            str(wheel.filename),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    own = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    (own / "zz-test-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv


def run_in(venv: Path, code: str, home: Path) -> str:
    """Run ``code`` with the venv's Python in a clean Jupyter environment; its output, no colours."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("JUPYTER", "NBGUARD_", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(HOME=str(home), JUPYTER_CONFIG_DIR=str(home / "user-config"))
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return ANSI.sub("", result.stdout + result.stderr)


def test_wheel_ships_the_enabling_config(wheel: zipfile.ZipFile) -> None:
    """The wheel's data holds etc/jupyter/jupyter_server_config.d/nbguard.json enabling the extension."""
    (name,) = [n for n in wheel.namelist() if n.endswith(f".data/data/{CONFIG}")]
    config = json.loads(wheel.read(name))
    assert config == {"ServerApp": {"jpserver_extensions": {"nbguard.server_extension": True}}}


def test_fresh_install_lists_the_extension_enabled(fresh_venv: Path, tmp_path: Path) -> None:
    """`jupyter server extension list` in a fresh venv with the wheel reports nbguard enabled, OK."""
    assert (fresh_venv / CONFIG).is_file()
    listing = run_in(
        fresh_venv,
        "import sys; from jupyter_server.extension.serverextension import main; "
        "sys.argv = ['jupyter-server-extension', 'list']; main()",
        tmp_path,
    )
    section = listing.split(f"Config dir: {fresh_venv / 'etc' / 'jupyter'}", 1)[1]
    section = section.split("Config dir:", 1)[0]
    assert "nbguard.server_extension enabled" in section
    validated = section.split("- Validating nbguard.server_extension...", 1)[1].splitlines()[1]
    assert "OK" in validated


def test_installed_extension_is_imported_from_the_wheel(fresh_venv: Path, tmp_path: Path) -> None:
    """In the fresh venv, nbguard's extension point comes from the installed wheel."""
    where, name = run_in(
        fresh_venv,
        "import nbguard.server_extension as s; "
        "(p,) = s._jupyter_server_extension_points(); "
        "print(s.__file__, p['app'].name)",
        tmp_path,
    ).split()
    assert where.startswith(str(fresh_venv))
    assert name == "nbguard"
