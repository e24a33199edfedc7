"""Recording every execution of the kernel, silent ones included, into the spool.

IPython's ``pre_execute`` and ``post_execute`` events fire for every execution,
silent or not (``pre_run_cell``/``post_run_cell`` skip silent ones, and
``post_run_cell`` comes after ``post_execute``). So a cell starts at
``pre_execute`` and its record is written at ``post_execute``, from the
``ExecutionResult`` IPython has just stored in ``shell.last_execution_result``:
the source, silence, execution count and error. The Jupyter message that asked
for it (``kernel.get_parent()``) gives the ``msg_id`` and the frontend's
``metadata.cellId``. Two cases fire no ``pre_execute``: a blank cell (recorded at
``post_execute`` with no duration), and a request the kernel aborted after an
earlier error (recorded from the kernel's abort reply, status ``aborted``).

The record is built and appended to the spool before ``run_cell`` returns; it
never waits on the network (the shipper, a background thread, sends it). Each
record takes the next ``seq`` of the process's stream when it is written, so the
spool always holds a stream in order, without gaps.

Outputs reach the digest (:mod:`~nbguard.kernel_hooks.outputs`) through
wrappers on ``sys.stdout``/``sys.stderr`` ``write``, the display publisher and the
display hook, installed once when the hooks load; they pass everything through
unchanged, and do nothing once the hooks are unloaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from nbguard.kernel_hooks.identity import Stream
from nbguard.kernel_hooks.outputs import EMPTY_DIGEST, CellOutputs
from nbguard.kernel_hooks.redaction import Redactor
from nbguard.kernel_hooks.spool import Spool

#: What the guard accepts as a message or cell id; anything else is recorded as "".
_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
#: The guard's limits on a kernel record (nbguard.executions.models).
MAX_OUTPUT_TEXT = 64 * 1024
MAX_ERROR_NAME = 256
MAX_RESOURCES = 256


class Cell:
    """One execution in progress."""

    __slots__ = (
        "before",
        "cell_id",
        "code",
        "msg_id",
        "nested",
        "outputs",
        "resources",
        "silent",
        "started",
        "t0",
    )

    def __init__(self, msg_id: str, cell_id: str, code: str | None, silent: bool) -> None:
        self.msg_id = msg_id
        self.cell_id = cell_id
        #: The source as the request carried it (used when IPython stored no result).
        self.code = code
        self.silent = silent
        #: Run by another cell's code (get_ipython().run_cell): no request of its own.
        self.nested = False
        self.started = time.time()
        self.t0 = time.perf_counter()
        self.outputs: CellOutputs | None = None
        self.resources: list[str] = []
        self.before: Any = None


def rfc3339(moment: float) -> str:
    """``moment`` (seconds since the epoch) as RFC 3339 UTC with milliseconds and ``Z``."""
    millis = int(moment * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{millis:03d}Z"


#: JSON for a string, exactly as json.dumps(..., ensure_ascii=False) writes it (C-accelerated).
_string: Callable[[str], str] = json.encoder.encode_basestring  # type: ignore[attr-defined]


def _plain_id(value: Any) -> str:
    return value if isinstance(value, str) and _ID.fullmatch(value) else ""


class Recorder:
    """Writes one record per execution of ``shell`` to ``spool``."""

    def __init__(
        self,
        shell: Any,
        stream: Stream,
        spool: Spool,
        *,
        max_code_bytes: int,
        text_limit: int = 0,
        redactor: Redactor | None = None,
        privileged: Callable[[], bool] = lambda: False,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.shell = shell
        self.stream = stream
        self.spool = spool
        self.max_code_bytes = max_code_bytes
        self.text_limit = min(text_limit, MAX_OUTPUT_TEXT - 200) if redactor else 0
        self.redactor = redactor
        self.privileged = privileged
        self.wake = wake
        self.kernel = getattr(shell, "kernel", None)
        self.active = False
        self._local = threading.local()
        self._latest: Cell | None = None
        self._last_result: Any = None
        self._pid = os.getpid()
        self._undo: list[Callable[[], None]] = []
        kernel_id, instance = _string(stream.kernel_id), _string(stream.instance)
        self._head = f'{{"kernel_id":{kernel_id},"instance":{instance},"seq":'
        self._second = -1
        self._second_text = ""
        self._fork_hooked = False

    # -- installing ----------------------------------------------------------------------

    def install(self) -> None:
        """Register the events and the output wrappers."""
        self.active = True
        self._last_result = getattr(self.shell, "last_execution_result", None)
        self.shell.events.register("pre_execute", self.pre_execute)
        self.shell.events.register("post_execute", self.post_execute)
        self._undo.append(lambda: self.shell.events.unregister("pre_execute", self.pre_execute))
        self._undo.append(lambda: self.shell.events.unregister("post_execute", self.post_execute))
        for name in ("stdout", "stderr"):
            self._wrap(getattr(sys, name), "write", self._stream_writer(name))
        self._wrap(self.shell.display_pub, "publish", self._publisher)
        self._wrap(self.shell.display_pub, "clear_output", self._clearer)
        self._wrap(self.shell.displayhook, "write_format_data", self._result_writer)
        if self.kernel is not None:
            self._wrap(self.kernel, "_send_abort_reply", self._abort_recorder)
        if not self._fork_hooked:  # cannot be unregistered: once per recorder
            self._fork_hooked = True
            os.register_at_fork(after_in_child=self._forked)

    def uninstall(self) -> None:
        """Record the cells still running (as they are now), then stop recording."""
        for cell in reversed(self._stack()):
            self._write(cell, None, status="ok")
        self._stack().clear()
        self._latest = None
        self.active = False
        for undo in reversed(self._undo):
            with contextlib.suppress(ValueError):  # an event callback already gone
                undo()
        self._undo.clear()

    def _forked(self) -> None:
        # A forked child (multiprocessing) runs no cells and must not write to the
        # parent's stream.
        self.active = False

    def _wrap(self, target: Any, name: str, make: Callable[[Any], Any]) -> None:
        """Replace ``target.name`` with ``make(original)``; undone by :meth:`uninstall`."""
        original = getattr(target, name, None)
        if original is None:
            return
        wrapper = make(original)
        own = name in getattr(target, "__dict__", {})
        try:
            setattr(target, name, wrapper)
        except (AttributeError, TypeError):
            return

        def undo() -> None:
            if getattr(target, name, None) is not wrapper:
                return  # someone wrapped it after us; our wrapper stays, inactive
            if own:
                setattr(target, name, original)
            else:
                delattr(target, name)

        self._undo.append(undo)

    # -- the running cell --------------------------------------------------------------

    def _stack(self) -> list[Cell]:
        try:
            stack: list[Cell] = self._local.stack
        except AttributeError:
            stack = self._local.stack = []
        return stack

    def running(self) -> Cell | None:
        """The innermost cell running in this thread, else the latest started anywhere."""
        stack = self._stack()
        return stack[-1] if stack else self._latest

    def _outputs(self) -> CellOutputs | None:
        if not self.active:
            return None
        cell = self.running()
        if cell is None:
            return None
        if cell.outputs is None:
            cell.outputs = CellOutputs(self.text_limit)
        return cell.outputs

    def cell_header(self) -> str | None:
        """``X-NBGuard-Cell`` for the running cell.

        ``seq`` is the one its record will take if no other record is written
        first (exact unless cells nest or subshells run cells at the same time).
        """
        cell = self.running() if self.active else None
        if cell is None:
            return None
        return json.dumps(
            {
                "kernel_id": self.stream.kernel_id,
                "instance": self.stream.instance,
                "seq": self.stream.issued,
                "msg_id": cell.msg_id,
                "cell_id": cell.cell_id,
            },
            separators=(",", ":"),
        )

    def touch(self, resource: str) -> None:
        """The running cell touched ``resource`` (``dataset:sales``)."""
        cell = self.running() if self.active else None
        if (
            cell is not None
            and resource not in cell.resources
            and len(cell.resources) < MAX_RESOURCES
        ):
            cell.resources.append(resource)

    # -- events ------------------------------------------------------------------------

    def pre_execute(self) -> None:
        """An execution starts (silent or not)."""
        if not self.active:
            return
        stack = self._stack()
        if stack:  # nested run_cell: its requests are tagged with the outer request
            outer = stack[-1]
            cell = Cell(outer.msg_id, outer.cell_id, None, False)
            cell.nested = True
        else:
            cell = self._from_request(self.kernel.get_parent() if self.kernel else None)
        cell.before = self.shell.last_execution_result
        stack.append(cell)
        self._latest = cell

    def post_execute(self) -> None:
        """An execution ended: write its record."""
        if not self.active:
            return
        result = self.shell.last_execution_result
        stack = self._stack()
        if result is not None and result is not self._last_result:
            raw = result.info.raw_cell
            if not raw or raw.isspace():
                # A blank cell returns before pre_execute: it has no cell of its own.
                self._last_result = result
                parent = self.kernel.get_parent() if self.kernel and not stack else None
                self._write(self._from_request(parent), result)
                return
        if not stack:
            return
        cell = stack.pop()
        self._latest = stack[-1] if stack else None
        if result is cell.before or result is self._last_result:
            result = None  # IPython stored no result for it (cancelled)
        else:
            self._last_result = result
        self._write(cell, result)

    def _from_request(self, parent: Any) -> Cell:
        """A new cell named after the Jupyter request ``parent`` (if it is one)."""
        if not isinstance(parent, dict):
            return Cell("", "", None, False)
        header = parent.get("header") or {}
        content = parent.get("content") or {}
        metadata = parent.get("metadata") or {}
        code = content.get("code") if isinstance(content.get("code"), str) else None
        return Cell(
            _plain_id(header.get("msg_id")),
            _plain_id(metadata.get("cellId")),
            code,
            bool(content.get("silent")),
        )

    # -- wrappers ----------------------------------------------------------------------

    def _stream_writer(self, name: str) -> Callable[[Any], Any]:
        def make(original: Any) -> Any:
            def write(text: Any, *args: Any, **kwargs: Any) -> Any:
                outputs = self._outputs()
                if outputs is not None and isinstance(text, str):
                    outputs.stream(name, text)
                return original(text, *args, **kwargs)

            return write

        return make

    def _publisher(self, original: Any) -> Any:
        def publish(data: Any, *args: Any, **kwargs: Any) -> Any:
            outputs = self._outputs()
            if outputs is not None and isinstance(data, dict):
                kind = "update_display_data" if kwargs.get("update") else "display_data"
                outputs.bundle(kind, data)
            return original(data, *args, **kwargs)

        return publish

    def _clearer(self, original: Any) -> Any:
        def clear_output(*args: Any, **kwargs: Any) -> Any:
            outputs = self._outputs()
            if outputs is not None:
                outputs.clear()
            return original(*args, **kwargs)

        return clear_output

    def _result_writer(self, original: Any) -> Any:
        def write_format_data(format_dict: Any, *args: Any, **kwargs: Any) -> Any:
            outputs = self._outputs()
            if outputs is not None and isinstance(format_dict, dict):
                outputs.bundle("execute_result", format_dict)
            return original(format_dict, *args, **kwargs)

        return write_format_data

    def _abort_recorder(self, original: Any) -> Any:
        def send_abort_reply(stream: Any, msg: Any, idents: Any) -> Any:
            if self.active and isinstance(msg, dict):
                header = msg.get("header") or {}
                if header.get("msg_type") == "execute_request":
                    self._write(self._from_request(msg), None, status="aborted")
            return original(stream, msg, idents)

        return send_abort_reply

    # -- writing -----------------------------------------------------------------------

    def _write(self, cell: Cell, result: Any, *, status: str = "") -> None:
        """Build the record of ``cell`` and append it to the spool."""
        if os.getpid() != self._pid:
            return
        duration_ms = int((time.perf_counter() - cell.t0) * 1000)
        error: BaseException | None = None
        if result is not None:
            info = result.info
            code = info.raw_cell
            silent = bool(info.silent)
            count = result.execution_count
            cell_id = cell.cell_id or _plain_id(getattr(info, "cell_id", None))
            error = result.error_before_exec or result.error_in_exec
        else:
            code = cell.code or ""
            silent = cell.silent
            count = None
            cell_id = cell.cell_id
            if not status:
                error = sys.exc_info()[1]  # post_execute runs in a finally block
        if error is not None:
            status = "error"
        elif not status:
            status = "ok" if result is not None else "aborted"
        outputs = cell.outputs
        error_name = ""
        if error is not None:
            error_name = type(error).__name__[:MAX_ERROR_NAME]
            if outputs is None:
                outputs = cell.outputs = CellOutputs(self.text_limit)
            outputs.error(error_name, _message(error))
        # The line is assembled from pre-encoded parts rather than by json.dumps on a
        # dict: that halves the recorder's time per cell (the budget is 10 µs).
        # Strings go through the json module's own C string encoder, so the line is
        # exactly what json.dumps(..., ensure_ascii=False) would write.
        code, code_sha256, truncated = self._code_fields(code)
        # A nested execution had no execute_request: "" keeps the guard from pairing
        # it with the server's record of the outer cell's request.
        parts = [',"msg_id":', '""' if cell.nested else _string(cell.msg_id)]
        if cell_id:
            parts += [',"cell_id":', _string(cell_id)]
        parts += [',"code":', _string(code)]
        if truncated:
            parts.append(',"code_truncated":true')
        parts += [
            ',"code_sha256":"',
            code_sha256,
            '","execution_count":',
            str(count) if type(count) is int and count >= 0 else "null",
            ',"silent":',
            "true" if silent else "false",
            ',"started":"',
            self._rfc3339(cell.started),
            '","duration_ms":',
            str(duration_ms),
            ',"status":"',
            status,
            '"',
        ]
        if error_name:
            parts += [',"error_name":', _string(error_name)]
        parts += [',"output_digest":"', outputs.digest() if outputs is not None else EMPTY_DIGEST]
        parts.append('"')
        if self.redactor is not None:
            text = outputs.kept_text() if outputs is not None else ""
            parts += [',"output_text":', _string(self.redactor(text)[:MAX_OUTPUT_TEXT])]
        parts += [
            ',"resources":[',
            ",".join(map(_string, cell.resources)),
            '],"privileged":',
            "true" if self.privileged() else "false",
            "}\n",
        ]
        line = f"{self._head}{self.stream.next_seq()}{''.join(parts)}"
        self.spool.append(line.encode("utf-8", "replace"))
        self.wake()

    def _rfc3339(self, moment: float) -> str:
        """:func:`rfc3339`, reusing the formatted second (most cells start in the last one)."""
        second = int(moment)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int(moment * 1000) % 1000:03d}Z"

    def _code_fields(self, code: str) -> tuple[str, str, bool]:
        """The source as recorded, the SHA-256 of all of it, and whether it was cut."""
        try:
            raw = code.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: hashed as they are, kept replaced
            raw = code.encode("utf-8", "surrogatepass")
            code = code.encode("utf-8", "replace").decode("utf-8")
        digest = hashlib.sha256(raw).hexdigest()
        if len(raw) > self.max_code_bytes:
            return raw[: self.max_code_bytes].decode("utf-8", "ignore"), digest, True
        return code, digest, False


def _message(error: BaseException) -> str:
    try:
        return str(error)
    except Exception:  # an exception whose __str__ fails
        return ""
