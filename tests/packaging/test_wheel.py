"""Packaging: one `nbguard` distribution built from five folders, and nothing else importable."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {
    "core": "nbguard",
    "hub_plugin": "nbguard/hub_plugin",
    "server_extension": "nbguard/server_extension",
    "kernel_hooks": "nbguard/kernel_hooks",
}
DATA_SUFFIXES = {".cedar", ".cedarschema", ".yaml", ".json"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel built from this checkout (setuptools, no build isolation)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = out.glob("nbguard-*.whl")
    return zipfile.ZipFile(path)


def source_files(suffixes: set[str]) -> set[str]:
    """Files under the Python folders, as their paths inside the wheel."""
    found = set()
    for folder, target in FOLDERS.items():
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in suffixes and "__pycache__" not in path.parts:
                found.add(f"{target}/{path.relative_to(ROOT / folder).as_posix()}")
    return found


def test_every_python_file_is_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    """Each .py file under core/, hub_plugin/, server_extension/, kernel_hooks/ ships."""
    names = set(wheel.namelist())
    missing = source_files({".py"}) - names
    assert missing == set()


def test_policy_and_schema_data_ship(wheel: zipfile.ZipFile) -> None:
    """Schemas, example policies, entities and cases ship as package data."""
    names = set(wheel.namelist())
    missing = {f for f in source_files(DATA_SUFFIXES) if "/tests/" not in f} - names
    assert missing == set()
    assert "nbguard/policy/nbguard.cedarschema" in names


def test_wheel_has_only_the_nbguard_package(wheel: zipfile.ZipFile) -> None:
    """No generic top-level module (core, hub_plugin, ...) is installed."""
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert {t for t in tops if not t.endswith((".dist-info", ".data"))} == {"nbguard"}


def test_data_files_install_under_the_prefix(wheel: zipfile.ZipFile) -> None:
    """Data files (Jupyter and IPython config, the prebuilt lab extension) go to sys.prefix only."""
    data = {n.split("/", 2)[2] for n in wheel.namelist() if n.split("/")[0].endswith(".data")}
    assert {n.split("/")[0] for n in data} <= {"etc", "share"}
    assert {n.split("/", 3)[2] for n in data if n.startswith("share/")} == {"labextensions"}
    assert "etc/ipython/ipython_kernel_config.json" in data


def test_console_script_is_declared(wheel: zipfile.ZipFile) -> None:
    """The wheel declares the `nbguard` console script."""
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert "nbguard = nbguard.cli:main" in wheel.read(entry_points).decode()


def test_package_list_matches_the_tree() -> None:
    """pyproject lists exactly the packages (folders with __init__.py) in the tree."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = set()
    for folder, target in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([*target.split("/"), *relative.parts]))
    assert listed == found


@pytest.mark.parametrize("name", ["core", "hub_plugin", "server_extension", "kernel_hooks"])
def test_folder_names_are_not_importable(tmp_path: Path, name: str) -> None:
    """Outside the checkout, the folder names do not import: only `nbguard` does."""
    result = subprocess.run(
        [sys.executable, "-I", "-c", f"import importlib.util as u; print(u.find_spec({name!r}))"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.strip() == "None"
