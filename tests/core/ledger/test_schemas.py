"""Record schemas: shipped, versioned, enforced on append with the offending field named."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

from nbguard.errors import ConfigError, RecordValidationError
from nbguard.ledger.schemas import SchemaRegistry, packaged_schemas

from .conftest import SAMPLES

KINDS = sorted(SAMPLES)


def test_every_record_kind_is_shipped() -> None:
    """The package ships one schema per record kind the hub records."""
    assert packaged_schemas().kinds == KINDS


@pytest.mark.parametrize("kind", KINDS)
def test_shipped_schema_is_versioned(kind: str) -> None:
    """Each schema file has a $id naming its kind and version, and an integer version."""
    schema = packaged_schemas().current(kind)
    assert schema.schema_id == f"urn:nbguard:ledger:{kind}:v{schema.version}"
    folder = resources.files("nbguard.ledger") / "schemas"
    document = json.loads((folder / f"{kind}.v{schema.version}.json").read_text())
    assert document["version"] == schema.version
    assert document["additionalProperties"] is False


@pytest.mark.parametrize("kind", KINDS)
def test_sample_record_is_valid(kind: str) -> None:
    """The sample body of each kind validates (so the table below tests what it claims)."""
    packaged_schemas().current(kind).validate(SAMPLES[kind])


@pytest.mark.parametrize(
    ("kind", "change", "field"),
    [
        pytest.param("access", {"allowed": "yes"}, "body.allowed", id="wrong-type"),
        pytest.param("access", {"correlation_id": None}, "body.correlation_id", id="null"),
        pytest.param("access", {"extra": 1}, "body.extra", id="unknown-field"),
        pytest.param("access", {"cell": {"cell_id": "c"}}, "body.cell.kernel_id", id="nested"),
        pytest.param("login", {"outcome": "maybe"}, "body.outcome", id="enum"),
        pytest.param("mfa", {"event": "guess"}, "body.event", id="mfa-event"),
        pytest.param("elevation", {"event": "break-in"}, "body.event", id="elevation-event"),
        pytest.param("cell_execution", {"seq": -1}, "body.seq", id="negative-seq"),
        pytest.param("cell_execution", {"output_digest": "xyz"}, "body.output_digest", id="hex"),
        pytest.param("alert", {"details": {"k": {"nested": 1}}}, "body.details.k", id="details"),
        pytest.param("review", {"action": "delete"}, "body.action", id="review-action"),
        pytest.param("spawn", {"policy_ids": "p1"}, "body.policy_ids", id="not-array"),
    ],
)
def test_invalid_body_names_the_field(kind: str, change: dict[str, Any], field: str) -> None:
    """A body that breaks its schema raises RecordValidationError naming the JSON path."""
    body = {**SAMPLES[kind], **change}
    with pytest.raises(RecordValidationError) as caught:
        packaged_schemas().current(kind).validate(body)
    assert caught.value.field == field
    assert field in str(caught.value)


def test_missing_required_field_is_named() -> None:
    """A missing required property is reported as that property's path."""
    body = dict(SAMPLES["access"])
    del body["principal"]
    with pytest.raises(RecordValidationError) as caught:
        packaged_schemas().current("access").validate(body)
    assert caught.value.field == "body.principal"


def test_cell_execution_needs_code_or_its_hash() -> None:
    """A cell execution record must carry the code or its SHA-256."""
    body = {k: v for k, v in SAMPLES["cell_execution"].items() if k != "code"}
    with pytest.raises(RecordValidationError):
        packaged_schemas().current("cell_execution").validate(body)
    packaged_schemas().current("cell_execution").validate({**body, "code_sha256": "0" * 64})


def test_unknown_kind_is_refused() -> None:
    """Appending a kind with no schema fails naming the kind."""
    with pytest.raises(RecordValidationError) as caught:
        packaged_schemas().current("coffee")
    assert caught.value.field == "kind"


def _schema(**properties: Any) -> dict[str, Any]:
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": "urn:nbguard:ledger:demo:v1",
        "version": 1,
        "type": "object",
        "properties": properties,
    }


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        pytest.param({**_schema(), "$id": "https://x"}, "$id must look like", id="bad-id"),
        pytest.param({**_schema(), "version": 2}, "does not match", id="version-mismatch"),
        pytest.param(_schema(score={"type": "number"}), "no floats", id="number-type"),
        pytest.param(
            _schema(
                o={"type": "object", "properties": {"p": {"type": "string", "x-personal": True}}}
            ),
            "top-level",
            id="nested-personal",
        ),
        pytest.param({**_schema(), "type": "nonsense"}, "draft-07", id="invalid-schema"),
    ],
)
def test_bad_schema_documents_are_refused(document: dict[str, Any], problem: str) -> None:
    """Schemas are checked when loaded: id, version, no floats, personal marks on top only."""
    with pytest.raises(ConfigError, match=r"demo\.json") as caught:
        SchemaRegistry.from_documents({"demo.json": document})
    assert problem in str(caught.value)


def test_newest_version_is_current_and_old_ones_stay() -> None:
    """Appends use the newest version; older versions remain for verifying old records."""
    v1 = _schema(a={"type": "string"})
    v2 = {
        **_schema(a={"type": "string"}, b={"type": "string"}),
        "$id": "urn:nbguard:ledger:demo:v2",
    }
    registry = SchemaRegistry.from_documents({"v1": v1, "v2": {**v2, "version": 2}})
    assert registry.current("demo").version == 2
    assert registry.get("demo", 1).version == 1
