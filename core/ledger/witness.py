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
    """POSTs each checkpoint as JSON to an HTTP(S) endpoint; any 2xx counts as stored.

    With ``token_file``, each request carries ``Authorization: Bearer <token>``,
    the token read from that file at every publish (so a rotated token is picked
    up); the token itself is never logged nor shown in ``repr``.
    """

    def __init__(
        self, url: str, *, timeout: float = 5.0, token_file: str | Path | None = None
    ) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https"):
            raise ConfigError(f"witness URL must be http or https: {url!r}")
        self.url = url
        self.timeout = timeout
        self.token_file = Path(token_file) if token_file else None
        if self.token_file is not None:
            try:
                read_token(self.token_file)
            except OSError as error:
                raise ConfigError(
                    f"Ledger.witness_token_file: cannot use {self.token_file}: "
                    f"{error.strerror or error}"
                ) from None
            if parsed.scheme == "http" and parsed.hostname not in _LOOPBACK:
                log.warning(
                    "witness %s is plain http: its bearer token crosses the network in clear",
                    url,
                )

    def publish(self, checkpoint: Checkpoint) -> None:
        """Send the checkpoint; raise OSError on a network error or non-2xx answer."""
        headers = {"Content-Type": "application/json"}
        if self.token_file is not None:
            headers["Authorization"] = f"Bearer {read_token(self.token_file)}"
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self.url,
            data=canonical_bytes(checkpoint.to_json()),
            headers=headers,
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
            if not 200 <= response.status < 300:
                raise OSError(f"witness {self.url} answered {response.status}")

    def __repr__(self) -> str:
        return f"HttpWitness({self.url!r})"


_LOOPBACK = ("localhost", "127.0.0.1", "::1")


def read_token(path: Path) -> str:
    """Return the bearer token held in ``path`` (one line; surrounding whitespace ignored).

    Raises OSError if the file cannot be read or does not hold exactly one
    non-empty line (the message never quotes the token).
    """
    try:
        token = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise OSError(f"witness token file {path} is not UTF-8 text") from None
    if not token or any(char in token for char in "\r\n\0"):
        raise OSError(f"witness token file {path} must hold exactly one non-empty line")
    return token


def witness_from_spec(
    spec: str, *, timeout: float = 5.0, token_file: str | Path | None = None
) -> Witness:
    """Return the witness for a spec: an ``http(s)://`` URL, or a file path / ``file://`` URL.

    ``token_file`` holds the bearer token sent to HTTP witnesses (files ignore it).
    """
    scheme = urlparse(spec).scheme
    if scheme in ("http", "https"):
        return HttpWitness(spec, timeout=timeout, token_file=token_file)
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
