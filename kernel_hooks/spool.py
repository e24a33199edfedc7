"""The durable local spool: execution records wait here until the guard has them.

Layout, under ``NBGuardKernelHooks.spool_dir`` (mode 0700), one folder per hub user::

    <user>/<kernel_id>.<instance>.<n>.jsonl        a segment: one record per line
    <user>/<kernel_id>.<instance>.<n>.jsonl.acked  how many bytes the guard has accepted
    <user>/quarantine.jsonl                        records the guard refused as malformed

Each kernel process writes its own segments, so kernels never wait on each other.
A segment is a file of ``SEGMENT_BYTES`` (allocated up front, zero-filled) mapped
into the kernel's memory (``mmap``, shared); a record is one line copied into the mapping
before ``run_cell`` returns. Those pages belong to the operating system's page
cache, so a record survives the kernel being killed (SIGKILL included) and the
server restarting; nothing waits for the disk (no ``fsync``): a crash of the whole
machine may lose the last records, as it loses the rest of its state. Records end
at the first zero byte (a JSON line never holds one).

Why a mapping: the cell path then makes no system call, so it does not hand the
interpreter lock to the kernel's other threads (which are busy sending the cell's
status messages at that moment). Timed inside a kernel, the recorder's
``post_execute`` took 96 µs p50 with one ``write(2)`` per record and 57 µs with the
copy. Why not SQLite: a WAL commit measured 10-19 µs p50 here on its own, over the
whole per-cell budget of 10 µs. The shipper thread prepares the next segment
before one fills, and keeps the pages the next records go to writable
(:func:`populate`), so that the cell path does not take the page faults either.
The cell path takes no lock: ``mmap.write`` copies a line at the mapping's position
and moves it in one call, which the interpreter lock makes atomic; only a full
segment's switch to the next is done under the spool's lock.

Ownership is an advisory lock (``flock``) on each segment, held by its kernel for
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
import mmap
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

#: Size of a segment file (allocated in full: about 2,000 records).
SEGMENT_BYTES = 1024 * 1024
_SUFFIX = ".jsonl"
_ACKED = ".acked"

log = logging.getLogger("nbguard.kernel_hooks")


#: ``madvise(MADV_POPULATE_WRITE)`` (Linux 5.14 and later; Python names it from 3.12).
_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23 if sys.platform == "linux" else None)
#: Segment switches one append may make before giving up (see Spool._append_locked).
_SWITCHES = 16
#: How far ahead of the writer the shipper keeps pages writable (about 140 records).
READY_BYTES = 64 * 1024


def populate(mapped: mmap.mmap, start: int, length: int) -> None:
    """Make pages ``start``..``start + length`` of ``mapped`` writable now, off the cell path.

    The first write to a page of a shared file mapping faults into the kernel (and the
    filesystem: ``page_mkwrite``), and so does the next write after writeback has
    cleaned the page; timed inside a kernel that was 1-2 µs per record. This takes
    those faults here instead; the content is not touched. Best effort: an older
    kernel, or a mapping closed meanwhile, just leaves the faults to the writer.
    """
    if _POPULATE_WRITE is None:
        return
    start -= start % mmap.PAGESIZE
    length = min(length, len(mapped) - start)
    if length <= 0:
        return
    with contextlib.suppress(OSError, ValueError):
        mapped.madvise(_POPULATE_WRITE, start, length)


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
        #: The writable mapping (only in the process that created the segment).
        self.map: mmap.mmap | None = None
        #: Bytes holding complete records, once the writer has moved on (else None).
        self.sealed: int | None = None

    @classmethod
    def create(cls, path: Path, size: int) -> Segment:
        """A new segment of ``size`` zero bytes for this process, locked and mapped."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Allocated now, not on first touch: writing into a page of a sparse
            # file on a full disk kills the process with SIGBUS; this fails here.
            os.posix_fallocate(fd, 0, size)
            segment = cls(path, fd)
            segment.map = mmap.mmap(fd, size)
            populate(segment.map, 0, size)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        return segment

    @classmethod
    def adopt(cls, path: Path) -> Segment | None:
        """The segment at ``path`` if no live process holds it (its kernel died), else None."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
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

    @property
    def delivered(self) -> bool:
        """Whether the writer moved on and the guard accepted every record."""
        return self.sealed is not None and self.acked >= self.sealed

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
        data = data.split(b"\0", 1)[0]  # the zero-filled rest of the file
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
        rest = os.pread(self.fd, limit - position, position).split(b"\0", 1)[0]
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
        """Release the mapping, the lock and the file."""
        if self.map is not None:
            self.map.close()
            self.map = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _read_acked(path: Path) -> int:
    try:
        return int(path.with_name(path.name + _ACKED).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def _seal(segment: Segment) -> int:
    """Close ``segment``'s mapping and return how many of its bytes hold records.

    A writer that took the mapping before it stopped being current may still copy
    one more line into it until it is closed, so the end is read after closing:
    records end at the first zero byte.
    """
    mapped, segment.map = segment.map, None
    if mapped is None:
        return segment.sealed or 0
    position = mapped.tell()
    mapped.close()
    while True:
        chunk = os.pread(segment.fd, 64 * 1024, position)
        zero = chunk.find(b"\0")
        if zero >= 0:
            return position + zero
        if not chunk:
            return position
        position += len(chunk)


class Spool:
    """This process's writer into the spool, and the finder of orphaned segments."""

    def __init__(
        self,
        directory: str | Path,
        kernel_id: str,
        instance: str,
        *,
        segment_bytes: int = SEGMENT_BYTES,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.prefix = f"{kernel_id}.{instance}."
        self.segment_bytes = segment_bytes
        self.log = logger or log
        self._lock = threading.Lock()
        self._number = 0
        self._current: Segment | None = None
        self._spare: Segment | None = None
        # The current segment's mapping (None: closed). Its position is where the
        # next record goes: the bytes before it hold complete records.
        self._map: mmap.mmap | None = None
        #: Earlier segments of this process (full, ``sealed``) not yet all accepted.
        self.retired: list[Segment] = []
        self.lost = 0
        self._warned = False

    def open(self) -> None:
        """Create the folder (0700) and this process's first segment."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        first = self._new_segment(self.segment_bytes)
        with self._lock:
            self._use(first)

    def _new_segment(self, size: int) -> Segment:
        with self._lock:
            number = self._number
            self._number += 1
        return Segment.create(self.directory / f"{self.prefix}{number:06d}{_SUFFIX}", size)

    def prepare(self) -> None:
        """Make the next segment ready (the shipper's thread does it, off the cell path)."""
        if self._spare is not None or self._current is None:
            return
        try:
            spare = self._new_segment(self.segment_bytes)
        except OSError as error:
            self.log.warning("nbguard: could not prepare a spool segment: %s", error)
            return
        with self._lock:
            if self._spare is None and self._current is not None:
                self._spare = spare
                return
        spare.remove()

    @property
    def current(self) -> Segment | None:
        """The segment records are written to now."""
        return self._current

    def append(self, line: bytes) -> bool:
        """Write one record (``line`` ends with a newline); False if it could not be kept.

        A copy into the mapped segment: no system call, unless the segment is full
        and no next one is ready. Never raises: a full disk must not break the
        user's cell; a lost record leaves a gap in ``seq``, which the guard reports.
        """
        try:
            # mmap.write is one C call, so atomic under the interpreter lock: it copies
            # the line at the mapping's position and moves the position past it, or
            # raises ValueError having written nothing (no room left, or the mapping
            # was closed by a switch to the next segment). No lock on the cell path.
            self._map.write(line)  # type: ignore[union-attr]
        except (ValueError, AttributeError):  # full, switched, or closed (None)
            with self._lock:
                return self._append_locked(line)
        return True

    def _append_locked(self, line: bytes) -> bool:
        """:meth:`append` when the line did not go in. Called with the lock held."""
        # Writers in other threads take no lock: between a switch and this thread's
        # write they may fill the new segment too (only tiny segments make that
        # likely), so this switches again until the line fits.
        for _ in range(_SWITCHES):
            mapped, segment = self._map, self._current
            if mapped is None or segment is None:
                return self._lose("the spool is closed")
            with contextlib.suppress(ValueError):  # full (or closed by another writer)
                mapped.write(line)
                return True
            try:
                self._next_segment(segment, len(line))
            except OSError as error:
                return self._lose(os.strerror(error.errno or errno.EIO))
        return self._lose("other threads filled every new segment first")

    def _use(self, segment: Segment | None) -> None:
        """Make ``segment`` the one records are written to. Called with the lock held."""
        self._current = segment
        self._map = segment.map if segment is not None else None

    def _next_segment(self, full: Segment, needed: int) -> None:
        """Seal the full segment and switch to the spare (or a new one). Called with
        the lock held."""
        spare, self._spare = self._spare, None
        if spare is None or spare.map is None or len(spare.map) < needed:
            if spare is not None:
                spare.remove()
            path = self.directory / f"{self.prefix}{self._number:06d}{_SUFFIX}"
            self._number += 1
            spare = Segment.create(path, max(self.segment_bytes, needed))
        self._use(spare)
        full.sealed = _seal(full)
        self.retired.append(full)

    def keep_ready(self) -> None:
        """Keep the pages the next records go to writable (the shipper calls it)."""
        mapped = self._map
        if mapped is not None:
            with contextlib.suppress(ValueError):  # closed by a switch meanwhile
                populate(mapped, mapped.tell(), READY_BYTES)

    def retire_done(self) -> None:
        """Remove the full segments whose records the guard has all accepted."""
        with self._lock:
            done = [old for old in self.retired if old.delivered]
            self.retired = [old for old in self.retired if old not in done]
        for old in done:
            old.remove()

    def _lose(self, why: str) -> bool:
        self.lost += 1
        if not self._warned:
            self._warned = True
            self.log.error("nbguard: could not spool an execution record (%s); it is lost", why)
        return False

    def snapshot(self) -> tuple[Segment | None, int]:
        """The current segment and how many of its bytes hold complete records."""
        with self._lock:
            segment, mapped = self._current, self._map
            return segment, mapped.tell() if mapped is not None else 0

    def close(self, *, remove_if_done: bool = True) -> None:
        """Stop writing; segments whose records were all accepted are removed."""
        with self._lock:
            segment = self._current
            self._use(None)
            spare, self._spare = self._spare, None
            retired, self.retired = self.retired, []
        if spare is not None:
            spare.remove()
        for old in retired:
            if remove_if_done and old.delivered:
                old.remove()
            else:
                old.close()
        if segment is None:
            return
        if remove_if_done and segment.acked >= _seal(segment):
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
