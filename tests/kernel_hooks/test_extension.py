"""Loading: the installed config file makes every kernel load the hooks; idle outside nbguard."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from .conftest import StartKernel, StubGuard

in_loop = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parents[2]


def environment_with_data_files(prefix: Path) -> Path:
    """A Python environment at ``prefix`` that sees this checkout's packages, with the
    data files installed as pyproject's ``[tool.setuptools.data-files]`` maps them
    (as installing the wheel does; an editable install skips data files)."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True, timeout=120
    )
    site = Path(sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)}))
    ours = sysconfig.get_path("purelib")
    (site / "nbguard-tests.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for target, sources in config["tool"]["setuptools"]["data-files"].items():
        (prefix / target).mkdir(parents=True, exist_ok=True)
        for source in sources:  # setuptools takes each entry as a glob pattern
            matched = sorted(ROOT.glob(source))
            assert matched, f"data file {source} matches nothing"
            for path in matched:
                shutil.copy(path, prefix / target / path.name)
    return prefix / "bin" / "python"


@in_loop
async def test_installed_config_loads_hooks_in_every_kernel(
    tmp_path: Path, start_kernel: StartKernel, stub_guard: StubGuard
) -> None:
    """A kernel of an environment with the data file loads the hooks without being told to."""
    python = environment_with_data_files(tmp_path / "env")
    kernel = await start_kernel(
        guard_url=stub_guard.url, token=stub_guard.token, hooks=False, python=str(python)
    )
    assert await kernel.value("__import__('sys').prefix") == str(tmp_path / "env")
    loaded = await kernel.value("sorted(get_ipython().extension_manager.loaded)")
    assert "nbguard.kernel_hooks" in loaded
    status = await kernel.value("__import__('nbguard.kernel_hooks').kernel_hooks.status()")
    assert status["active"] is True
    assert status["kernel_id"] == kernel.kernel_id


def test_config_file_names_the_extension() -> None:
    """The shipped IPython kernel config adds the hooks to IPKernelApp.extra_extensions."""
    value = json.loads((ROOT / "etc/ipython/ipython_kernel_config.json").read_text())
    assert value == {"IPKernelApp": {"extra_extensions": ["nbguard.kernel_hooks"]}}


@in_loop
async def test_hooks_idle_without_guard_environment(start_kernel: StartKernel) -> None:
    """Without NBGUARD_GUARD_URL and a hub token the hooks stay idle and say why."""
    kernel = await start_kernel(guard_url=None, token=None)
    status = await kernel.value("__import__('nbguard.kernel_hooks').kernel_hooks.status()")
    assert status["active"] is False
    assert "NBGUARD_GUARD_URL" in status["reason"]
    failed = await kernel.run("import fsspec; fsspec.filesystem('nbguard').ls('')")
    assert failed.reply["status"] == "error"
    assert failed.reply["ename"] == "GuardNotConfigured"
    assert "not started by a JupyterHub server with nbguard" in failed.reply["evalue"]
