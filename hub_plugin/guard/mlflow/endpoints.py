"""Which MLflow REST endpoints the gateway serves, and how each is decided.

Every endpoint the gateway serves is listed here with the operation that handles
it and the policy action that decides it; any other path or method is refused
(``ENDPOINT_NOT_FOUND``), never passed through. Experiments, runs, traces,
prompts, webhooks and the rest of the tracking API are not served: the gateway
covers the model registry and what the client needs to log, register and load a
model.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The gateway's mount point under the service prefix; ``MLFLOW_TRACKING_URI`` ends here.
GATEWAY_PATH = "mlflow"

_REGISTRY = "api/2.0/mlflow/registered-models/"
_VERSIONS = "api/2.0/mlflow/model-versions/"
_LOGGED = "api/2.0/mlflow/logged-models"
_ARTIFACTS = "api/2.0/mlflow-artifacts/artifacts"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One served endpoint: the operation (a gateway method) and the action deciding it."""

    operation: str
    action: str


#: ``(method, path)`` -> endpoint, for paths without a variable part.
FIXED: dict[tuple[str, str], Endpoint] = {
    ("POST", _REGISTRY + "create"): Endpoint("create_model", "model.register"),
    ("GET", _REGISTRY + "get"): Endpoint("get_model", "model.read"),
    ("GET", _REGISTRY + "search"): Endpoint("search_models", "model.list"),
    ("PATCH", _REGISTRY + "update"): Endpoint("update_model", "model.register"),
    ("DELETE", _REGISTRY + "delete"): Endpoint("delete_model", "model.delete"),
    ("POST", _REGISTRY + "set-tag"): Endpoint("set_model_tag", "model.register"),
    ("DELETE", _REGISTRY + "delete-tag"): Endpoint("delete_model_tag", "model.register"),
    ("POST", _REGISTRY + "alias"): Endpoint("set_alias", "model.promote"),
    ("DELETE", _REGISTRY + "alias"): Endpoint("delete_alias", "model.promote"),
    ("GET", _REGISTRY + "alias"): Endpoint("get_by_alias", "model.read"),
    ("POST", _REGISTRY + "get-latest-versions"): Endpoint("latest_versions", "model.read"),
    ("GET", _REGISTRY + "get-latest-versions"): Endpoint("latest_versions", "model.read"),
    ("POST", _VERSIONS + "create"): Endpoint("create_version", "model.register"),
    ("GET", _VERSIONS + "get"): Endpoint("get_version", "model.read"),
    ("GET", _VERSIONS + "search"): Endpoint("search_versions", "model.list"),
    ("PATCH", _VERSIONS + "update"): Endpoint("update_version", "model.register"),
    ("DELETE", _VERSIONS + "delete"): Endpoint("delete_version", "model.delete"),
    ("POST", _VERSIONS + "transition-stage"): Endpoint("transition_stage", "model.promote"),
    ("POST", _VERSIONS + "set-tag"): Endpoint("set_version_tag", "model.register"),
    ("DELETE", _VERSIONS + "delete-tag"): Endpoint("delete_version_tag", "model.register"),
    ("GET", _VERSIONS + "get-download-uri"): Endpoint("download_uri", "model.export"),
    # Logging a model (MLflow 3 "logged models"): the caller's own uploads.
    ("POST", _LOGGED): Endpoint("create_logged_model", "model.register"),
    ("GET", _ARTIFACTS): Endpoint("list_artifacts", "model.export"),
    # Answered by the gateway itself: plain uploads and downloads only.
    ("GET", "api/3.0/mlflow/server-info"): Endpoint("server_info", ""),
}

#: ``(method, path prefix)`` -> endpoint, for paths ending in an id or a file path;
#: the rest of the path is the operation's argument.
PREFIXED: dict[tuple[str, str], Endpoint] = {
    ("GET", _LOGGED + "/"): Endpoint("get_logged_model", "model.read"),
    ("PATCH", _LOGGED + "/"): Endpoint("update_logged_model", "model.register"),
    ("GET", _ARTIFACTS + "/"): Endpoint("download_artifact", "model.export"),
    ("PUT", _ARTIFACTS + "/"): Endpoint("upload_artifact", "model.register"),
}

#: Registry endpoints known and deliberately refused, with the reason the caller reads.
REFUSED: dict[str, str] = {
    _REGISTRY + "rename": (
        "Renaming a registered model is not supported through nbguard (its policy "
        "attributes and history are kept under its name); ask an administrator."
    ),
}


def find_endpoint(method: str, path: str) -> tuple[Endpoint, str] | None:
    """The endpoint serving ``method path`` and the path's variable part, or None."""
    found = FIXED.get((method, path))
    if found is not None:
        return found, ""
    for (verb, prefix), endpoint in PREFIXED.items():
        if verb == method and path.startswith(prefix) and len(path) > len(prefix):
            return endpoint, path[len(prefix) :]
    return None
