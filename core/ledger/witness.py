"""Witnesses: copies of signed checkpoints kept outside the ledger database.

An insider who can rewrite the database must then also rewrite every witness,
and ``nbguard verify --witness`` notices a database rolled back behind one. A
witness is an append-only JSON Lines file or an HTTP endpoint that receives each
checkpoint as a JSON ``POST``. Publishing happens on a background thread so a slow
witness never stalls appends; failures are logged and the next checkpoint
(which covers everything before it) is sent as usual.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from nbguard.errors import ConfigError, LedgerIntegrityError
from nbguard.ledger.canonical import canonical_bytes
from nbguard.ledger.checkpoints import Checkpoint

log = logging.getLogger(__name__)


class Witness(Protocol):
    """Something that keeps a copy of each checkpoint."""

    def publish(self, checkpoint: Checkpoint) -> None:
        """Store one checkpoint durably or raise OSError."""


class FileWitness:
    """Appends each checkpoint as a JSON line to a file (best on other storage, e.g. WORM)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def publish(self, checkpoint: Checkpoint) -> None:
        """Append the checkpoint and fsync, so a published checkpoint survives a crash."""
        line = canonical_bytes(checkpoint.to_json()) + b"\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def __repr__(self) -> str:
        return f"FileWitness({str(self.path)!r})"


class HttpWitness:
    """POSTs each checkpoint as JSON to an HTTP(S) endpoint; any 2xx counts as stored."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        if urlparse(url).scheme not in ("http", "https"):
            raise ConfigError(f"witness URL must be http or https: {url!r}")
        self.url = url
        self.timeout = timeout

    def publish(self, checkpoint: Checkpoint) -> None:
        """Send the checkpoint; raise OSError on a network error or non-2xx answer."""
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self.url,
            data=canonical_bytes(checkpoint.to_json()),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
            if not 200 <= response.status < 300:
                raise OSError(f"witness {self.url} answered {response.status}")

    def __repr__(self) -> str:
        return f"HttpWitness({self.url!r})"


def witness_from_spec(spec: str, *, timeout: float = 5.0) -> Witness:
    """Return the witness for a spec: an ``http(s)://`` URL, or a file path / ``file://`` URL."""
    scheme = urlparse(spec).scheme
    if scheme in ("http", "https"):
        return HttpWitness(spec, timeout=timeout)
    if scheme == "file":
        return FileWitness(urlparse(spec).path)
    if scheme and len(scheme) > 1:  # one letter is a Windows drive
        raise ConfigError(f"unsupported witness {spec!r}: use a file path or an http(s) URL")
    return FileWitness(spec)


def read_witness_file(path: str | Path) -> list[Checkpoint]:
    """Read every checkpoint from a witness file; LedgerIntegrityError names a bad line."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise ConfigError(f"cannot read witness file {path}: {error.strerror}") from None
    checkpoints = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"witness {path}:{number}"
        try:
            data = json.loads(line)
        except ValueError:
            raise LedgerIntegrityError(f"{where}: not JSON") from None
        checkpoints.append(Checkpoint.from_json(data, where=where))
    return checkpoints


class WitnessPublisher:
    """Sends checkpoints to every witness from one background thread."""

    def __init__(self, witnesses: Sequence[Witness]) -> None:
        self._witnesses = list(witnesses)
        self._queue: queue.Queue[Checkpoint | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="nbguard-witness", daemon=True)
        self._thread.start()

    def publish(self, checkpoint: Checkpoint) -> None:
        """Queue a checkpoint for every witness."""
        self._queue.put(checkpoint)

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (checkpoint := self._queue.get()) is not None:
            for witness in self._witnesses:
                try:
                    witness.publish(checkpoint)
                except OSError as error:
                    log.error(
                        "could not publish checkpoint %d to %r: %s", checkpoint.seq, witness, error
                    )
