"""Loading and unloading the kernel hooks: ``%load_ext nbguard.kernel_hooks`` and back.

Every IPython kernel of an environment with nbguard installed loads them (the
package installs ``{sys.prefix}/etc/ipython/ipython_kernel_config.json``, which
adds ``nbguard.kernel_hooks`` to ``IPKernelApp.extra_extensions``). In a server
spawned by an nbguard hub (``NBGUARD_GUARD_URL`` and ``JUPYTERHUB_API_TOKEN``
set) they record every execution and ship the records; elsewhere they stay idle
and say so in one log line.

A user can ``%unload_ext nbguard.kernel_hooks``: the cell doing it is still
recorded, what is spooled is still delivered, and from then on only the server's
execute witness sees this kernel's executions; the guard's cross-check raises an
alert for each one the kernel did not report. That is by design (the user zone
is not trusted); the hooks only make it visible.
"""

from __future__ import annotations

import atexit
import logging
from dataclasses import dataclass
from typing import Any

from nbguard.kernel_hooks import current, denials
from nbguard.kernel_hooks.identity import ServerEnvironment, process_stream
from nbguard.kernel_hooks.input_guard import InputGuard
from nbguard.kernel_hooks.recorder import Recorder
from nbguard.kernel_hooks.redaction import Redactor
from nbguard.kernel_hooks.settings import NBGuardKernelHooks
from nbguard.kernel_hooks.shipper import Privileges, Shipper
from nbguard.kernel_hooks.spool import Spool, user_spool_dir

log = logging.getLogger("nbguard.kernel_hooks")
IDLE = (
    "nbguard: kernel hooks idle: NBGUARD_GUARD_URL and JUPYTERHUB_API_TOKEN are not both "
    "set, so this kernel was not started by a server of an nbguard hub; executions are not "
    "recorded here and nbguard:// is unavailable"
)


@dataclass
class Hooks:
    """The hooks running in this kernel."""

    settings: NBGuardKernelHooks
    recorder: Recorder
    spool: Spool
    shipper: Shipper
    input_guard: InputGuard | None

    def status(self) -> dict[str, Any]:
        """What the hooks are doing (see :func:`nbguard.kernel_hooks.status`)."""
        stream = self.recorder.stream
        return {
            "active": self.recorder.active,
            "kernel_id": stream.kernel_id,
            "instance": stream.instance,
            "recorded": stream.issued,
            "lost": self.spool.lost,
            "shipped": self.shipper.sent,
            "quarantined": self.shipper.quarantined,
            "shipping": self.shipper.alive,
            "last_error": self.shipper.last_error,
            "spool": str(self.spool.directory),
        }


_hooks: Hooks | None = None
_idle_reason = ""


def load_ipython_extension(shell: Any) -> None:
    """Start recording this kernel's executions (idle outside an nbguard server)."""
    global _hooks, _idle_reason
    if _hooks is not None:
        return
    logger = getattr(shell, "log", None) or log
    environment = ServerEnvironment.from_environ()
    if environment is None:
        _idle_reason = IDLE
        logger.warning(IDLE)
        return
    settings = NBGuardKernelHooks(parent=shell)
    stream = process_stream()
    spool = Spool(
        user_spool_dir(settings.spool_dir, environment.user),
        stream.kernel_id,
        stream.instance,
        logger=logger,
    )
    try:
        spool.open()
    except OSError as error:
        _idle_reason = f"nbguard: kernel hooks idle: cannot open the spool: {error}"
        logger.error(_idle_reason)
        return
    privileges = Privileges(settings.privilege_cache_seconds)
    shipper = Shipper(
        spool,
        environment,
        batch_size=settings.batch_size,
        flush_delay=settings.flush_delay,
        poll_interval=settings.poll_interval,
        retry_initial=settings.retry_initial,
        retry_max=settings.retry_max,
        timeout=settings.request_timeout,
        privileges=privileges,
        on_exit=spool.close,
        logger=logger,
    )
    redactor = None
    if settings.record_output_text:
        redactor = Redactor(settings.redact_patterns, [environment.token])
    recorder = Recorder(
        shell,
        stream,
        spool,
        max_code_bytes=settings.max_code_bytes,
        text_limit=settings.output_text_limit,
        redactor=redactor,
        privileged=privileges,
        wake=shipper.wake,
    )
    input_guard = InputGuard(settings.rejected_names) if settings.rejected_names else None
    recorder.install()
    denials.install(shell)
    if input_guard is not None:
        shell.ast_transformers.append(input_guard)
    current.attach(recorder)
    shipper.start()
    _hooks = Hooks(settings, recorder, spool, shipper, input_guard)
    _idle_reason = ""
    atexit.register(_at_exit)
    logger.info(
        "nbguard: recording executions of kernel %s (stream %s) into %s",
        stream.kernel_id,
        stream.instance,
        spool.directory,
    )


def unload_ipython_extension(shell: Any) -> None:
    """Stop recording (the running cell is still recorded; the spool is still delivered)."""
    global _hooks, _idle_reason
    hooks, _hooks = _hooks, None
    atexit.unregister(_at_exit)
    if hooks is None:
        return
    current.attach(None)
    denials.uninstall(shell)
    if hooks.input_guard is not None and hooks.input_guard in shell.ast_transformers:
        shell.ast_transformers.remove(hooks.input_guard)
    hooks.recorder.uninstall()
    hooks.shipper.drain_and_stop()
    _idle_reason = "nbguard: kernel hooks unloaded by the user (%unload_ext)"
    (getattr(shell, "log", None) or log).warning(
        "nbguard: kernel hooks unloaded: this kernel's executions are no longer recorded "
        "by the kernel (the server's witness still sees them)"
    )


def _at_exit() -> None:
    hooks = _hooks
    if hooks is not None:
        hooks.recorder.active = False
        hooks.shipper.stop(hooks.settings.shutdown_flush_seconds)


def status() -> dict[str, Any]:
    """The hooks' state in this kernel: whether they record, the stream, counters."""
    if _hooks is None:
        return {"active": False, "reason": _idle_reason or "nbguard: kernel hooks not loaded"}
    return _hooks.status()
