"""``WitnessConnection``: the server's own witness of every execution request.

A subclass of jupyter-server's kernel websocket connection. Each message from
the browser goes on to the kernel first, untouched and undelayed; then, if it
was an ``execute_request`` that the connection forwarded (on ``shell``, or on
``control``, where ipykernel executes too), the witness records it through the
:class:`~nbguard.server_extension.shipper.WitnessShipper`. Both websocket
protocols are read: the JSON text protocol (and its binary-buffer variant) and
``v1.kernel.websocket.jupyter.org``.

The record holds only what the server saw: the kernel id, the websocket's
Jupyter session id, the message id, ``metadata.cellId``, a SHA-256 of the code
as sent, ``silent``, and when it arrived. Ids that the guard would refuse (the
browser chooses them) are replaced by ``h:`` and a digest of what was sent, so
an odd id cannot hold back the records around it; the kernel witness will then
disagree, and the guard's cross-check raises the alert.

It is also where an open websocket learns that execution stopped being allowed:
the Authorizer checks ``jupyter.kernel_execute`` when the websocket opens, and
an ``execute_request`` arriving later is forwarded only while the server's
cached entitlement (kept current in the background) still allows execution.
Otherwise it is dropped, unrun: the browser gets, for that request, an
``error`` (``NBGuardRefused``, with the reason) on ``iopub``, an ``error``
``execute_reply`` and an ``idle`` status, so the cell shows why and is not left
queued; then the websocket is closed with 1008 (policy violation), and
reconnecting meets the Authorizer again.

It cannot see code that reaches the kernel by any other way: a user's own
process talking to the kernel's ZMQ ports, comm messages that run code in a
widget, or the debugger's ``evaluate`` (see docs/server-extension.md).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING, Any

from jupyter_client.jsonutil import json_default
from jupyter_server.services.kernels.connection.base import (
    deserialize_binary_message,
    deserialize_msg_from_ws_v1,
    serialize_msg_to_ws_v1,
)
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection

from nbguard.server_extension.authorizer import KERNEL_EXECUTE

if TYPE_CHECKING:
    from nbguard.server_extension.shipper import WitnessShipper

V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"
#: What a refused cell shows (``ename`` and ``evalue`` of its error).
REFUSED_NAME = "NBGuardRefused"
REFUSED_WORDS = (
    "nbguard: this cell was not run: execution is no longer allowed in this server "
    "(a lock, a revoked grant or an expired login). See the nbguard panel for why; "
    "once allowed again, reconnect to the kernel or reload the page."
)
#: Channels on which a kernel runs an ``execute_request``.
EXECUTING_CHANNELS = ("shell", "control")
# The ids the guard accepts (docs/user-zone.md); fullmatch, so no trailing newline.
_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def accepted_id(value: Any) -> str:
    """``value`` if the guard accepts it as an id, else ``h:`` and a digest of it."""
    if isinstance(value, str) and _ID.fullmatch(value):
        return value
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return "h:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def code_digest(code: Any) -> str:
    """SHA-256 (hex) of the code's UTF-8 bytes, as the kernel witness computes it."""
    text = code if isinstance(code, str) else ""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def unpacked(part: bytes | str) -> Any:
    """One JSON part of a v1 message (header, metadata or content)."""
    return json.loads(part)


class WitnessConnection(ZMQChannelsWebsocketConnection):
    """The kernel websocket connection, witnessing every ``execute_request`` it forwards."""

    @property
    def shipper(self) -> WitnessShipper | None:
        """The extension's shipper (None if nbguard is not active in this server)."""
        extension = self.websocket_handler.settings.get("nbguard")
        return getattr(extension, "shipper", None)

    def handle_incoming_message(self, incoming_msg: str) -> None:
        """Forward the message to the kernel, then witness it if it asked to execute.

        An execution request the entitlement no longer allows is not forwarded.
        """
        open_channels = tuple(self.channels)
        try:
            parts = self.execute_parts(incoming_msg)
        except Exception:  # not ours to judge: jupyter-server refuses what it cannot read
            parts = None
        if parts is not None and parts[0] in EXECUTING_CHANNELS and not self.may_execute():
            self.refuse_execution(parts[0], parts[1])
            return
        super().handle_incoming_message(incoming_msg)
        if parts is None:
            return
        try:
            self.witness(parts, open_channels)
        except Exception:  # a witness failure must never break the user's websocket
            self.log.exception("nbguard | could not witness a kernel message")

    def may_execute(self) -> bool:
        """Whether this server's cached entitlement allows execution now (fails closed)."""
        extension = self.websocket_handler.settings.get("nbguard")
        cache = getattr(extension, "entitlements", None)
        return cache is not None and bool(cache.allows_now(KERNEL_EXECUTE))

    def refuse_execution(self, channel: str, header: dict[str, Any]) -> None:
        """Drop the request unrun, tell the browser why (as the kernel would answer a
        failed cell), and close the websocket: execution is no longer allowed."""
        self.log.warning(
            "nbguard | kernel %s: an execution request was refused (the entitlement no "
            "longer allows execution); closing its websocket",
            self.kernel_id,
        )
        error = {"ename": REFUSED_NAME, "evalue": REFUSED_WORDS, "traceback": [REFUSED_WORDS]}
        answers = (
            ("iopub", "error", error),
            (channel, "execute_reply", {"status": "error", "execution_count": None, **error}),
            ("iopub", "status", {"execution_state": "idle"}),
        )
        try:
            for to, msg_type, content in answers:
                self.send_to_browser(to, self.session.msg(msg_type, content, parent=header))
        except Exception:  # the websocket may be closing already; it is closed below anyway
            self.log.warning("nbguard | could not tell the browser why a cell was refused")
        self.websocket_handler.close(1008, "nbguard: execution is no longer allowed here")

    def send_to_browser(self, channel: str, msg: dict[str, Any]) -> None:
        """Write ``msg`` to the browser on ``channel``, in the websocket's protocol."""
        if self.subprotocol == V1_PROTOCOL:
            self.write_message(serialize_msg_to_ws_v1(msg, channel, self.session.pack), binary=True)
        else:
            self.write_message(json.dumps({**msg, "channel": channel}, default=json_default))

    def witness(
        self, parts: tuple[str, dict[str, Any], Any, Any], open_channels: tuple[str, ...]
    ) -> None:
        """Record an ``execute_request`` (its parsed ``parts``) if it was forwarded."""
        channel, header, metadata, content = parts
        if channel not in open_channels or channel not in EXECUTING_CHANNELS:
            return
        allowed = self.multi_kernel_manager.allowed_message_types
        if allowed and "execute_request" not in allowed:
            return
        shipper = self.shipper
        if shipper is None:
            self.log.error("nbguard | an execution was not witnessed: no shipper")
            return
        cell_id = metadata.get("cellId") if isinstance(metadata, dict) else None
        shipper.record(
            kernel_id=self.kernel_id,
            msg_id=accepted_id(header.get("msg_id")),
            cell_id=None if cell_id is None else accepted_id(cell_id),
            session=accepted_id(self.session_id),
            code_sha256=code_digest(content.get("code") if isinstance(content, dict) else None),
            silent=bool(content.get("silent", False)) if isinstance(content, dict) else False,
        )

    def execute_parts(
        self, incoming_msg: str | bytes
    ) -> tuple[str, dict[str, Any], Any, Any] | None:
        """``(channel, header, metadata, content)`` of an ``execute_request``, else None.

        Only the header is parsed for other messages.
        """
        if self.subprotocol == V1_PROTOCOL:
            channel, msg_list = deserialize_msg_from_ws_v1(incoming_msg)
            header = unpacked(msg_list[0])
            if not isinstance(header, dict) or header.get("msg_type") != "execute_request":
                return None
            return channel or "shell", header, unpacked(msg_list[2]), unpacked(msg_list[3])
        if isinstance(incoming_msg, bytes):
            msg = deserialize_binary_message(incoming_msg)
        else:
            msg = json.loads(incoming_msg)
        header = msg.get("header") if isinstance(msg, dict) else None
        if not isinstance(header, dict) or header.get("msg_type") != "execute_request":
            return None
        return msg.get("channel") or "shell", header, msg.get("metadata"), msg.get("content")
