"""Logged models and their artifacts: uploads by their author, downloads by policy.

``mlflow.<flavor>.log_model`` creates a *logged model* and uploads its files
through the artifact proxy; ``register_model`` then makes it a version of a
registered model. The gateway:

- tags each logged model it creates with its author (``nbguard.created_by``) and
  decides the creation as ``model.register`` on the author's drafts (a ``Model``
  named ``drafts:<user>`` with their team and the default sensitivity), so only
  roles that may register models in their team may log them;
- lets only the author upload files, and only while the logged model is still
  being written (``LOGGED_MODEL_PENDING``) and not registered, so a promoted
  version's files cannot be swapped afterwards;
- serves a logged model's files to its author, and to anyone else only as the
  files of the registered versions made from it, each decided ``model.export``
  (so ``load_model`` needs ``model.export``; so does ``get-download-uri``);
- registers versions only from logged models the caller wrote, so nobody can
  re-register another team's files under a model of lower sensitivity.

Only the artifact paths of logged models (``<experiment>/models/<id>/artifacts/...``)
are served; run artifacts and anything else are refused.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tornado import iostream

from nbguard.errors import NBGuardError
from nbguard.hub_plugin.guard.mlflow.attributes import (
    TAG_CREATED_BY,
    ModelAttributes,
    model_attributes,
    new_model_tags,
    tag_map,
)
from nbguard.hub_plugin.guard.mlflow.base import MLflowHandlerBase, mlflow_error

if TYPE_CHECKING:
    from nbguard.hub_plugin.guard.contexts import CallerContext

_LOGGED = "api/2.0/mlflow/logged-models"
_ARTIFACTS = "api/2.0/mlflow-artifacts/artifacts"
_SEARCH_VERSIONS = "api/2.0/mlflow/model-versions/search"
_MODEL_ID = re.compile(r"^m-[0-9a-f]{1,64}$")
_SOURCE = re.compile(r"^models:/(m-[0-9a-f]{1,64})/?$")
_LOCATION = re.compile(r"^mlflow-artifacts:/+([0-9]{1,19}/models/(m-[0-9a-f]{1,64})/artifacts)/?$")
_ARTIFACT_PATH = re.compile(r"^[0-9]{1,19}/models/(m-[0-9a-f]{1,64})/artifacts(?:/.*)?$")
#: A logged model's status while its files are being written, and the ones it may end in.
_PENDING = "LOGGED_MODEL_PENDING"
_FINAL = ("LOGGED_MODEL_READY", "LOGGED_MODEL_UPLOAD_FAILED")
#: Versions checked per artifact request (each decided ``model.export``).
_MAX_VERSIONS = 20
#: What ``/api/3.0/mlflow/server-info`` says: plain uploads and downloads through the
#: gateway, never multipart or pre-signed URLs that would bypass it.
SERVER_INFO = {
    "store_type": "SqlStore",
    "workspaces_enabled": False,
    "trace_archival_enabled": False,
    "multipart_uploads_enabled": False,
    "multipart_downloads_enabled": False,
    "presigned_upload_run_id_supported": False,
    "presigned_upload_model_id_supported": False,
    "features_enabled": {},
}


def logged_model_id(source: Any, model_id: Any) -> str:
    """The logged model a version's ``source`` (and ``model_id``) names, "" if none."""
    found = ""
    if isinstance(source, str):
        if match := _SOURCE.fullmatch(source):
            found = match.group(1)
        elif match := _LOCATION.fullmatch(source):
            found = match.group(2)
    if model_id not in (None, "") and model_id != found:
        return ""
    return found


def check_artifact_path(path: str) -> str:
    """The logged model id of an artifact path; 403 for any other path, 400 if malformed."""
    parts = path.split("/")
    if (
        len(path) > 2048
        or any(part in ("", ".", "..") for part in parts[:-1])
        or parts[-1] in (".", "..")
        or any(c in path for c in "\\\x00")
        or any(ord(c) < 32 for c in path)
    ):
        raise mlflow_error(400, "The artifact path is not valid.")
    match = _ARTIFACT_PATH.fullmatch(path.rstrip("/"))
    if not match:
        raise mlflow_error(
            403, "nbguard serves only the files of logged models (<experiment>/models/<id>/...)."
        )
    return match.group(1)


def within(info: dict[str, Any], path: str) -> None:
    """403 unless ``path`` lies in the logged model's own artifact location."""
    match = _LOCATION.fullmatch(str(info.get("artifact_uri", "")))
    root = match.group(1) if match else None
    if root is None or not (path.rstrip("/") == root or path.startswith(root + "/")):
        raise mlflow_error(403, "The path is not in the logged model's artifact location.")


class LoggedModelOperations(MLflowHandlerBase):
    """Logged models, the artifact proxy and server-info."""

    # -- who may touch a logged model --------------------------------------------------------

    def drafts(self, user: str) -> ModelAttributes:
        """The ``Model`` standing for ``user``'s unregistered uploads."""
        settings = self.gateway.settings
        tags = new_model_tags(user, self.teams_of(user), settings)
        return model_attributes(f"drafts:{user}", tags, settings)

    async def logged_model(self, model_id: str) -> dict[str, Any]:
        """The registry's logged-model info; MLflow's 404 if there is none."""
        if not _MODEL_ID.fullmatch(model_id):
            raise mlflow_error(400, "A model id looks like m-<hex>.")
        answer = await self.upstream("GET", f"{_LOGGED}/{model_id}")
        self.relay(answer)
        info = (answer.body.get("model") or {}).get("info")
        if not isinstance(info, dict):
            raise mlflow_error(404, f"Logged model {model_id} not found")
        return info

    async def own_logged_model(
        self, who: CallerContext, model_id: str, action: str = "model.register"
    ) -> dict[str, Any]:
        """The caller's own logged model, decided ``action`` on their drafts; 403 otherwise."""
        info = await self.logged_model(model_id)
        if tag_map(info.get("tags")).get(TAG_CREATED_BY) != who.name:
            raise mlflow_error(
                403, f"Logged model {model_id} was not logged by you through nbguard."
            )
        await self.decide_entity(who, action, self.drafts(who.name).entity())
        return info

    async def versions_of(self, model_id: str) -> list[dict[str, Any]]:
        """The registered versions made from a logged model (read with the service's rights)."""
        query = {"filter": f"source_path='models:/{model_id}'", "max_results": _MAX_VERSIONS}
        answer = await self.upstream("GET", _SEARCH_VERSIONS, query=query)
        self.relay(answer)
        found = answer.body.get("model_versions") or []
        return [v for v in found if isinstance(v, dict) and isinstance(v.get("name"), str)]

    async def may_read_files(self, model_id: str, action: str, path: str = "") -> dict[str, Any]:
        """Decide a read of a logged model's files (``path``: one of them, or a folder):
        its author, or ``action`` on every registered version made from it."""
        who = await self.who()
        info = await self.logged_model(model_id)
        if path:
            within(info, path)
        if tag_map(info.get("tags")).get(TAG_CREATED_BY) == who.name:
            await self.decide_entity(who, "model.read", self.drafts(who.name).entity())
            return info
        versions = await self.versions_of(model_id)
        if not versions:
            raise mlflow_error(
                403,
                f"Logged model {model_id} is not a registered model version, and only its "
                "author may read it.",
            )
        for found in versions:
            attrs = await self.model(found["name"])
            await self.decide_entity(who, action, self.version_item(attrs, found))
        return info

    # -- logged models ---------------------------------------------------------------------------

    async def create_logged_model(self, args: dict[str, Any]) -> None:
        """Start logging a model (``model.register`` on the caller's drafts)."""
        tags = tag_map(args.get("tags"))
        self.refuse_reserved(list(tags))
        who = await self.who()
        await self.decide_entity(who, "model.register", self.drafts(who.name).entity())
        given = args.get("tags") if isinstance(args.get("tags"), list) else []
        body = {**args, "tags": [*given, {"key": TAG_CREATED_BY, "value": who.name}]}
        self.answer(await self.upstream("POST", _LOGGED, body=body))

    async def get_logged_model(self, args: dict[str, Any], model_id: str) -> None:
        """A logged model: to its author, or as a registered version's source (``model.read``)."""
        await self.may_read_files(model_id, "model.read")
        self.answer(await self.upstream("GET", f"{_LOGGED}/{model_id}"))

    async def update_logged_model(self, args: dict[str, Any], rest: str) -> None:
        """Finish a logged model (status) or tag it: its author only."""
        model_id, _, tail = rest.partition("/")
        if tail not in ("", "tags"):
            raise mlflow_error(
                404, "This MLflow endpoint is not served by nbguard.", "ENDPOINT_NOT_FOUND"
            )
        who = await self.who()
        if tail == "tags":
            self.refuse_reserved(list(tag_map(args.get("tags"))))
        elif args.get("status") not in _FINAL:
            raise mlflow_error(
                400, f"A logged model's status may only become {' or '.join(_FINAL)}."
            )
        await self.own_logged_model(who, model_id)
        self.answer(await self.upstream("PATCH", f"{_LOGGED}/{rest}", body=args))

    # -- artifacts -----------------------------------------------------------------------------

    async def list_artifacts(self, args: dict[str, Any]) -> None:
        """The files in a folder of a logged model (read as its files are)."""
        path = str(args.get("path", "")).strip("/")
        model_id = check_artifact_path(path)
        await self.may_read_files(model_id, "model.export", path)
        self.answer(await self.upstream("GET", _ARTIFACTS, query={"path": path}))

    async def download_artifact(self, args: dict[str, Any], path: str) -> None:
        """One file of a logged model, streamed (``model.export`` on its versions)."""
        model_id = check_artifact_path(path)
        await self.may_read_files(model_id, "model.export", path)
        started = False
        try:
            async with self.gateway.upstream.stream(f"{_ARTIFACTS}/{quote(path)}") as answer:
                if answer.status != 200:
                    raise mlflow_error(
                        404 if answer.status == 404 else 400, f"Artifact {path} not found."
                    )
                self.set_header("Content-Type", "application/octet-stream")
                if answer.content_length is not None:
                    self.set_header("Content-Length", str(answer.content_length))
                async for chunk in answer.chunks():
                    self.write(chunk)
                    started = True
                    # The next piece is taken only once this one is on its way: a slow
                    # reader holds back the registry, not the service's memory.
                    await self.flush()
        except NBGuardError as error:
            if started:  # headers are out: cut the answer short
                self.request.connection.close()
                return
            raise self.fail(error) from None
        except iostream.StreamClosedError:
            return
        self.finish()

    async def upload_artifact(self, args: dict[str, Any], path: str) -> None:
        """One file into the caller's own logged model while it is being written."""
        model_id = check_artifact_path(path)
        who = await self.who()
        info = await self.own_logged_model(who, model_id)
        within(info, path)
        if info.get("status") != _PENDING or await self.versions_of(model_id):
            raise mlflow_error(
                403, f"Logged model {model_id} is finished; its files can no longer change."
            )
        body = self.request.body
        content_type = self.request.headers.get("Content-Type", "application/octet-stream")
        try:
            answer = await self.gateway.upstream.send_raw(
                "PUT", f"{_ARTIFACTS}/{quote(path)}", body=body, content_type=content_type
            )
        except NBGuardError as error:
            raise self.fail(error) from None
        self.answer(answer)

    async def server_info(self, args: dict[str, Any]) -> None:
        """What the client may use: plain transfers through the gateway (not recorded:
        no governed resource)."""
        self.write_json(SERVER_INFO)
