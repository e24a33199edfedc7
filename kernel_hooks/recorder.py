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
spool always holds a stream in order, without gaps. One part of a record is
finished off the cell path: when the line holds all of an ASCII source, its
``code_sha256`` is spooled as :data:`PENDING_SHA256` and filled in from the line
by whoever ships it (:func:`complete_line`), so what the guard receives is the
same, and a killed kernel's records lose nothing (the source is in the spool).

Outputs reach the digest (:mod:`~nbguard.kernel_hooks.outputs`) through
wrappers on ``sys.stdout``/``sys.stderr`` ``write``, the display publisher and the
display hook, installed once when the hooks load; they pass everything through
unchanged, and do nothing once the hooks are unloaded.
"""

from __future__ import annotations

import contextlib
import functools
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
    """One execution in progress.

    One is made at every ``pre_execute``, inside ``run_cell``, so it keeps only what
    that moment gives (the clocks, the request, IPython's last result); the request's
    fields are read from it when the record is written (:func:`request_fields`).
    """

    __slots__ = ("before", "nested", "outputs", "parent", "resources", "started", "t0")

    def __init__(self, parent: Any, before: Any = None, nested: bool = False) -> None:
        self.t0 = time.perf_counter()
        self.started = time.time()
        #: The Jupyter request (``kernel.get_parent()``) that ran it, if any.
        self.parent = parent
        #: IPython's last result when it started (unchanged at the end: none stored).
        self.before = before
        #: Run by another cell's code (get_ipython().run_cell): no request of its own.
        self.nested = nested
        self.outputs: CellOutputs | None = None
        self.resources: list[str] | None = None


#: JSON for a string, exactly as json.dumps(..., ensure_ascii=False) writes it (C-accelerated).
_string: Callable[[str], str] = json.encoder.encode_basestring  # type: ignore[attr-defined]


#: A timestamp's milliseconds (".000Z" to ".999Z") and the key after it, by index.
_MILLIS = tuple(f'.{millis:03d}Z","duration_ms":' for millis in range(1000))
#: The status field, by status.
_STATUS = {status: f',"status":"{status}"' for status in ("ok", "error", "aborted")}
#: The digest field of a cell without output, and the start of the tail of one
#: that touched no resource.
_NO_OUTPUT = f',"output_digest":"{EMPTY_DIGEST}"'
_NO_RESOURCES = ',"resources":[],"privileged":'
#: Stands for the source's SHA-256 in a spooled line until it is shipped (see
#: complete_line); not hex, so the guard refuses a line that still holds it.
PENDING_SHA256 = "-" * 64
_PENDING_FIELD = f',"code_sha256":"{PENDING_SHA256}"'.encode("ascii")
#: What follows the source when it was cut.
_CUT = ',"code_truncated":true'


def _plain_id(value: Any) -> str:
    return value if isinstance(value, str) and _ID.fullmatch(value) else ""


#: The fields of a cell that no Jupyter request ran.
_NO_REQUEST: tuple[str, str, str | None, bool] = ("", "", None, False)


def request_fields(parent: Any) -> tuple[str, str, str | None, bool]:
    """``(msg_id, cell_id, code, silent)`` of the Jupyter request ``parent``.

    Ids the guard would refuse are given as ""; ``code`` is None unless the request
    carried a string.
    """
    if not isinstance(parent, dict):
        return _NO_REQUEST
    header = parent.get("header")
    content = parent.get("content")
    metadata = parent.get("metadata")
    if not isinstance(content, dict):
        content = {}
    code = content.get("code")
    return (
        _plain_id(header.get("msg_id")) if isinstance(header, dict) else "",
        _plain_id(metadata.get("cellId")) if isinstance(metadata, dict) else "",
        code if isinstance(code, str) else None,
        bool(content.get("silent")),
    )


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
        self._last_execution_result = _trait_reader(shell, "last_execution_result")
        self.active = False
        self._local = threading.local()
        self._latest: Cell | None = None
        self._last_result: Any = None
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
        if self.active:
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
        # A forked child (os.fork, multiprocessing) runs no cells and must not write
        # to the parent's stream (nor into its mapped segment). Every write checks
        # ``active``, so the cell path needs no getpid() system call of its own.
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
        if not self.active:
            return None
        stack = getattr(self._local, "stack", None)
        return stack[-1] if stack else self._latest

    def _outputs(self) -> CellOutputs | None:
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
        cell = self.running()
        if cell is None:
            return None
        msg_id, cell_id, _, _ = request_fields(cell.parent)
        return json.dumps(
            {
                "kernel_id": self.stream.kernel_id,
                "instance": self.stream.instance,
                "seq": self.stream.issued,
                "msg_id": msg_id,
                "cell_id": cell_id,
            },
            separators=(",", ":"),
        )

    def touch(self, resource: str) -> None:
        """The running cell touched ``resource`` (``dataset:sales``)."""
        cell = self.running()
        if cell is None:
            return
        if cell.resources is None:
            cell.resources = []
        if resource not in cell.resources and len(cell.resources) < MAX_RESOURCES:
            cell.resources.append(resource)

    # -- events ------------------------------------------------------------------------

    def pre_execute(self) -> None:
        """An execution starts (silent or not)."""
        if not self.active:
            return
        try:
            stack = self._local.stack
        except AttributeError:
            stack = self._local.stack = []
        if stack:  # nested run_cell: its requests are tagged with the outer request
            cell = Cell(stack[-1].parent, self._last_execution_result(), True)
        else:
            kernel = self.kernel
            parent = kernel.get_parent() if kernel is not None else None
            cell = Cell(parent, self._last_execution_result())
        stack.append(cell)
        self._latest = cell

    def post_execute(self) -> None:
        """An execution ended: write its record."""
        if not self.active:
            return
        result = self._last_execution_result()
        try:
            stack = self._local.stack
        except AttributeError:
            stack = self._local.stack = []
        if result is not self._last_result and result is not None:
            raw = result.info.raw_cell
            if not raw or raw.isspace():
                # A blank cell returns before pre_execute: it has no cell of its own.
                self._last_result = result
                kernel = self.kernel
                parent = kernel.get_parent() if kernel is not None and not stack else None
                self._write(Cell(parent), result)
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
                    self._write(Cell(msg), None, status="aborted")
            return original(stream, msg, idents)

        return send_abort_reply

    # -- writing -----------------------------------------------------------------------

    def _write(self, cell: Cell, result: Any, *, status: str = "") -> None:
        """Build the record of ``cell`` and append it to the spool.

        This runs inside ``run_cell`` for every execution, so it is written for the
        interpreter (benchmarks/kernel.py measures it): one ``str.join`` of a tuple of
        pre-encoded parts (cheaper than ``json.dumps`` on a dict, an f-string or a
        %-format of as many fields), straight-line code, nothing computed for what a
        cell usually lacks (an error, outputs, resources), and the source's hash
        left to the shipper when the line holds all of the source. Strings go through
        the json module's own C string encoder, so the line is exactly what
        ``json.dumps(..., ensure_ascii=False)`` would write.
        """
        duration_ms = int((time.perf_counter() - cell.t0) * 1000)
        msg_id, cell_id, code, silent = request_fields(cell.parent)
        if cell.nested:
            # No execute_request of its own: "" keeps the guard from pairing it with
            # the server's record of the outer cell's request.
            msg_id, code, silent = "", None, False
        error: BaseException | None = None
        count: Any = None
        if result is not None:
            info = result.info
            code = info.raw_cell
            silent = info.silent
            count = result.execution_count
            if not cell_id and getattr(info, "cell_id", None):
                cell_id = _plain_id(info.cell_id)
            error = result.error_before_exec or result.error_in_exec
        elif not status:
            error = sys.exc_info()[1]  # post_execute runs in a finally block
        outputs = cell.outputs
        error_field = ""
        if error is not None:
            status = "error"
            error_name = type(error).__name__[:MAX_ERROR_NAME]
            error_field = ',"error_name":' + _string(error_name)
            if outputs is None:
                outputs = cell.outputs = CellOutputs(self.text_limit)
            outputs.error(error_name, _message(error))
        elif not status:
            status = "ok" if result is not None else "aborted"
        text_field = ""
        if self.redactor is not None:
            text = outputs.kept_text() if outputs is not None else ""
            text_field = ',"output_text":' + _string(self.redactor(text)[:MAX_OUTPUT_TEXT])
        code = code or ""
        if code.isascii() and len(code) <= self.max_code_bytes:
            # The usual source: spooled whole and as it is, so its hash can be taken
            # from the spooled line; the shipper does that (complete_line).
            code_field, code_sha256 = _string(code), PENDING_SHA256
        else:
            code_field, code_sha256 = self._code_fields(code)
        started = cell.started
        if int(started) != self._second:  # most cells start in the second of the last one
            self._second = int(started)
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self._second))
        digest = f',"output_digest":"{outputs.digest()}"' if outputs is not None else _NO_OUTPUT
        if cell.resources:
            resources = ",".join(map(_string, cell.resources))
            tail = f',"resources":[{resources}],"privileged":'
        else:
            tail = _NO_RESOURCES
        tail += "true}\n" if self.privileged() else "false}\n"
        # The seq is taken last, so that nothing can fail after it (a gap). Fixed
        # text is in as few parts as it can be: each part costs a little.
        line = "".join(
            (
                self._head,
                str(self.stream.next_seq()),
                ',"msg_id":',
                _string(msg_id),
                ',"cell_id":' + _string(cell_id) if cell_id else "",
                ',"code":',
                code_field,
                ',"code_sha256":"',
                code_sha256,
                '","execution_count":',
                str(count) if type(count) is int and count >= 0 else "null",
                ',"silent":true,"started":"' if silent else ',"silent":false,"started":"',
                self._second_text,
                _MILLIS[int(started * 1000) % 1000],
                str(duration_ms),
                _STATUS[status],
                error_field,
                digest,
                text_field,
                tail,
            )
        )
        self.spool.append(line.encode("utf-8", "replace"))
        self.wake()

    def _code_fields(self, code: str) -> tuple[str, str]:
        """The ``code`` field's JSON (cut to ``max_code_bytes``, with ``code_truncated``
        when cut) and the SHA-256 of all of the source."""
        try:
            raw = code.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: hashed as they are, kept replaced
            raw = code.encode("utf-8", "surrogatepass")
            code = code.encode("utf-8", "replace").decode("utf-8")
        code_sha256 = hashlib.sha256(raw).hexdigest()
        if len(raw) > self.max_code_bytes:
            return _string(raw[: self.max_code_bytes].decode("utf-8", "ignore")) + _CUT, code_sha256
        return _string(code), code_sha256


def complete_line(data: bytes) -> bytes:
    """A spooled record ``data`` with its source's SHA-256 filled in, if still pending.

    The recorder leaves :data:`PENDING_SHA256` in place of the hash of an ASCII
    source it spooled whole; the hash is that of the ``code`` field's string, which
    a line holds exactly. Whoever ships the line (this kernel, or the kernel that
    adopts its segments after it died) fills it in. A line that does not parse is
    returned as it is, and the guard refuses it for the placeholder (quarantine).
    """
    end = data.find(_PENDING_FIELD)
    if end < 0:
        return data
    # Ids before the code field never hold a quote, and a quote inside the source is
    # escaped: the first ',"code":' is the field, and the pending field follows it.
    start = data.find(b',"code":')
    if start < 0 or start > end:
        return data
    try:
        code = json.loads(data[start + 8 : end])
        digest = hashlib.sha256(code.encode("utf-8")).hexdigest()
    except (ValueError, AttributeError):
        return data
    rest = data[end + len(_PENDING_FIELD) :]
    return b'%s,"code_sha256":"%s"%s' % (data[:end], digest.encode("ascii"), rest)


def _trait_reader(owner: Any, name: str) -> Callable[[], Any]:
    """A cheap reader of the trait ``name`` of ``owner`` (a traitlets ``HasTraits``).

    Reading a trait as an attribute runs the descriptor's Python code (two calls);
    once the trait holds a value it is in ``owner._trait_values``, so the cell path
    reads that dict instead (with the attribute as the fallback). ``dict.get``
    bound to the dict is a C call.
    """
    values = getattr(owner, "_trait_values", None)
    if isinstance(values, dict) and name in values:
        return functools.partial(values.get, name)
    return lambda: getattr(owner, name, None)


def _message(error: BaseException) -> str:
    try:
        return str(error)
    except Exception:  # an exception whose __str__ fails
        return ""
