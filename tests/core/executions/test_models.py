"""Checking batches field by field, the ledger bodies they become, and the privilege window."""

from __future__ import annotations

from typing import Any

import pytest

from nbguard.errors import RequestError
from nbguard.executions.models import (
    MAX_RECORDS,
    ExecutionRecordError,
    held_during,
    parse_batch,
)
from nbguard.ledger.schemas import packaged_schemas

from .conftest import kernel_record, server_record

DROP = object()


def with_field(record: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
    """``record`` with ``name`` set to ``value`` (or removed, for DROP)."""
    changed = dict(record)
    if value is DROP:
        changed.pop(name, None)
    else:
        changed[name] = value
    return changed


@pytest.mark.parametrize(
    ("witness", "record", "field"),
    [
        pytest.param("kernel", with_field(kernel_record(), "seq", -1), "seq", id="negative-seq"),
        pytest.param("kernel", with_field(kernel_record(), "seq", 2**53), "seq", id="huge-seq"),
        pytest.param("kernel", with_field(kernel_record(), "seq", 1.0), "seq", id="float-seq"),
        pytest.param("kernel", with_field(kernel_record(), "seq", True), "seq", id="bool-seq"),
        pytest.param("kernel", with_field(kernel_record(), "seq", "3"), "seq", id="text-seq"),
        pytest.param("kernel", with_field(kernel_record(), "kernel_id", ""), "kernel_id",
                     id="empty-kernel"),
        pytest.param("kernel", with_field(kernel_record(), "kernel_id", "a b"), "kernel_id",
                     id="space-kernel"),
        pytest.param("kernel", with_field(kernel_record(), "kernel_id", "k" * 129), "kernel_id",
                     id="long-kernel"),
        pytest.param("kernel", with_field(kernel_record(), "kernel_id", "k1\n"), "kernel_id",
                     id="trailing-newline"),
        pytest.param("kernel", with_field(kernel_record(), "started", "2025-06-15T14:00:00Z\n"),
                     "started", id="time-trailing-newline"),
        pytest.param("kernel", with_field(kernel_record(), "instance", DROP), "instance",
                     id="no-instance"),
        pytest.param("kernel", with_field(kernel_record(), "msg_id", None), "msg_id",
                     id="null-msg"),
        pytest.param("kernel", with_field(kernel_record(), "cell_id", "<script>"), "cell_id",
                     id="markup-cell"),
        pytest.param("kernel", with_field(kernel_record(), "code", 42), "code", id="code-number"),
        pytest.param("kernel", with_field(kernel_record(), "code", "\ud800"), "code",
                     id="lone-surrogate"),
        pytest.param("kernel", with_field(kernel_record(), "code_sha256", "AB" * 32),
                     "code_sha256", id="upper-hex"),
        pytest.param("kernel", with_field(kernel_record(), "code_sha256", "0" * 64),
                     "code_sha256", id="hash-of-other-code"),
        pytest.param("kernel", with_field(kernel_record(), "execution_count", -2),
                     "execution_count", id="negative-count"),
        pytest.param("kernel", with_field(kernel_record(), "silent", "false"), "silent",
                     id="text-silent"),
        pytest.param("kernel", with_field(kernel_record(), "started", "2025-06-15 14:00:00"),
                     "started", id="no-zone"),
        pytest.param("kernel", with_field(kernel_record(), "started", "2025-06-15T14:00:00+02:00"),
                     "started", id="offset"),
        pytest.param("kernel", with_field(kernel_record(), "started", "2025-02-30T14:00:00Z"),
                     "started", id="no-such-day"),
        pytest.param("kernel", with_field(kernel_record(), "duration_ms", 0.5), "duration_ms",
                     id="float-duration"),
        pytest.param("kernel", with_field(kernel_record(), "status", "unknown"), "status",
                     id="kernel-status-unknown"),
        pytest.param("kernel", with_field(kernel_record(), "error_name", "E" * 257), "error_name",
                     id="long-error"),
        pytest.param("kernel", with_field(kernel_record(), "output_digest", "x"), "output_digest",
                     id="bad-digest"),
        pytest.param("kernel", with_field(kernel_record(), "output_text", "x" * 65537),
                     "output_text", id="long-output"),
        pytest.param("kernel", with_field(kernel_record(), "resources", "dataset:sales"),
                     "resources", id="resources-text"),
        pytest.param("kernel", with_field(kernel_record(), "resources", ["sales"]), "resources",
                     id="resource-without-type"),
        pytest.param("kernel", with_field(kernel_record(), "resources", ["dataset:a"] * 257),
                     "resources", id="too-many-resources"),
        pytest.param("kernel", with_field(kernel_record(), "privileged", 1), "privileged",
                     id="number-privileged"),
        pytest.param("kernel", with_field(kernel_record(), "user", "mallory"), "user",
                     id="user-in-body"),
        pytest.param("kernel", with_field(kernel_record(), "received", "2025-06-15T14:00:00Z"),
                     "received", id="server-field-from-kernel"),
        pytest.param("server", kernel_record(), "code", id="kernel-record-as-server"),
        pytest.param("server", with_field(server_record(), "msg_id", ""), "msg_id",
                     id="server-empty-msg"),
        pytest.param("server", with_field(server_record(), "session", DROP), "session",
                     id="server-no-session"),
        pytest.param("server", with_field(server_record(), "server", "other"), "server",
                     id="server-name-in-body"),
    ],
)  # fmt: skip
def test_malformed_records_name_index_and_field(
    witness: str, record: dict[str, Any], field: str
) -> None:
    """A bad record refuses the batch, naming the record's index and the field."""
    good = kernel_record(0) if witness == "kernel" else server_record(0)
    with pytest.raises(ExecutionRecordError) as caught:
        parse_batch({"witness": witness, "records": [good, record]})
    assert (caught.value.index, caught.value.field) == (1, field)
    assert str(caught.value).startswith("record 1: ")
    assert field in str(caught.value)
    assert caught.value.user_message == str(caught.value)
    assert isinstance(caught.value, RequestError)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param([], "", id="not-object"),
        pytest.param({"witness": "kernel"}, "", id="no-records"),
        pytest.param({"witness": "kernel", "records": [], "user": "x"}, "", id="extra-key"),
        pytest.param({"witness": "proxy", "records": []}, "witness", id="unknown-witness"),
        pytest.param({"witness": "kernel", "records": {}}, "records", id="records-object"),
        pytest.param({"witness": "kernel", "records": [{}] * (MAX_RECORDS + 1)}, "records",
                     id="too-many"),
    ],
)  # fmt: skip
def test_malformed_batches(body: Any, field: str) -> None:
    """The batch's own shape is checked before any record."""
    with pytest.raises(ExecutionRecordError) as caught:
        parse_batch(body)
    assert caught.value.index is None
    assert caught.value.field == field


def test_a_record_that_is_not_an_object() -> None:
    """A record that is not an object is refused by its index."""
    with pytest.raises(ExecutionRecordError, match="record 0: must be an object"):
        parse_batch({"witness": "server", "records": ["m1"]})


def test_kernel_record_becomes_a_valid_ledger_body() -> None:
    """The ledger body keeps the kernel's fields, its claim apart, and the guard's verdict."""
    raw = kernel_record(
        3, status="error", error_name="KeyError", output_digest="ab" * 32, output_text="boom"
    )
    record = parse_batch({"witness": "kernel", "records": [raw]}).records[0]
    assert (record.kernel_id, record.instance, record.seq, record.msg_id) == (
        "k-1",
        "ki-1",
        3,
        "m3",
    )
    assert record.moment == pytest.approx(1749996000.25)
    body = record.ledger_body(privileged=True, server="gpu")
    packaged_schemas().current("cell_execution").validate(body)
    assert body["privileged"] is True
    assert body["claimed_privileged"] is False
    assert (body["witness"], body["server"], body["resources"]) == (
        "kernel",
        "gpu",
        ["dataset:sales"],
    )
    assert body["code"] == raw["code"]


def test_server_record_becomes_a_valid_ledger_body() -> None:
    """A server record has no outcome (status unknown) and names its Jupyter session."""
    record = parse_batch({"witness": "server", "records": [server_record(1)]}).records[0]
    body = record.ledger_body(privileged=False, server="")
    packaged_schemas().current("cell_execution").validate(body)
    assert body["status"] == "unknown"
    assert body["jupyter_session"] == "s-1"
    assert "session" not in body
    assert "claimed_privileged" not in body
    assert record.claimed_privileged is None


def test_truncated_code_keeps_the_hash_of_the_whole_source() -> None:
    """With code_truncated the hash need not match the kept code; empty ids are allowed."""
    raw = kernel_record(0, code="x = 1", code_sha256="0" * 64, code_truncated=True, msg_id="")
    raw["cell_id"] = ""
    record = parse_batch({"witness": "kernel", "records": [raw]}).records[0]
    assert (record.msg_id, record.cell_id) == ("", "")
    packaged_schemas().current("cell_execution").validate(
        record.ledger_body(privileged=False, server="")
    )


def test_an_empty_batch_is_valid() -> None:
    """A batch without records is accepted (and stores nothing)."""
    assert parse_batch({"witness": "server", "records": []}).records == ()


@pytest.mark.parametrize(
    ("since", "until", "held"),
    [
        pytest.param(150, 160, True, id="inside"),
        pytest.param(50, 99, False, id="before"),
        pytest.param(200, 210, False, id="after-expiry"),
        pytest.param(50, 210, True, id="spooled-across"),
        pytest.param(0, 150, True, id="clock-set-back"),
        pytest.param(500, 150, True, id="clock-set-forward"),
        pytest.param(500, 300, False, id="future-clock-after-expiry"),
    ],
)  # fmt: skip
def test_held_during(since: float, until: float, held: bool) -> None:
    """A grant counts if in force at any moment between the record's time and its arrival."""
    assert held_during([(100.0, 200.0)], since, until) is held
