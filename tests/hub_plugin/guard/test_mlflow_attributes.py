"""The gateway's pure rules: names, reserved tags, attributes from tags, versions' environment,
version sources and artifact paths (no server)."""

from __future__ import annotations

import pytest

from nbguard.errors import RequestError
from nbguard.hub_plugin.guard.mlflow.attributes import (
    UNKNOWN_USER,
    ModelSettings,
    check_model_name,
    check_version,
    model_attributes,
    registrant,
    reserved_keys,
    version_environment,
)
from nbguard.hub_plugin.guard.mlflow.base import GuardError
from nbguard.hub_plugin.guard.mlflow.logged import check_artifact_path, logged_model_id

SETTINGS = ModelSettings()
M = "m-0123abcd"


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        pytest.param("fraud", True, id="plain"),
        pytest.param("Fraud model v2.1_x-y", True, id="spaces-dots"),
        pytest.param("a", True, id="one-char"),
        pytest.param("a/b", False, id="slash"),
        pytest.param("drafts:alice", False, id="colon-drafts"),
        pytest.param(" lead", False, id="leading-space"),
        pytest.param("trail ", False, id="trailing-space"),
        pytest.param("x" * 129, False, id="too-long"),
        pytest.param("tab\tname", False, id="control"),
        pytest.param("", False, id="empty"),
        pytest.param(None, False, id="missing"),
        pytest.param(["fraud"], False, id="list"),
    ],
)
def test_model_names(name: object, ok: bool) -> None:
    """Only plain names are served; anything that could alias a version id is refused."""
    if ok:
        assert check_model_name(name) == name
    else:
        with pytest.raises(RequestError):
            check_model_name(name)


@pytest.mark.parametrize(
    ("version", "ok"),
    [("1", True), (7, True), ("0", False), ("-1", False), ("1.0", False), (True, False)],
)
def test_versions(version: object, ok: bool) -> None:
    """A version is a positive whole number."""
    if ok:
        assert check_version(version) == str(version)
    else:
        with pytest.raises(RequestError):
            check_version(version)


def test_reserved_keys_any_case() -> None:
    """nbguard's tags are recognised whatever their case."""
    keys = ["nbguard.team", "NBGuard.Sensitivity", "purpose", "mlflow.user", 3]
    assert reserved_keys(keys) == ["NBGuard.Sensitivity", "nbguard.team"]


@pytest.mark.parametrize(
    ("tags", "models", "expected"),
    [
        pytest.param({}, {}, ("unassigned", "confidential", "train", ""), id="defaults"),
        pytest.param(
            {"nbguard.team": "risk", "nbguard.sensitivity": "public", "nbguard.owner": "bob"},
            {},
            ("risk", "public", "train", "bob"),
            id="from-tags",
        ),
        pytest.param(
            {"nbguard.sensitivity": "public"},
            {"fraud": {"sensitivity": "restricted", "team": "ml"}},
            ("ml", "restricted", "train", ""),
            id="admin-settings-win",
        ),
        pytest.param(
            {"nbguard.sensitivity": "secret", "nbguard.environment": "staging"},
            {},
            ("unassigned", "restricted", "prod", ""),
            id="unknown-values-strictest",
        ),
        pytest.param(
            {"nbguard.team": "a b", "nbguard.owner": "x\ny"},
            {},
            ("unassigned", "confidential", "train", ""),
            id="malformed-names-dropped",
        ),
    ],
)
def test_model_attributes(
    tags: dict[str, str], models: dict[str, dict[str, str]], expected: tuple[str, ...]
) -> None:
    """Admin settings over reserved tags over defaults; bad values fail closed."""
    attrs = model_attributes("fraud", tags, ModelSettings(models=models))
    assert (attrs.team, attrs.sensitivity, attrs.environment, attrs.owner) == expected


@pytest.mark.parametrize(
    ("stage", "aliases", "expected"),
    [
        pytest.param("Production", [], "prod", id="production"),
        pytest.param("Staging", [], "test", id="staging"),
        pytest.param("None", ["champion"], "prod", id="champion"),
        pytest.param("None", ["CHAMPION"], "prod", id="champion-any-case"),
        pytest.param("Archived", ["challenger"], "train", id="other-alias"),
        pytest.param("None", [], "train", id="model-environment"),
    ],
)
def test_version_environment(stage: str, aliases: list[str], expected: str) -> None:
    """Production or a prod alias is prod; Staging is test; otherwise the model's."""
    assert version_environment(stage, aliases, "train", SETTINGS) == expected


def test_registrant_is_only_what_the_gateway_wrote() -> None:
    """Without a well-formed nbguard.registered_by the registrant is unknown."""
    assert registrant({"nbguard.registered_by": "bob"}) == "bob"
    assert registrant({"mlflow.user": "bob"}) == UNKNOWN_USER
    assert registrant({"nbguard.registered_by": "bob; drop"}) == UNKNOWN_USER


@pytest.mark.parametrize(
    ("source", "model_id", "expected"),
    [
        pytest.param(f"models:/{M}", None, M, id="models-uri"),
        pytest.param(f"models:/{M}", M, M, id="models-uri-and-id"),
        pytest.param(f"mlflow-artifacts:/0/models/{M}/artifacts", "", M, id="location"),
        pytest.param(f"models:/{M}", "m-ffff", "", id="id-disagrees"),
        pytest.param("runs:/abc/model", None, "", id="run-source"),
        pytest.param("s3://bucket/models/m-0123abcd", None, "", id="other-store"),
        pytest.param("models:/fraud/1", None, "", id="registered-model-uri"),
        pytest.param(None, M, "", id="id-without-source"),
    ],
)
def test_version_sources(source: object, model_id: object, expected: str) -> None:
    """A version's source must name one logged model (and agree with model_id)."""
    assert logged_model_id(source, model_id) == expected


@pytest.mark.parametrize(
    ("path", "status"),
    [
        pytest.param(f"0/models/{M}/artifacts/MLmodel", 200, id="file"),
        pytest.param(f"0/models/{M}/artifacts", 200, id="folder"),
        pytest.param(f"12/models/{M}/artifacts/sub/x.pkl", 200, id="nested"),
        pytest.param(f"0/models/{M}/artifacts/../../m-1/artifacts/x", 400, id="dot-dot"),
        pytest.param(f"0/models/{M}/artifacts/./x", 400, id="dot"),
        pytest.param(f"0/models/{M}//artifacts/x", 400, id="empty-part"),
        pytest.param(f"0/models/{M}/artifacts/a\\b", 400, id="backslash"),
        pytest.param(f"0/models/{M}/artifacts/a\x00", 400, id="nul"),
        pytest.param("0/abc123/artifacts/model.pkl", 403, id="run-artifact"),
        pytest.param(f"0/models/{M}/other", 403, id="outside-artifacts"),
        pytest.param("", 403, id="root"),
    ],
)
def test_artifact_paths(path: str, status: int) -> None:
    """Only files of logged models are served; traversal is refused before any call."""
    if status == 200:
        assert check_artifact_path(path) == M
    else:
        with pytest.raises(GuardError) as refused:
            check_artifact_path(path)
        assert refused.value.status_code == status
