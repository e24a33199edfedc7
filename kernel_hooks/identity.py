"""Who this kernel process is: its Jupyter kernel id, its stream instance, its sequence.

The kernel witness numbers its records per stream, a stream being ``(kernel_id,
instance)``: ``instance`` is random per kernel *process*, so a restarted kernel
(same kernel id, new process) starts a new stream at ``seq`` 0, and a gap in a
stream means records went missing (docs/user-zone.md). This module keeps that
state for the life of the process, so that ``%reload_ext`` continues the stream.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass

#: Connection files of kernels started by jupyter_server / jupyter_client are
#: named ``kernel-<kernel id>.json``.
_CONNECTION_FILE = re.compile(r"kernel-(?P<id>[A-Za-z0-9._:@+=-]{1,120})\.json$")
#: What the guard accepts as a kernel id (X-NBGuard-Cell and execution records).
_SAFE_ID = re.compile(r"[^A-Za-z0-9._:@+=-]")


@dataclass(frozen=True, slots=True)
class ServerEnvironment:
    """What the spawner handed the server (and so its kernels) about nbguard."""

    guard_url: str
    token: str
    user: str
    hub_base_url: str

    @classmethod
    def from_environ(cls) -> ServerEnvironment | None:
        """The environment of a server spawned by an nbguard hub, or None elsewhere."""
        url = os.environ.get("NBGUARD_GUARD_URL", "").strip()
        token = os.environ.get("JUPYTERHUB_API_TOKEN", "").strip()
        if not url or not token:
            return None
        return cls(
            guard_url=url if url.endswith("/") else url + "/",
            token=token,
            user=os.environ.get("JUPYTERHUB_USER", ""),
            hub_base_url=os.environ.get("JUPYTERHUB_BASE_URL", "/") or "/",
        )


def kernel_id_from_connection_file(path: str) -> str | None:
    """The kernel id in a ``kernel-<id>.json`` connection file name, if it has one."""
    found = _CONNECTION_FILE.search(os.path.basename(path))
    return found.group("id") if found else None


def current_kernel_id() -> str:
    """This process's Jupyter kernel id, or a stand-in naming the process.

    A kernel started by a Jupyter server knows its id only through the name of its
    connection file. Outside a kernel (IPython in a terminal, a benchmark) the
    stand-in is ``ipython-<pid>``.
    """
    app = sys.modules.get("ipykernel.kernelapp")
    if app is not None and app.IPKernelApp.initialized():
        connection_file = app.IPKernelApp.instance().connection_file
        found = kernel_id_from_connection_file(connection_file)
        if found:
            return found
        stem = os.path.splitext(os.path.basename(connection_file))[0]
        if stem:
            return _SAFE_ID.sub("-", stem)[:120]
    return f"ipython-{os.getpid()}"


class Stream:
    """This process's record stream: ``(kernel_id, instance)`` and the next ``seq``."""

    def __init__(self, kernel_id: str) -> None:
        self.kernel_id = kernel_id
        self.instance = secrets.token_hex(8)
        # next() on an itertools.count is one C call, so atomic under the interpreter
        # lock: threads (ipykernel subshells) never share a seq, and the cell path
        # takes no lock for it.
        self._counter = itertools.count()
        #: The next sequence number (0, 1, 2, ... with no gaps); a C call.
        self.next_seq: Callable[[], int] = self._counter.__next__

    @property
    def issued(self) -> int:
        """How many sequence numbers were handed out."""
        # A count shows its next value only in its repr ("count(5)"); reading it
        # consumes nothing.
        return int(repr(self._counter)[6:-1])


_stream: Stream | None = None
_stream_pid = 0


def process_stream() -> Stream:
    """The stream of this process (made on first use; a forked child gets its own)."""
    global _stream, _stream_pid
    if _stream is None or _stream_pid != os.getpid():
        _stream = Stream(current_kernel_id())
        _stream_pid = os.getpid()
    return _stream
