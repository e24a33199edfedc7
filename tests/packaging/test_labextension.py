"""Packaging of the lab extension: prebuilt, fresh, in the wheel, and enabled without Node.js."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from ..server_extension import test_packaging as installed
from . import test_wheel as built

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "labextension"
PREBUILT = SOURCE / "nbguard"
TARGET = "share/jupyter/labextensions/nbguard"
#: What labextension/scripts/stamp.js digests (the sources the build reads).
STAMPED = ["package.json", "tsconfig.json", "src", "style"]
ANSI = re.compile(r"\x1b\[[0-9;]*m")

#: The wheel built from this checkout, and a fresh venv with it installed (their fixtures).
wheel = built.wheel
fresh_venv = installed.fresh_venv


def sources_digest() -> str:
    """The digest stamp.js writes: SHA-256 over ``path\\0sha256(bytes)\\n``, sorted by path."""
    files: list[str] = []
    for entry in STAMPED:
        path = SOURCE / entry
        if path.is_file():
            files.append(entry)
            continue
        for found in path.rglob("*"):
            relative = found.relative_to(SOURCE)
            if found.is_file() and "__tests__" not in relative.parts:
                files.append(relative.as_posix())
    lines = "".join(
        f"{name}\0{hashlib.sha256((SOURCE / name).read_bytes()).hexdigest()}\n"
        for name in sorted(files)
    )
    return hashlib.sha256(lines.encode()).hexdigest()


def test_prebuilt_extension_matches_its_sources() -> None:
    """The committed build was made from the committed sources (rebuild: npm run build)."""
    stamped = (PREBUILT / "sources.sha256").read_text().strip()
    assert stamped == sources_digest(), (
        "labextension/ sources changed since the prebuilt extension was built: "
        "run `npm run build` in labextension/ and commit labextension/nbguard"
    )


def test_prebuilt_entry_point_exists() -> None:
    """The prebuilt package.json names a remote entry that is really there."""
    meta = json.loads((PREBUILT / "package.json").read_text())
    assert meta["name"] == "nbguard"
    assert (PREBUILT / meta["jupyterlab"]["_build"]["load"]).is_file()


def test_wheel_ships_the_prebuilt_extension(wheel: zipfile.ZipFile) -> None:
    """Every file of labextension/nbguard (and install.json) is in the wheel's share/jupyter."""
    shipped = {
        name.split(".data/data/", 1)[1]
        for name in wheel.namelist()
        if ".data/data/" in name and f"/{TARGET}/" in f"/{name.split('.data/data/', 1)[1]}"
    }
    expected = {
        f"{TARGET}/{p.relative_to(PREBUILT).as_posix()}"
        for p in PREBUILT.rglob("*")
        if p.is_file() and p.name != "sources.sha256"
    } | {f"{TARGET}/install.json"}
    assert shipped == expected


def test_fresh_install_lists_the_extension_enabled_without_node(
    fresh_venv: Path, tmp_path: Path
) -> None:
    """`jupyter labextension list`, with no node on PATH, finds nbguard enabled in the wheel's prefix."""
    path = str(fresh_venv / "bin")
    assert shutil.which("node", path=path) is None
    assert shutil.which("npm", path=path) is None
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("JUPYTER", "NBGUARD_", "PYTHON", "VIRTUAL_ENV", "NODE"))
    }
    env.update(PATH=path, HOME=str(tmp_path), JUPYTER_CONFIG_DIR=str(tmp_path / "config"))
    result = subprocess.run(
        [
            str(fresh_venv / "bin" / "python"),
            "-c",
            "import sys; from jupyterlab.labextensions import main; "
            "sys.argv = ['jupyter-labextension', 'list']; main()",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    listing = ANSI.sub("", result.stdout + result.stderr)
    section = listing.split(str(fresh_venv / "share" / "jupyter" / "labextensions"), 1)
    assert len(section) == 2, listing
    ours = section[1].split("\n/", 1)[0]
    assert re.search(r"nbguard v\S+ enabled\s+OK \(python, nbguard\)", ours), listing


@pytest.mark.parametrize("name", ["node_modules", "lib", "tsconfig.tsbuildinfo"])
def test_build_leftovers_are_ignored(name: str) -> None:
    """Node's install and the TypeScript output are never committed (.gitignore)."""
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", "-q", f"labextension/{name}"],
        cwd=ROOT,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0
