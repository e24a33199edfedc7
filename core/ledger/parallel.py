"""Verifying a database ledger's records in several processes.

Every record can be checked on its own against the *stored* hash of the record
before it; if each record's recomputed hash equals its stored one, the stored
hashes form the chain. So the records are cut into consecutive ranges, checked
by this process (from the front) and by helper processes (``python -m
nbguard.ledger.ranges``, from the back), and the ranges are joined in order, each
required to start from the hash the range before it ended on.

Helpers read the database themselves. On PostgreSQL they join this process's
snapshot (``pg_export_snapshot``), so all see one consistent view; on SQLite each
helper reads its own snapshot, and a record rewritten while verification runs
shows up as a range that does not join. Helpers take ranges as they finish, so a
slow start or a busy core costs only their share; a helper that fails to start
or dies is replaced by this process checking its ranges itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Collection
from typing import IO, Any

from nbguard.ledger.chain import Segment
from nbguard.ledger.ranges import check_range, join_segments, segment_from_json

log = logging.getLogger(__name__)

#: Records per range handed out; small enough that helpers keep busy to the end.
RANGE_SIZE = 4_000
#: Ranges sent to a helper ahead of its answers, so it never waits for this process.
_AHEAD = 2
#: Seconds without any answer after which helpers count as hung.
_PATIENCE = 120


def available_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


#: How a helper process is started.
HELPER_COMMAND = [sys.executable, "-m", "nbguard.ledger.ranges"]


class _Helper:
    """One helper process and the thread that reads its answers."""

    def __init__(self, job: dict[str, Any], answers: queue.Queue[tuple[_Helper, Any]]) -> None:
        self.errors: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        try:
            self.process = subprocess.Popen(  # noqa: S603 - this interpreter, our module
                HELPER_COMMAND,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.errors,
                text=True,
            )
        except OSError:
            self.errors.close()
            raise
        #: Ranges sent and not answered yet, in the order sent (the helper's order).
        self.pending: list[int] = []
        #: False once the helper cannot be trusted with more: it died or talked nonsense.
        self.alive = True
        self._answers = answers
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.send(job)

    def send(self, message: dict[str, Any]) -> bool:
        """Send one line; False (and the helper counts as dead) if it cannot be sent."""
        if not self.alive or self.process.stdin is None:
            return False
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except (OSError, ValueError):
            self.alive = False
        return self.alive

    def _read(self) -> None:
        assert self.process.stdout is not None  # noqa: S101 - opened with PIPE
        for line in self.process.stdout:
            self._answers.put((self, line))
        self._answers.put((self, None))  # the helper has exited

    def stop(self, *, kill: bool) -> None:
        """End the helper (at once with ``kill``) and release its pipes."""
        kill = kill or not self.alive
        ended = self.process.poll()  # on its own, before being told to
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):  # already gone
                self.process.stdin.close()
        if kill:
            self.process.kill()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung helper
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=5)
        if self.process.stdout is not None and not self._reader.is_alive():
            self.process.stdout.close()
        code = ended if ended is not None else None if kill else self.process.returncode
        if code not in (None, 0):
            self.errors.seek(0)
            detail = self.errors.read()[-2000:].decode("utf-8", "replace").strip()
            log.warning(
                "ledger verification helper exited with %s; its ranges were checked here: %s",
                code,
                detail,
            )
        self.errors.close()


def check_in_parallel(
    connection: Any,
    dialect: str,
    total: int,
    wanted: Collection[int],
    job: dict[str, Any],
    helpers: int,
    progress: Callable[[int], None] | None = None,
) -> Segment:
    """Check records ``1..total`` with this process and up to ``helpers`` helper processes.

    ``connection`` is this process's DB-API connection, in its read transaction;
    ``job`` tells helpers how to connect (``dialect``, ``args``, ``kwargs`` and,
    on PostgreSQL, ``snapshot``).
    """
    work = _Work(connection, dialect, total, wanted, progress)
    job = {**job, "wanted": sorted(wanted)}
    started: list[_Helper] = []
    answers: queue.Queue[tuple[_Helper, Any]] = queue.Queue()
    try:
        for _ in range(helpers):
            try:
                helper = _Helper(job, answers)
            except OSError as error:
                log.warning("cannot start a ledger verification helper: %s", error)
                break
            started.append(helper)
            work.hand_out(helper)
        while not work.failed:
            index = work.next_here(started)
            if index is None:
                break
            work.check_here(index)
            work.take_answers(answers, started, block=False)
        while not work.failed and any(helper.pending for helper in started):
            work.take_answers(answers, started, block=True)
    finally:
        for helper in started:
            helper.stop(kill=work.failed)
    return work.joined()


class _Work:
    """The ranges of one parallel verification and who checks which."""

    def __init__(
        self,
        connection: Any,
        dialect: str,
        total: int,
        wanted: Collection[int],
        progress: Callable[[int], None] | None,
    ) -> None:
        self.connection = connection
        self.dialect = dialect
        self.wanted = wanted
        self.progress = progress
        self.ranges = [
            (lo, min(lo + RANGE_SIZE - 1, total)) for lo in range(1, total + 1, RANGE_SIZE)
        ]
        self.results: dict[int, Segment] = {}
        #: This process takes ranges from the front, helpers from the back.
        self.front, self.back = 0, len(self.ranges)
        self.done = 0
        self.failed = False

    def hand_out(self, helper: _Helper) -> None:
        """Keep ``helper`` supplied with ranges from the back."""
        while helper.alive and len(helper.pending) < _AHEAD and self.front < self.back:
            self.back -= 1
            helper.pending.append(self.back)
            lo, hi = self.ranges[self.back]
            if not helper.send({"chunk": self.back, "lo": lo, "hi": hi}):
                self._take_back(helper)

    def next_here(self, helpers: list[_Helper]) -> int | None:
        """The next range for this process: from the front, else one a helper has not begun."""
        if self.front < self.back:
            self.front += 1
            return self.front - 1
        for helper in helpers:
            if len(helper.pending) > 1:  # the first is under way; the last can be taken back
                return helper.pending.pop()
        return None

    def check_here(self, index: int) -> None:
        """Check one range in this process."""
        self._record(
            index, check_range(self.connection, self.dialect, *self.ranges[index], self.wanted)
        )

    def _record(self, index: int, segment: Segment) -> None:
        if index in self.results:  # taken back, and the helper answered anyway
            return
        self.results[index] = segment
        lo, hi = self.ranges[index]
        self.done += hi - lo + 1
        if self.progress is not None:
            self.progress(self.done)
        if segment.failure is not None and all(i in self.results for i in range(index)):
            self.failed = True  # the first failure: nothing after it can matter

    def take_answers(
        self, answers: queue.Queue[tuple[_Helper, Any]], helpers: list[_Helper], *, block: bool
    ) -> None:
        """Take the helpers' answers that have arrived (with ``block``, wait for one)."""
        while True:
            try:
                helper, line = answers.get(block=block, timeout=_PATIENCE if block else None)
            except queue.Empty:
                if block:  # hung helpers: check what they hold here
                    for stuck in helpers:
                        self._take_back(stuck)
                return
            if line is None:  # exited: whatever it still held is checked here
                self._take_back(helper)
            else:
                try:
                    answer = json.loads(line)
                    index = int(answer["chunk"])
                    segment = segment_from_json(answer["segment"])
                    if index not in helper.pending and index not in self.results:
                        raise ValueError(f"answer for range {index}, which it was not given")
                except (ValueError, KeyError, TypeError) as error:
                    log.warning(
                        "ledger verification helper answered nonsense (%s); "
                        "its ranges were checked here",
                        error,
                    )
                    helper.alive = False
                    self._take_back(helper)
                else:
                    if index in helper.pending:
                        helper.pending.remove(index)
                    self._record(index, segment)
                    self.hand_out(helper)
            if block or answers.empty():
                return

    def _take_back(self, helper: _Helper) -> None:
        while helper.pending:
            self.check_here(helper.pending.pop())

    def joined(self) -> Segment:
        """The ranges checked, joined in order up to the first gap or failure."""
        ordered = []
        for index in range(len(self.ranges)):
            if index not in self.results:
                break
            ordered.append(self.results[index])
        return join_segments(ordered)
