"""The shipper: a daemon thread that delivers spooled records to the guard service.

It sends ``POST {NBGUARD_GUARD_URL}api/v1/executions`` with
``{"witness": "kernel", "records": [...]}`` (at most ``batch_size`` records and
1 MiB of JSON, the spooled lines sent as they are) and the server's token, and
moves a segment's ``.acked`` mark past a batch only after a ``200``. Batches go
in spool order, one at a time, so each stream arrives in ``seq`` order; a batch
sent again after a lost answer is recorded once, because the guard ignores
records it already has (same witness, kernel, instance and seq).

- Unreachable guard, ``5xx``, ``401``, ``403``, ``404``, ``408``, ``429``: the same batch is
  sent again after an exponential back-off with jitter (``retry_initial`` doubling
  up to ``retry_max``); nothing is dropped. One log line when delivery stops
  working, one when it works again.
- A batch refused as malformed (``400``, ``409``, ``413``, ``415``, ``422``) is split in halves
  and retried, down to the single record the guard refuses, which is moved to
  ``quarantine.jsonl`` (and logged) so that it cannot block the rest.
- It also ships the segments of this user's kernels that died (killed, or the
  server restarted), found by their free lock every ``poll_interval`` seconds.

Between batches it refreshes the user's grants (``GET api/v1/me``) for the
recorder's ``privileged`` flag when the last look is older than
``privilege_cache_seconds``; a cell never waits for that.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from nbguard.delivery import REFUSED_STATUSES, backoff_seconds
from nbguard.kernel_hooks.identity import ServerEnvironment
from nbguard.kernel_hooks.recorder import complete_line
from nbguard.kernel_hooks.spool import Line, Segment, Spool

log = logging.getLogger("nbguard.kernel_hooks")

#: Bytes of records per batch, leaving room for the envelope under the guard's 1 MiB.
BATCH_BYTES = 1024 * 1024 - 4096
#: Statuses after which the same batch is tried again later.
RETRY_STATUSES = frozenset({401, 403, 404, 408, 429})


@dataclass
class Answer:
    """The guard's answer to one request (status 0: no answer at all)."""

    status: int
    body: bytes = b""
    reason: str = ""

    def message(self) -> str:
        """The guard's error message, or the reason the request failed."""
        try:
            error = json.loads(self.body).get("error", {})
            return str(error.get("message") or self.reason)
        except (ValueError, AttributeError):
            return self.reason or f"HTTP {self.status}"


class Privileges:
    """The kernel's last look at whether the user holds an elevated grant or role."""

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self.value = False
        self.fetched = float("-inf")

    def __call__(self) -> bool:
        """The last value seen (never waits)."""
        return self.value

    def stale(self) -> bool:
        """Whether it is time to look again."""
        return time.monotonic() - self.fetched >= self.max_age

    def update(self, me: object) -> None:
        """Take ``GET api/v1/me``'s answer."""
        if isinstance(me, dict):
            self.value = bool(me.get("elevated_roles") or me.get("grants"))
            self.fetched = time.monotonic()


class Shipper:
    """Delivers the spool's records in a background thread."""

    def __init__(
        self,
        spool: Spool,
        environment: ServerEnvironment,
        *,
        batch_size: int = 500,
        flush_delay: float = 0.5,
        poll_interval: float = 5.0,
        retry_initial: float = 0.5,
        retry_max: float = 60.0,
        timeout: float = 30.0,
        privileges: Privileges | None = None,
        send: Callable[[str, str, bytes | None], Answer] | None = None,
        on_exit: Callable[[], None] | None = None,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        self.spool = spool
        # The kernel application's log (the server's console), never the notebook:
        # an unconfigured logger would print into the running cell's stderr.
        self.log = logger or log
        self.environment = environment
        self.url = environment.guard_url + "api/v1/executions"
        self.batch_size = batch_size
        self.flush_delay = flush_delay
        self.poll_interval = poll_interval
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.timeout = timeout
        self.privileges = privileges
        self.send = send or self._http
        self.on_exit = on_exit
        self.wakeup = threading.Event()
        self._sleeping = False
        self._stop = threading.Event()
        self._drain = False
        self._thread: threading.Thread | None = None
        self._failures = 0
        self._next_scan = 0.0
        self._orphans: list[Segment] = []
        self._sent_at_refresh = -1
        #: Counters, for status() and tests.
        self.sent = 0
        self.batches = 0
        self.quarantined = 0
        self.last_error = ""

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the background thread."""
        self._thread = threading.Thread(target=self._run, name="nbguard-shipper", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """A record was spooled (called on the cell path).

        Only the first record after the shipper went to sleep sets the event: the
        records after it are picked up by the same round, and a cell does not pay
        for waking a thread (which also competes for the interpreter lock).
        """
        if self._sleeping:
            self._sleeping = False
            self.wakeup.set()

    def drain_and_stop(self) -> None:
        """Deliver what is spooled, then stop (the hooks were unloaded)."""
        self._drain = True
        self.wakeup.set()

    def stop(self, timeout: float) -> None:
        """Try to deliver what is left for up to ``timeout`` seconds, then stop."""
        self._drain = True
        self.wakeup.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout)
        self._stop.set()
        self.wakeup.set()
        if thread is not None and thread.is_alive():
            thread.join(1.0)

    @property
    def alive(self) -> bool:
        """Whether the thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                progressed = self.ship_pending()
            except Exception:  # never let the thread die on a surprise
                self.log.exception("nbguard: the execution record shipper failed; retrying")
                progressed = False
                self._failures += 1
            if self._drain and not self._failures and not self.pending():
                break
            if self._failures:
                self._stop.wait(self.backoff())
            elif not progressed:
                self._sleep()
        self._release_orphans()
        if self.on_exit is not None:
            self.on_exit()

    def _sleep(self) -> None:
        """Wait for a new record (or the poll interval), then a little for more to come."""
        self.wakeup.clear()
        self._sleeping = True
        if not self.pending():  # a record spooled before _sleeping was set
            self.wakeup.wait(self.poll_interval)
        self._sleeping = False
        if self.flush_delay > 0 and not self._drain:
            self._stop.wait(self.flush_delay)

    def backoff(self) -> float:
        """Seconds to wait before the next try (see ``nbguard.delivery``)."""
        return backoff_seconds(self._failures, initial=self.retry_initial, maximum=self.retry_max)

    # -- shipping ----------------------------------------------------------------------

    def pending(self) -> bool:
        """Whether this process's records or adopted orphans wait to be sent."""
        segment, committed = self.spool.snapshot()
        mine = segment is not None and segment.acked < committed
        return mine or bool(self.spool.retired) or bool(self._orphans)

    def ship_pending(self) -> bool:
        """Send everything that waits, a batch at a time; True if anything was delivered."""
        now = time.monotonic()
        if now >= self._next_scan:
            self._next_scan = now + self.poll_interval
            self._orphans.extend(self.spool.orphans())
        progressed = False
        for segment in list(self._orphans):
            if not self._ship_segment(segment, None):
                return progressed
            progressed = True
            segment.remove()
            self._orphans.remove(segment)
        for segment in list(self.spool.retired):  # full segments of this process, in order
            if segment.sealed is not None and segment.acked < segment.sealed:
                if not self._ship_segment(segment, segment.sealed):
                    return progressed
                progressed = True
        self.spool.retire_done()
        current, committed = self.spool.snapshot()
        if current is not None and current.acked < committed:
            if not self._ship_segment(current, committed):
                return progressed
            progressed = True
        self.spool.prepare()
        self.spool.keep_ready()
        self._refresh_privileges()
        return progressed

    def _ship_segment(self, segment: Segment, limit: int | None) -> bool:
        """Send ``segment`` up to byte ``limit`` (its end for an orphan); False on failure."""
        size = self.batch_size
        while True:
            end = limit if limit is not None else segment.size()
            lines, torn = segment.lines(end, size, BATCH_BYTES)
            for line in lines:  # what the recorder left to do off the cell path
                line.data = complete_line(line.data)
            if not lines:
                if torn:  # a dead writer's last, partial line
                    self.spool.quarantine(segment, Line(torn, end), 0, "incomplete record")
                    self.quarantined += 1
                    segment.ack(end)
                return True
            answer = self.send("POST", self.url, _batch(lines))
            if answer.status == 200:
                segment.ack(lines[-1].end)
                self.sent += len(lines)
                self.batches += 1
                self._recovered()
                size = self.batch_size
                continue
            if answer.status in REFUSED_STATUSES:
                if len(lines) > 1:
                    size = max(1, len(lines) // 2)
                    continue
                self._quarantine(segment, lines[0], answer)
                size = self.batch_size
                continue
            self._failed(answer)
            return False

    def _quarantine(self, segment: Segment, line: Line, answer: Answer) -> None:
        message = answer.message()
        self.log.error(
            "nbguard: the guard refused an execution record (%s %s); it is kept in %s",
            answer.status,
            message,
            self.spool.directory / "quarantine.jsonl",
        )
        self.spool.quarantine(segment, line, answer.status, message)
        self.quarantined += 1
        segment.ack(line.end)

    def _failed(self, answer: Answer) -> None:
        self._failures += 1
        self.last_error = f"{answer.status or 'no answer'}: {answer.message()}"
        if self._failures == 1:
            self.log.warning(
                "nbguard: execution records cannot be delivered to the guard service now "
                "(%s); they wait in the spool and will be sent when it answers",
                self.last_error,
            )

    def _recovered(self) -> None:
        if self._failures:
            self.log.warning("nbguard: execution records are being delivered again")
        self._failures = 0

    def _refresh_privileges(self) -> None:
        privileges = self.privileges
        # Look only while cells run: an idle kernel does not poll the guard.
        if privileges is None or self.sent == self._sent_at_refresh or not privileges.stale():
            return
        self._sent_at_refresh = self.sent
        answer = self.send("GET", self.environment.guard_url + "api/v1/me", None)
        if answer.status == 200:
            with contextlib.suppress(ValueError):
                privileges.update(json.loads(answer.body))
        else:
            privileges.fetched = time.monotonic()  # look again later, not on every batch

    def _release_orphans(self) -> None:
        for segment in self._orphans:
            segment.close()
        self._orphans.clear()

    # -- HTTP --------------------------------------------------------------------------

    def _http(self, method: str, url: str, body: bytes | None) -> Answer:
        """One request with the server's token; never raises."""
        headers = {"Authorization": f"token {self.environment.token}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=body, headers=headers, method=method)  # noqa: S310
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                return Answer(response.status, response.read())
        except urllib.error.HTTPError as error:
            try:
                body = error.read() if error.fp is not None else b""
            finally:
                error.close()
            return Answer(error.code, body, str(error.reason))
        except (OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            return Answer(0, b"", str(reason))


def _batch(lines: list[Line]) -> bytes:
    return b'{"witness":"kernel","records":[' + b",".join(x.data for x in lines) + b"]}"


# No proxy from the environment between a kernel and its guard, and no redirects
# followed with the token.
class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
