"""``GET /api/v1/models``: the registered models a caller may see, with what they may do now.

For the JupyterLab catalog, beside ``/api/v1/datasets``: each model the policy
lets the caller list (``model.list``), with its policy attributes, aliases and
latest versions, and the actions (``model.read``, ``model.register``,
``model.export``, ``model.delete``) allowed right now. Like the dataset catalog,
these per-model checks answer "what may I do?" and are not recorded; the calls
that act on a model (through the gateway) are. Pages follow the registry's: the
``page_token`` of an answer asks for the next page, which may hold fewer models
than ``max_results`` when some are hidden.
"""

from __future__ import annotations

from typing import Any

from nbguard.errors import NBGuardError
from nbguard.hub_plugin.guard.handlers.base import APIHandler, GuardError, http_error
from nbguard.hub_plugin.guard.mlflow.upstream import UpstreamUnavailable
from nbguard.policy import EntityRef

#: The actions shown in each model's ``actions`` list.
SHOWN_ACTIONS = ("model.read", "model.register", "model.export", "model.delete")
_SEARCH = "api/2.0/mlflow/registered-models/search"
_MAX_RESULTS = 1000


class ModelListHandler(APIHandler):
    """GET /api/v1/models?max_results=&page_token=."""

    async def get(self) -> None:
        """``{"models": [...], "next_page_token"?}``, each with the caller's actions."""
        gateway = getattr(self.guard, "mlflow", None)
        if gateway is None:
            raise GuardError(
                404,
                "not_found",
                "No model registry is configured (GuardService.mlflow_tracking_uri).",
            )
        query: dict[str, Any] = {"max_results": self._max_results(), "order_by": "name ASC"}
        token = self.get_query_argument("page_token", "")
        if token:
            query["page_token"] = token
        who = await self.caller_context()
        try:
            answer = await gateway.call("GET", _SEARCH, query=query)
        except UpstreamUnavailable as error:
            self.guard.log.error("nbguard guard: %s", error)
            raise GuardError(503, "unavailable", error.user_message) from None
        except NBGuardError as error:
            raise http_error(error) from error
        if not answer.ok:
            raise GuardError(400, "bad_request", "The model registry refused the page token.")
        models = []
        for found in answer.body.get("registered_models") or []:
            if not isinstance(found, dict) or who.locks:
                continue
            attrs = gateway.attributes_of(found)
            try:
                self.guard.engine.upsert_entities([attrs.entity()])
                listed = self._allowed(who, "model.list", attrs.name)
            except NBGuardError as error:  # a name the policy cannot take: hidden
                self.guard.log.warning("nbguard guard: model hidden: %s", error)
                listed = False
            if not listed:
                continue
            models.append(
                {
                    "name": attrs.name,
                    "description": found.get("description") or "",
                    "team": attrs.team,
                    "sensitivity": attrs.sensitivity,
                    "environment": attrs.environment,
                    "owner": attrs.owner,
                    "aliases": {
                        a["alias"]: a["version"]
                        for a in found.get("aliases") or []
                        if isinstance(a, dict) and "alias" in a and "version" in a
                    },
                    "latest_versions": [
                        {"version": v.get("version"), "stage": v.get("current_stage")}
                        for v in found.get("latest_versions") or []
                        if isinstance(v, dict)
                    ],
                    "actions": [a for a in SHOWN_ACTIONS if self._allowed(who, a, attrs.name)],
                }
            )
        body: dict[str, Any] = {"models": models}
        if answer.body.get("next_page_token"):
            body["next_page_token"] = answer.body["next_page_token"]
        self.write_json(body)

    def _allowed(self, who: Any, action: str, name: str) -> bool:
        ref = EntityRef.of("Model", name)
        return self.guard.engine.decide(who.principal, action, ref, who.context).allowed

    def _max_results(self) -> int:
        text = self.get_query_argument("max_results", "100")
        if not text.isdigit() or not 1 <= int(text) <= _MAX_RESULTS:
            raise GuardError(400, "bad_request", f"max_results must be 1 to {_MAX_RESULTS}.")
        return int(text)
