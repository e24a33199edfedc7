"""Starting and stopping a real ``mlflow server`` on loopback (tests and benchmarks).

The server gets a SQLite backend store and a local artifact root served through
its artifact proxy (``--serve-artifacts``), and runs in a process group of its
own: it starts uvicorn workers, and :func:`stop_mlflow` kills the whole group.
Plain module (no pytest, no package-relative imports), so ``benchmarks/mlflow.py``
loads it by path.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests


@dataclass
class MLflowServer:
    """A running ``mlflow server``."""

    url: str
    process: subprocess.Popen[bytes]
    root: Path


def free_port() -> int:
    """A free TCP port on loopback."""
    from jupyterhub.utils import random_port

    port: int = random_port()
    return port


def start_mlflow(root: Path) -> MLflowServer:
    """Start ``mlflow server`` under ``root`` in a new process group; wait for /health."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with (root / "mlflow.log").open("wb") as log:  # the child keeps its own copy
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=root
        )
    server = MLflowServer(url, process, root)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {(root / 'mlflow.log').read_text()[-2000:]}")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.3)
    stop_mlflow(server)
    raise RuntimeError("mlflow server did not start in 120 s")


def stop_mlflow(server: MLflowServer) -> None:
    """Kill the server's whole process group (it starts workers of its own)."""
    try:
        os.killpg(server.process.pid, signal.SIGTERM)
        server.process.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=20)
