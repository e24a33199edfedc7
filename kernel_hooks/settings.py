"""``NBGuardKernelHooks``: every setting of the kernel hooks, read from the kernel's config.

Set them where the kernel reads its configuration, for example in
``{sys.prefix}/etc/ipython/ipython_kernel_config.json`` next to the line that
loads the hooks::

    {"IPKernelApp": {"extra_extensions": ["nbguard.kernel_hooks"]},
     "NBGuardKernelHooks": {"record_output_text": true}}

The kernel runs in the user zone: a user can change these for their own kernels,
as they can unload the hooks. That is expected; the server's execute witness and
the guard's cross-check cover it (docs/user-zone.md).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from traitlets import Bool, Dict, Float, Int, List, TraitError, Unicode, default, validate
from traitlets.config import LoggingConfigurable

#: The contract caps a record's code at 1 MiB; the hooks cut it lower so that one
#: record always fits in one 1 MiB batch with its other fields.
MAX_CODE_BYTES_LIMIT = 512 * 1024
#: Patterns that hide secrets in recorded output text: name -> regular expression.
#: A match is replaced by ``[REDACTED:name]``; where a pattern has a group named
#: ``keep``, that part (the key name) stays visible.
DEFAULT_REDACTIONS = {
    "private-key": (
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)"
    ),
    "authorization-header": r"(?i)(?P<keep>\bauthorization\s*[:=]\s*)(?:token|bearer|basic)\s+\S+",
    "url-credentials": r"(?P<keep>\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+(?=@)",
    "secret-assignment": (
        r"(?i)(?P<keep>\b[\w.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key"
        r"|private[_-]?key|credentials?)[\w.-]*['\"]?\s*[:=]\s*)['\"]?[^\s'\",;}]+['\"]?"
    ),
    "jwt": r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    "aws-access-key-id": r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    "github-token": r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})\b",
    "slack-token": r"\bxox[abeprs]-[A-Za-z0-9-]{10,}",
    "hex-token": r"\b[0-9a-fA-F]{32,}\b",
}


def default_spool_dir() -> str:
    """``{jupyter data dir}/nbguard/spool``: in the user's home, so it outlives the server."""
    from jupyter_core.paths import jupyter_data_dir

    return str(Path(jupyter_data_dir()) / "nbguard" / "spool")


class NBGuardKernelHooks(LoggingConfigurable):
    """Settings of nbguard's kernel hooks: cell capture, the spool, the shipper, the client."""

    spool_dir = Unicode(
        help="""Folder of the durable spool where each kernel writes its execution
        records before they are shipped to the guard service. One file per kernel
        process; files of kernels that died are shipped by the next kernel of the
        same user. Default: ``{jupyter_data_dir}/nbguard/spool`` (usually
        ``~/.local/share/jupyter/nbguard/spool``), in the home directory so that
        records survive a server restart. Keep it on a local or persistent volume,
        not on a temporary filesystem.""",
    ).tag(config=True)

    @default("spool_dir")
    def _spool_dir_default(self) -> str:
        return default_spool_dir()

    record_output_text = Bool(
        False,
        help="""Also record the text of each cell's outputs (streams, plain-text
        results and displays, error names and messages), truncated to
        ``NBGuardKernelHooks.output_text_limit`` characters and redacted with
        ``NBGuardKernelHooks.redact_patterns``. Off by default: the record then holds
        only a SHA-256 digest of the outputs.""",
    ).tag(config=True)

    output_text_limit = Int(
        4096,
        help="""Characters of output text kept per cell when
        ``NBGuardKernelHooks.record_output_text`` is on; the rest is cut and the
        text ends with a note saying how much was cut. Default 4096.""",
    ).tag(config=True)

    @validate("output_text_limit")
    def _check_output_text_limit(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if not 0 < value <= 256 * 1024:
            raise TraitError(
                f"NBGuardKernelHooks.output_text_limit must be 1 to 262144, not {value}"
            )
        return value

    redact_patterns = Dict(
        key_trait=Unicode(),
        value_trait=Unicode(),
        help="""Regular expressions (Python syntax) that hide secrets in recorded output
        text, by name. Each match becomes ``[REDACTED:name]``; a group named ``keep``
        stays visible (the key in ``password = ...``). The defaults cover private
        keys, Authorization headers, credentials in URLs, ``password=``/``token:``
        style assignments, JWTs, AWS access key ids, GitHub and Slack tokens, and hex
        strings of 32 characters or more (JupyterHub tokens). The kernel's own hub
        token is always redacted. Setting this replaces the whole table; to add one,
        copy the defaults from ``nbguard.kernel_hooks.settings.DEFAULT_REDACTIONS``.""",
    ).tag(config=True)

    @default("redact_patterns")
    def _redact_patterns_default(self) -> dict[str, str]:
        return dict(DEFAULT_REDACTIONS)

    @validate("redact_patterns")
    def _check_redact_patterns(self, proposal: Any) -> dict[str, str]:
        patterns: dict[str, str] = dict(proposal["value"])
        for name, pattern in patterns.items():
            try:
                re.compile(pattern)
            except re.error as error:
                raise TraitError(
                    f"NBGuardKernelHooks.redact_patterns[{name!r}] is not a valid "
                    f"regular expression: {error}"
                ) from None
        return patterns

    max_code_bytes = Int(
        256 * 1024,
        help="""Longest cell source recorded, in UTF-8 bytes; a longer source is cut
        (``code_truncated`` is set) while ``code_sha256`` still covers all of it.
        Default 256 KiB; at most 512 KiB, so a record always fits in one batch.""",
    ).tag(config=True)

    @validate("max_code_bytes")
    def _check_max_code_bytes(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if not 1024 <= value <= MAX_CODE_BYTES_LIMIT:
            raise TraitError(
                f"NBGuardKernelHooks.max_code_bytes must be 1024 to {MAX_CODE_BYTES_LIMIT}, "
                f"not {value}"
            )
        return value

    rejected_names = List(
        Unicode(),
        help="""The optional input guard: cells that import or use any of these dotted
        names are rejected before they run (IPython's ``InputRejected``), and the
        rejection is recorded. Shell-style wildcards match one or more name parts:
        ``["ctypes", "subprocess.*", "os.system"]``. Empty (the default) turns the
        input guard off. It is a convenience for notebook users, not a barrier:
        enforcement stays in the guard service.""",
    ).tag(config=True)

    batch_size = Int(
        500,
        help="""Records per batch sent to the guard service (at most 500, the
        guard's limit). Batches are also kept under 1 MiB of JSON.""",
    ).tag(config=True)

    @validate("batch_size")
    def _check_batch_size(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if not 1 <= value <= 500:
            raise TraitError(f"NBGuardKernelHooks.batch_size must be 1 to 500, not {value}")
        return value

    flush_delay = Float(
        0.5,
        help="""Seconds the shipper waits after a new record before sending, so that
        records of cells run in quick succession travel in one batch (and a busy
        kernel sends at most a couple of requests a second). Records are safe in
        the spool meanwhile. Default 0.5.""",
    ).tag(config=True)

    poll_interval = Float(
        5.0,
        help="""Seconds between the shipper's looks at the spool when nothing new was
        recorded by this kernel: it picks up records that killed kernels left behind.
        Default 5.""",
    ).tag(config=True)

    retry_initial = Float(
        0.5,
        help="""First wait, in seconds, before retrying a batch the guard did not
        accept (unreachable, 5xx, 401/403/404, 429); each failure doubles it, up to
        ``NBGuardKernelHooks.retry_max``, with random jitter. Default 0.5.""",
    ).tag(config=True)

    retry_max = Float(
        60.0,
        help="""Longest wait, in seconds, between retries of a batch. Default 60.""",
    ).tag(config=True)

    request_timeout = Float(
        30.0,
        help="""Seconds to wait for the guard service to answer one request (the
        client's reads and the shipper's batches). Default 30.""",
    ).tag(config=True)

    privilege_cache_seconds = Float(
        30.0,
        help="""How long the kernel trusts its last look at the user's grants
        (``GET api/v1/me``) when it marks records ``privileged``. The look is taken
        in the background, never while a cell runs; the guard sets ``privileged``
        itself from the grants it knows, whatever the kernel says. Default 30.""",
    ).tag(config=True)

    shutdown_flush_seconds = Float(
        2.0,
        help="""When the kernel exits, how long the shipper may try to send what is
        still spooled. What it cannot send stays in the spool for the next kernel.
        Default 2.""",
    ).tag(config=True)
