"""A throwaway PostgreSQL cluster on a free loopback port, for tests and benchmarks.

Used by the ``postgres_cluster`` fixture in ``tests/conftest.py`` and by the
benchmarks, which load this file by path (``load_pgcluster()`` in each). The
cluster lives in a fresh temporary directory, runs as the ``postgres`` OS user
when we are root (PostgreSQL refuses to run as root), has fsync off (data loss
on a crash is fine for a throwaway), and is deleted by ``stop()``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

_BIN_NAMES = ("initdb", "pg_ctl", "postgres")


def find_bindir() -> Path:
    """Return the directory holding initdb, pg_ctl and postgres; RuntimeError if none does."""
    candidates = ["/usr/local/bin", *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.insert(0, str(Path(on_path).resolve().parent))
    for folder in candidates:
        if all(os.access(Path(folder, name), os.X_OK) for name in _BIN_NAMES):
            return Path(folder)
    raise RuntimeError(
        "PostgreSQL server binaries not found (initdb, pg_ctl, postgres); "
        "install the Debian package postgresql (scripts/test does)"
    )


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresCluster:
    """Start with ``start()``, get URLs with ``url()`` / ``create_database()``, ``stop()``."""

    def __init__(self, *, fsync: bool = False) -> None:
        """``fsync=True`` gives real durability (for honest benchmark figures)."""
        self.fsync = fsync
        self.bindir = find_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="nbguard-pg-"))
        self.datadir = self.root / "data"
        self.port = free_port()
        self.user = "postgres"
        self._as_postgres = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> PostgresCluster:
        """Create and start the cluster; return self."""
        if self._as_postgres:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)
        try:
            self._run(
                "initdb", "-D", str(self.datadir), "-U", self.user, "--auth=trust",
                "--encoding=UTF8", "--no-sync",
            )  # fmt: skip
            options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            options += "-c max_connections=100 "
            if not self.fsync:
                options += "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            self._run(
                "pg_ctl", "-D", str(self.datadir), "-o", options,
                "-l", str(self.root / "server.log"), "-w", "-t", "60", "start",
            )  # fmt: skip
        except subprocess.CalledProcessError as error:
            log = self.root / "server.log"
            detail = log.read_text() if log.exists() else ""
            shutil.rmtree(self.root, ignore_errors=True)
            raise RuntimeError(f"PostgreSQL failed to start: {error.stderr}\n{detail}") from error
        return self

    def url(self, database: str = "postgres") -> str:
        """Return the SQLAlchemy URL of ``database`` (psycopg 3 driver)."""
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "t") -> str:
        """Create a fresh empty database and return its URL."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server at once and delete its files."""
        try:
            self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pass  # already gone; still remove the files
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
