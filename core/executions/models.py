"""Execution records as the two witnesses send them, checked field by field.

A batch is ``{"witness": "kernel" | "server", "records": [...]}`` (see
docs/user-zone.md). :func:`parse_batch` accepts a batch only if every record
has exactly the fields of its witness, each of the right type and shape; the
first problem refuses the whole batch with an :class:`ExecutionRecordError`
naming the record's index and the field, so a shipper never half-delivers.

Nothing here is trusted for a decision: the records come from the user zone.
They are kept as evidence, and the guard adds what it knows itself (the user
and server of the token, whether a grant was in force).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from nbguard.errors import RequestError

#: The two witnesses: the IPython extension in the kernel, the server's websocket witness.
KERNEL, SERVER = "kernel", "server"
WITNESSES = (KERNEL, SERVER)
#: Largest batch: records per request, and bytes of JSON.
MAX_RECORDS = 500
MAX_BATCH_BYTES = 1024 * 1024
#: Longest source kept in a kernel record (longer sources are cut by the shipper).
MAX_CODE = 1024 * 1024
#: Longest output text, error name and resource list a kernel record may carry.
MAX_OUTPUT_TEXT = 64 * 1024
MAX_ERROR_NAME = 256
MAX_RESOURCES = 256
MAX_RESOURCE = 600
#: Kernel statuses; the server witness never sees the outcome (``unknown`` in the ledger).
STATUSES = ("ok", "error", "aborted")
UNKNOWN_STATUS = "unknown"
#: Sequence numbers stay exact in every JSON reader.
MAX_SEQ = 2**53 - 1

# Used with fullmatch: "$" would let a trailing newline through.
_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")
_RESOURCE = re.compile(r"[a-z][a-z_]*:\S+")


class ExecutionRecordError(RequestError):
    """A batch or one of its records is malformed; nothing of the batch was kept.

    ``index`` is the record's position in ``records`` (None for the batch itself),
    ``field`` the offending field ("" when the record as a whole is wrong).
    """

    def __init__(self, message: str, *, index: int | None = None, field: str = "") -> None:
        where = "" if index is None else f"record {index}: "
        super().__init__(where + message, user_message=where + message)
        self.index = index
        self.field = field


class _Refused(Exception):
    """One field's problem, before the record index is known."""


# -- field checks: each returns the value as kept, or raises _Refused -------------------


def _identifier(value: Any) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise _Refused("must be 1 to 128 letters, digits or ._:@/+=-")
    return value


def _identifier_or_empty(value: Any) -> str:
    return "" if value == "" else _identifier(value)


def _seq(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= MAX_SEQ:
        raise _Refused("must be a whole number from 0 to 2**53-1")
    return value


def _whole(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= MAX_SEQ:
        raise _Refused("must be a whole number of at least 0")
    return value


def _count_or_null(value: Any) -> int | None:
    return None if value is None else _whole(value)


def _flag(value: Any) -> bool:
    if type(value) is not bool:
        raise _Refused("must be true or false")
    return value


def _sha256(value: Any) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise _Refused("must be 64 lowercase hex digits (SHA-256)")
    return value


def _moment(value: Any) -> str:
    if not isinstance(value, str) or not _TIME.fullmatch(value):
        raise _Refused("must be an RFC 3339 UTC time ending in Z")
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise _Refused("is not a real date and time") from None
    return value


def _text(limit: int) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise _Refused("must be a string")
        if len(value) > limit:
            raise _Refused(f"is longer than {limit} characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _Refused("is not valid Unicode (a lone surrogate)") from None
        return value

    return check


def _status(value: Any) -> str:
    if value not in STATUSES:
        raise _Refused(f"must be one of {', '.join(STATUSES)}")
    return str(value)


def _resources(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_RESOURCES:
        raise _Refused(f"must be a list of at most {MAX_RESOURCES} resource keys")
    for item in value:
        if not isinstance(item, str) or len(item) > MAX_RESOURCE or not _RESOURCE.fullmatch(item):
            raise _Refused("must hold resource keys such as dataset:sales")
    return tuple(value)


_Check = Callable[[Any], Any]

#: ``field: (check, required)`` of each witness's records.
KERNEL_FIELDS: Mapping[str, tuple[_Check, bool]] = MappingProxyType(
    {
        "kernel_id": (_identifier, True),
        "instance": (_identifier, True),
        "seq": (_seq, True),
        "msg_id": (_identifier_or_empty, True),
        "cell_id": (_identifier_or_empty, False),
        "code": (_text(MAX_CODE), True),
        "code_truncated": (_flag, False),
        "code_sha256": (_sha256, True),
        "execution_count": (_count_or_null, True),
        "silent": (_flag, True),
        "started": (_moment, True),
        "duration_ms": (_whole, True),
        "status": (_status, True),
        "error_name": (_text(MAX_ERROR_NAME), False),
        "output_digest": (_sha256, False),
        "output_text": (_text(MAX_OUTPUT_TEXT), False),
        "resources": (_resources, True),
        "privileged": (_flag, True),
    }
)
SERVER_FIELDS: Mapping[str, tuple[_Check, bool]] = MappingProxyType(
    {
        "kernel_id": (_identifier, True),
        "instance": (_identifier, True),
        "seq": (_seq, True),
        "msg_id": (_identifier, True),
        "cell_id": (_identifier_or_empty, False),
        "session": (_identifier, True),
        "code_sha256": (_sha256, True),
        "silent": (_flag, True),
        "received": (_moment, True),
    }
)
_FIELDS = {KERNEL: KERNEL_FIELDS, SERVER: SERVER_FIELDS}


@dataclass(frozen=True, slots=True)
class ExecutionRecord:
    """One execution as one witness reported it, checked.

    ``time`` is the witness's own clock (``started`` or ``received``) and
    ``moment`` the same as ``time.time()`` seconds; both are the user zone's
    word. ``values`` holds every field as sent, for the ledger.
    """

    witness: str
    kernel_id: str
    instance: str
    seq: int
    msg_id: str
    cell_id: str
    code_sha256: str
    time: str
    moment: float
    status: str
    #: The kernel's own view of whether a grant was in force (None for the server).
    claimed_privileged: bool | None
    values: Mapping[str, Any] = field(repr=False, compare=False)

    def ledger_body(self, *, privileged: bool, server: str) -> dict[str, Any]:
        """The ``cell_execution`` ledger body, with ``privileged`` decided by the guard."""
        body = {name: list(v) if isinstance(v, tuple) else v for name, v in self.values.items()}
        if self.witness == SERVER:
            body["jupyter_session"] = body.pop("session")
            body["status"] = UNKNOWN_STATUS
        else:
            body["claimed_privileged"] = body.pop("privileged")
        body.update(witness=self.witness, privileged=privileged, server=server)
        return body


@dataclass(frozen=True, slots=True)
class ExecutionBatch:
    """A checked batch: one witness, its records in the order sent."""

    witness: str
    records: tuple[ExecutionRecord, ...]


def parse_batch(body: Any) -> ExecutionBatch:
    """The batch in ``body`` (parsed JSON); ExecutionRecordError for the first problem."""
    if not isinstance(body, Mapping) or set(body) != {"witness", "records"}:
        raise ExecutionRecordError("the body must be an object with exactly witness and records")
    witness = body["witness"]
    if witness not in WITNESSES:
        raise ExecutionRecordError("witness must be kernel or server", field="witness")
    records = body["records"]
    if not isinstance(records, list):
        raise ExecutionRecordError("records must be a list", field="records")
    if len(records) > MAX_RECORDS:
        raise ExecutionRecordError(
            f"a batch holds at most {MAX_RECORDS} records, not {len(records)}", field="records"
        )
    return ExecutionBatch(
        str(witness), tuple(parse_record(str(witness), r, i) for i, r in enumerate(records))
    )


def parse_record(witness: str, raw: Any, index: int = 0) -> ExecutionRecord:
    """One record of ``witness``; ExecutionRecordError naming ``index`` and the field."""
    spec = _FIELDS[witness]
    if not isinstance(raw, Mapping):
        raise ExecutionRecordError("must be an object", index=index)
    unknown = sorted(str(name) for name in raw if name not in spec)
    if unknown:
        raise ExecutionRecordError(
            f"unknown field {unknown[0]} for the {witness} witness", index=index, field=unknown[0]
        )
    values: dict[str, Any] = {}
    for name, (check, required) in spec.items():
        if name not in raw:
            if required:
                raise ExecutionRecordError(f"{name} is missing", index=index, field=name)
            continue
        try:
            values[name] = check(raw[name])
        except _Refused as problem:
            raise ExecutionRecordError(f"{name} {problem}", index=index, field=name) from None
    if witness == KERNEL:
        _check_code(values, index)
    when = values["started" if witness == KERNEL else "received"]
    return ExecutionRecord(
        witness=witness,
        kernel_id=values["kernel_id"],
        instance=values["instance"],
        seq=values["seq"],
        msg_id=values["msg_id"],
        cell_id=values.get("cell_id", ""),
        code_sha256=values["code_sha256"],
        time=when,
        moment=datetime.fromisoformat(when).timestamp(),
        status=values.get("status", UNKNOWN_STATUS),
        claimed_privileged=values.get("privileged") if witness == KERNEL else None,
        values=MappingProxyType(values),
    )


def _check_code(values: Mapping[str, Any], index: int) -> None:
    """A kernel record's hash is of the whole source: it must match unless the source was cut."""
    if values.get("code_truncated"):
        return
    digest = hashlib.sha256(values["code"].encode("utf-8")).hexdigest()
    if digest != values["code_sha256"]:
        raise ExecutionRecordError(
            "code_sha256 is not the SHA-256 of code (set code_truncated if the code was cut)",
            index=index,
            field="code_sha256",
        )


def held_during(intervals: Iterable[tuple[float, float]], since: float, until: float) -> bool:
    """Whether any ``(start, end)`` interval overlaps ``[since, until]``.

    Used for ``privileged``: a record's own time comes from the user zone, so
    the guard asks whether a grant was in force at any moment between that time
    and the record's arrival. A wrong clock can then only mark more records
    privileged, never fewer.
    """
    low, high = min(since, until), until
    return any(start <= high and end > low for start, end in intervals)
