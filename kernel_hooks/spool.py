"""The durable local spool: execution records wait here until the guard has them.

Layout, under ``NBGuardKernelHooks.spool_dir`` (mode 0700), one folder per hub user::

    <user>/<kernel_id>.<instance>.<n>.jsonl        a segment: one record per line
    <user>/<kernel_id>.<instance>.<n>.jsonl.acked  how many bytes the guard has accepted
    <user>/quarantine.jsonl                        records the guard refused as malformed

Each kernel process appends to its own segment, so kernels never wait on each
other. A record is one ``write(2)`` of one line to a file opened ``O_APPEND``,
done before ``run_cell`` returns: it survives the kernel being killed (even with
SIGKILL) and the server restarting, since the data is with the operating system
once the call returns. It does not wait for the disk (no ``fsync``): a crash of
the whole machine may lose the last records, as it loses the rest of its state.

Why not SQLite: a WAL-mode commit measured 13-19 µs p50 here (2 cores, ext4), more
than the whole per-cell budget of 10 µs; the append measured 1.4 µs. Files also
let a dead kernel's leftovers be found without any shared lock on the cell path.

Ownership is an advisory lock (``flock``) on the segment, held by its kernel for
its whole life and released by the operating system when the process dies.
Another kernel of the same user that can take the lock has found an orphan: it
ships what is past the ``.acked`` mark and removes the files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

#: A segment is replaced by a new one once everything in it was accepted and it is
#: larger than this.
ROTATE_BYTES = 1024 * 1024
_SUFFIX = ".jsonl"
_ACKED = ".acked"

log = logging.getLogger("nbguard.kernel_hooks")


def user_spool_dir(root: str | Path, user: str) -> Path:
    """The folder of ``user``'s segments under the spool root."""
    return Path(root) / (quote(user, safe="") or "_")


@dataclass
class Line:
    """One record as spooled: its bytes (without the newline) and where it ends."""

    data: bytes
    end: int


class Segment:
    """One segment file, opened by the process that owns it (holds its lock)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.acked = _read_acked(path)

    @classmethod
    def create(cls, path: Path) -> Segment:
        """A new segment for this process, locked."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise
        return cls(path, fd)

    @classmethod
    def adopt(cls, path: Path) -> Segment | None:
        """The segment at ``path`` if no live process holds it (its kernel died), else None."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Another adopter may have finished and removed it while we waited.
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                raise FileNotFoundError(path)
        except OSError:
            os.close(fd)
            return None
        return cls(path, fd)

    def size(self) -> int:
        """Bytes in the file now."""
        return os.fstat(self.fd).st_size

    def lines(self, limit: int, count: int, max_bytes: int) -> tuple[list[Line], bytes]:
        """Up to ``count`` complete lines (about ``max_bytes`` in all) between the acked
        mark and byte ``limit``, and the torn tail: bytes with no newline up to
        ``limit``, which only a writer that died mid-write leaves (empty otherwise)."""
        position = self.acked
        if position >= limit:
            return [], b""
        data = os.pread(self.fd, min(limit - position, max_bytes), position)
        out: list[Line] = []
        start = 0
        while len(out) < count:
            newline = data.find(b"\n", start)
            if newline < 0:
                break
            out.append(Line(data[start:newline], position + newline + 1))
            start = newline + 1
        if out:
            return out, b""
        # No whole line within max_bytes: one record longer than a batch, or a torn tail.
        rest = os.pread(self.fd, limit - position, position)
        newline = rest.find(b"\n")
        if newline >= 0:
            return [Line(rest[:newline], position + newline + 1)], b""
        return [], rest

    def ack(self, position: int) -> None:
        """Mark everything before byte ``position`` as accepted by the guard."""
        self.acked = position
        temporary = self.path.with_name(self.path.name + _ACKED + ".tmp")
        temporary.write_text(str(position))
        os.replace(temporary, self.path.with_name(self.path.name + _ACKED))

    def remove(self) -> None:
        """Delete the segment and its mark (while still holding the lock), then close it."""
        for path in (self.path, self.path.with_name(self.path.name + _ACKED)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.close()

    def close(self) -> None:
        """Release the lock and the file."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _read_acked(path: Path) -> int:
    try:
        return int(path.with_name(path.name + _ACKED).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


class Spool:
    """This process's writer into the spool, and the finder of orphaned segments."""

    def __init__(
        self,
        directory: str | Path,
        kernel_id: str,
        instance: str,
        *,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.log = logger or log
        self.prefix = f"{kernel_id}.{instance}."
        self._lock = threading.Lock()
        self._number = 0
        self._current: Segment | None = None
        #: Bytes of the current segment that hold complete records.
        self.committed = 0
        #: Earlier segments of this process not yet fully accepted, oldest first.
        self.retired: list[Segment] = []
        self.lost = 0
        self._warned = False

    def open(self) -> None:
        """Create the folder (0700) and this process's first segment."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._lock:
            self._current = self._new_segment()

    def _new_segment(self) -> Segment:
        path = self.directory / f"{self.prefix}{self._number:06d}{_SUFFIX}"
        self._number += 1
        segment = Segment.create(path)
        self.committed = 0
        return segment

    @property
    def current(self) -> Segment | None:
        """The segment records are appended to now."""
        return self._current

    def append(self, line: bytes) -> bool:
        """Write one record (``line`` ends with a newline); False if it could not be kept.

        Never raises: a full disk must not break the user's cell. A lost record
        leaves a gap in the stream's ``seq``, which the guard reports.
        """
        with self._lock:
            segment = self._current
            if segment is None:
                return self._lose("the spool is closed")
            try:
                written = os.write(segment.fd, line)
                while written < len(line):  # only on a nearly full disk
                    written += os.write(segment.fd, line[written:])
            except OSError as error:
                return self._lose(os.strerror(error.errno or errno.EIO))
            self.committed += len(line)
            return True

    def _lose(self, why: str) -> bool:
        self.lost += 1
        if not self._warned:
            self._warned = True
            self.log.error("nbguard: could not spool an execution record (%s); it is lost", why)
        return False

    def rotate_if_done(self, limit: int = ROTATE_BYTES) -> None:
        """Start a new segment once the current one is fully accepted and large."""
        with self._lock:
            segment = self._current
            if segment is None or self.committed < limit or segment.acked < self.committed:
                return
            try:
                fresh = self._new_segment()
            except OSError as error:
                self.log.warning("nbguard: could not start a new spool segment: %s", error)
                return
            self._current = fresh
        segment.remove()

    def snapshot(self) -> tuple[Segment | None, int]:
        """The current segment and how many of its bytes hold complete records."""
        with self._lock:
            return self._current, self.committed

    def close(self, *, remove_if_done: bool = True) -> None:
        """Stop writing; a segment whose records were all accepted is removed."""
        with self._lock:
            segment, self._current = self._current, None
            committed = self.committed
        for old in self.retired:
            old.close()
        if segment is None:
            return
        if remove_if_done and segment.acked >= committed:
            segment.remove()
        else:
            segment.close()

    def orphans(self) -> Iterator[Segment]:
        """Segments of this user's dead kernels, locked for this process, in order."""
        try:
            names = sorted(p.name for p in self.directory.iterdir() if p.name.endswith(_SUFFIX))
        except OSError:
            return
        for name in names:
            if name.startswith(self.prefix) or name == QUARANTINE:
                continue
            segment = Segment.adopt(self.directory / name)
            if segment is not None:
                yield segment

    def quarantine(self, segment: Segment, line: Line, status: int, reason: str) -> None:
        """Keep a refused record aside (with why), and move past it."""
        entry = {
            "quarantined": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "segment": segment.path.name,
            "status": status,
            "reason": reason[:2000],
            "record": line.data.decode("utf-8", "replace"),
        }
        data = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8", "replace")
        fd = os.open(
            self.directory / QUARANTINE,
            os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
            0o600,
        )
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


#: The file of records the guard refused as malformed.
QUARANTINE = "quarantine.jsonl"
