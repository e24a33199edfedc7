"""Registered models and model versions: each call decided on the model or version.

Reads are forwarded first and decided on what the registry returned (one round
trip), and nothing is sent to the caller before the decision. Writes are decided
before they are forwarded. Promotions (aliases, stage transitions) are decided on
the version as it would be afterwards, so ``champion`` or ``Production`` counts as
prod. Searches are filtered to what the caller may list; the registry's page
token is passed on unchanged, so a page may hold fewer results than asked for,
never results from another page or hidden ones.
"""

from __future__ import annotations

import asyncio
from typing import Any

from nbguard.hub_plugin.guard.mlflow.attributes import (
    RESERVED_PREFIX,
    STAGES,
    TAG_REGISTERED_BY,
    UNKNOWN_USER,
    ModelAttributes,
    model_attributes,
    new_model_tags,
    registrant,
    tag_map,
)
from nbguard.hub_plugin.guard.mlflow.base import mlflow_error
from nbguard.hub_plugin.guard.mlflow.logged import LoggedModelOperations, logged_model_id

_REGISTRY = "api/2.0/mlflow/registered-models/"
_VERSIONS = "api/2.0/mlflow/model-versions/"
_SEARCH_FIELDS = ("filter", "max_results", "order_by", "page_token")


class RegistryOperations(LoggedModelOperations):
    """The registered-model and model-version endpoints."""

    # -- registered models -------------------------------------------------------------------

    async def create_model(self, args: dict[str, Any]) -> None:
        """Create a model (``model.register``); nbguard's tags name its team and sensitivity."""
        name = self.model_name(args)
        tags = tag_map(args.get("tags"))
        self.refuse_reserved(list(tags))
        who = await self.who()
        existing = await self.maybe_model(name)
        settings = self.gateway.settings
        attrs = existing or model_attributes(
            name, new_model_tags(who.name, self.teams_of(who.name), settings), settings
        )
        await self.decide_entity(who, "model.register", attrs.entity())
        if existing is None:
            given = args.get("tags") if isinstance(args.get("tags"), list) else []
            args = {
                **args,
                "tags": [
                    *given,
                    *({"key": k, "value": v} for k, v in self._own_tags(attrs).items()),
                ],
            }
        self.gateway.forget(name)
        self.answer(await self.upstream("POST", _REGISTRY + "create", body=args))

    @staticmethod
    def _own_tags(attrs: Any) -> dict[str, str]:
        out = {
            "nbguard.team": attrs.team,
            "nbguard.sensitivity": attrs.sensitivity,
            "nbguard.environment": attrs.environment,
        }
        if attrs.owner:
            out["nbguard.owner"] = attrs.owner
        return out

    async def get_model(self, args: dict[str, Any]) -> None:
        """A model with its latest versions (``model.read``)."""
        name = self.model_name(args)
        fetch = asyncio.ensure_future(self.upstream("GET", _REGISTRY + "get", query={"name": name}))
        try:
            # The caller's context, then an early decision, while the registry answers.
            who = await self.who()
            async with self.early_decision(who, "model.read", name) as early:
                answer = await fetch
                self.relay(answer)
                found = answer.body.get("registered_model")
                if not isinstance(found, dict) or found.get("name") != name:
                    raise mlflow_error(404, f"Registered Model with name={name} not found")
                item = self.gateway.attributes_of(found).entity()
                self.gateway.remember(name, "", item)
                await early.settle(item)
        finally:
            await self.settled(fetch)
        self.write_json(answer.body)

    async def search_models(self, args: dict[str, Any]) -> None:
        """The models the caller may list (``model.list`` each; one record per search)."""
        query = {k: v for k, v in args.items() if k in _SEARCH_FIELDS}
        answer = await self.upstream("GET", _REGISTRY + "search", query=query)
        self.relay(answer)
        who = await self.who()
        shown = []
        for found in answer.body.get("registered_models") or []:
            if not isinstance(found, dict):
                continue
            attrs = self.gateway.attributes_of(found)
            if self.allowed(who, "model.list", attrs.entity()):
                shown.append(found)
        await self.record_listing(who, "model.list")
        body: dict[str, Any] = {"registered_models": shown}
        if answer.body.get("next_page_token"):
            body["next_page_token"] = answer.body["next_page_token"]
        self.write_json(body)

    async def update_model(self, args: dict[str, Any]) -> None:
        """Change a model's description (``model.register``)."""
        name = self.model_name(args)
        attrs = await self.model(name)
        await self.decide_entity(await self.who(), "model.register", attrs.entity())
        self.answer(await self.upstream("PATCH", _REGISTRY + "update", body=args))

    async def delete_model(self, args: dict[str, Any]) -> None:
        """Delete a model and its versions (``model.delete``)."""
        name = self.model_name(args)
        attrs = await self.model(name)
        await self.decide_entity(await self.who(), "model.delete", attrs.entity())
        self.gateway.forget(name)
        self.answer(await self.upstream("DELETE", _REGISTRY + "delete", body={"name": name}))

    async def set_model_tag(self, args: dict[str, Any]) -> None:
        """Set a model tag (``model.register``; nbguard's own tags: admins only)."""
        await self._model_tag(args, "set-tag", "POST")

    async def delete_model_tag(self, args: dict[str, Any]) -> None:
        """Delete a model tag (as setting one)."""
        await self._model_tag(args, "delete-tag", "DELETE")

    async def _model_tag(self, args: dict[str, Any], endpoint: str, method: str) -> None:
        name = self.model_name(args)
        attrs = await self.model(name)
        await self._decide_tag(args, attrs.entity())
        self.gateway.forget(name)
        self.answer(await self.upstream(method, _REGISTRY + endpoint, body=args))

    async def _decide_tag(self, args: dict[str, Any], item: dict[str, Any]) -> None:
        """A tag change: ``model.register`` on ``item``; nbguard's own tags: admins only."""
        key = args.get("key")
        if not isinstance(key, str) or not key:
            raise mlflow_error(400, "A tag needs a key.")
        who = await self.who()
        if key.lower().startswith(RESERVED_PREFIX):
            await self.require_admin_for_tags(who)
        else:
            await self.decide_entity(who, "model.register", item)

    # -- aliases and stages (promotion) ------------------------------------------------------

    async def set_alias(self, args: dict[str, Any]) -> None:
        """Point an alias at a version (``model.promote`` on the version with the alias)."""
        name = self.model_name(args)
        version = self.version_number(args)
        alias = args.get("alias")
        if not isinstance(alias, str) or not alias or len(alias) > 256:
            raise mlflow_error(400, "An alias is a non-empty name.")
        attrs = await self.model(name)
        found = await self.version(name, version)
        aliases = sorted({*found.get("aliases", []), alias})
        target = self.version_item(
            attrs, found, aliases=aliases, entity_id=f"{name}/{version}@{alias}"
        )
        await self._promote(attrs, found, target)
        self.answer(await self.upstream("POST", _REGISTRY + "alias", body=args))

    async def delete_alias(self, args: dict[str, Any]) -> None:
        """Remove an alias (``model.promote`` on the version it named, without it)."""
        name = self.model_name(args)
        alias = args.get("alias")
        if not isinstance(alias, str) or not alias:
            raise mlflow_error(400, "An alias is a non-empty name.")
        attrs = await self.model(name)
        answer = await self.upstream(
            "GET", _REGISTRY + "alias", query={"name": name, "alias": alias}
        )
        self.relay(answer)
        found = answer.body.get("model_version") or {}
        aliases = [a for a in found.get("aliases", []) if a != alias]
        version = str(found.get("version", ""))
        target = self.version_item(
            attrs, found, aliases=aliases, entity_id=f"{name}/{version}-{alias}"
        )
        await self._promote(attrs, found, target)
        self.answer(await self.upstream("DELETE", _REGISTRY + "alias", body=args))

    async def get_by_alias(self, args: dict[str, Any]) -> None:
        """The version an alias names (``model.read`` on that version)."""
        name = self.model_name(args)
        attrs = await self.model(name)
        query = {"name": name, "alias": str(args.get("alias", ""))}
        answer = await self.upstream("GET", _REGISTRY + "alias", query=query)
        self.relay(answer)
        found = answer.body.get("model_version") or {}
        await self.decide_entity(await self.who(), "model.read", self.version_item(attrs, found))
        self.write_json(answer.body)

    async def transition_stage(self, args: dict[str, Any]) -> None:
        """Move a version to a stage (``model.promote`` on the version in that stage)."""
        name = self.model_name(args)
        version = self.version_number(args)
        stage = args.get("stage")
        wanted = next(
            (s for s in STAGES if isinstance(stage, str) and s.lower() == stage.lower()), ""
        )
        if not wanted:
            raise mlflow_error(400, f"The stage must be one of {', '.join(STAGES)}.")
        if args.get("archive_existing_versions") in (True, "true", "True"):
            raise mlflow_error(
                400,
                "archive_existing_versions is not supported through nbguard (each version's "
                "change is decided on its own): archive the other versions one by one.",
            )
        attrs = await self.model(name)
        found = await self.version(name, version)
        target = self.version_item(
            attrs, found, stage=wanted, entity_id=f"{name}/{version}->{wanted}"
        )
        await self._promote(attrs, found, target)
        self.answer(await self.upstream("POST", _VERSIONS + "transition-stage", body=args))

    async def _promote(
        self, attrs: ModelAttributes, found: dict[str, Any], target: dict[str, Any]
    ) -> None:
        """Decide ``model.promote`` on ``target``; a version nbguard did not see
        registered has no known author, so separation of duties cannot be checked.

        The version as it is now is known to the policy entities too, so that a grant
        for it (``modelversion:NAME/VERSION``, which the denial names) can be asked for.
        """
        self.guard.engine.upsert_entities([self.version_item(attrs, found)])
        who = await self.who()
        if registrant(tag_map(found.get("tags"))) == UNKNOWN_USER:
            raise mlflow_error(
                403,
                "This version was registered outside nbguard, so who registered it is "
                f"unknown and it cannot be promoted; an administrator can set its "
                f"'{TAG_REGISTERED_BY}' tag.",
            )
        await self.decide_entity(who, "model.promote", target)

    # -- model versions ------------------------------------------------------------------------

    async def latest_versions(self, args: dict[str, Any]) -> None:
        """The latest version per stage (``model.read`` on the model)."""
        name = self.model_name(args)
        attrs = await self.model(name)
        await self.decide_entity(await self.who(), "model.read", attrs.entity())
        stages = args.get("stages")
        body: dict[str, Any] = {"name": name}
        if isinstance(stages, list):
            body["stages"] = [s for s in stages if isinstance(s, str)]
        self.answer(await self.upstream("POST", _REGISTRY + "get-latest-versions", body=body))

    async def create_version(self, args: dict[str, Any]) -> None:
        """Register a version (``model.register`` on the model) from a model the caller
        logged through nbguard; nbguard records who registered it."""
        name = self.model_name(args)
        tags = tag_map(args.get("tags"))
        self.refuse_reserved(list(tags))
        who = await self.who()
        attrs = await self.model(name)
        model_id = logged_model_id(args.get("source"), args.get("model_id"))
        if not model_id or args.get("run_id"):
            raise mlflow_error(
                403,
                "nbguard registers versions only from models you logged through it "
                "(mlflow.<flavor>.log_model, then register models:/<model_id>).",
            )
        await self.own_logged_model(who, model_id)
        await self.decide_entity(who, "model.register", attrs.entity())
        given = args.get("tags") if isinstance(args.get("tags"), list) else []
        body = {**args, "tags": [*given, {"key": TAG_REGISTERED_BY, "value": who.name}]}
        self.answer(await self.upstream("POST", _VERSIONS + "create", body=body))

    async def get_version(self, args: dict[str, Any]) -> None:
        """One version (``model.read`` on it)."""
        name = self.model_name(args)
        version = self.version_number(args)
        fetch = asyncio.gather(self.model(name), self.version(name, version))
        try:
            who = await self.who()
            async with self.early_decision(who, "model.read", name, version) as early:
                attrs, found = await fetch
                item = self.version_item(attrs, found)
                self.gateway.remember(name, version, item)
                await early.settle(item)
        finally:
            await self.settled(fetch)
        self.write_json({"model_version": found})

    async def search_versions(self, args: dict[str, Any]) -> None:
        """The versions the caller may list (``model.list`` each; one record per search)."""
        query = {k: v for k, v in args.items() if k in _SEARCH_FIELDS}
        answer = await self.upstream("GET", _VERSIONS + "search", query=query)
        self.relay(answer)
        who = await self.who()
        shown = []
        for found in answer.body.get("model_versions") or []:
            if not isinstance(found, dict) or not isinstance(found.get("name"), str):
                continue
            attrs = await self.maybe_model(found["name"])
            if attrs is not None and self.allowed(
                who, "model.list", self.version_item(attrs, found)
            ):
                shown.append(found)
        await self.record_listing(who, "model.list")
        body: dict[str, Any] = {"model_versions": shown}
        if answer.body.get("next_page_token"):
            body["next_page_token"] = answer.body["next_page_token"]
        self.write_json(body)

    async def update_version(self, args: dict[str, Any]) -> None:
        """Change a version's description (``model.register`` on it)."""
        await self._version_call(args, "model.register", "PATCH", "update")

    async def delete_version(self, args: dict[str, Any]) -> None:
        """Delete a version (``model.delete`` on it)."""
        await self._version_call(args, "model.delete", "DELETE", "delete")

    async def download_uri(self, args: dict[str, Any]) -> None:
        """Where a version's files are (``model.export`` on it): the gateway's artifacts."""
        await self._version_call(args, "model.export", "GET", "get-download-uri")

    async def _version_call(self, args: dict[str, Any], action: str, method: str, end: str) -> None:
        name = self.model_name(args)
        version = self.version_number(args)
        attrs, found, who = await asyncio.gather(
            self.model(name), self.version(name, version), self.who()
        )
        await self.decide_entity(who, action, self.version_item(attrs, found))
        call = {"name": name, "version": version}
        if method == "GET":
            self.answer(await self.upstream(method, _VERSIONS + end, query=call))
        else:
            self.answer(await self.upstream(method, _VERSIONS + end, body={**args, **call}))

    async def set_version_tag(self, args: dict[str, Any]) -> None:
        """Set a version tag (``model.register``; nbguard's own tags: admins only)."""
        await self._version_tag(args, "set-tag", "POST")

    async def delete_version_tag(self, args: dict[str, Any]) -> None:
        """Delete a version tag (as setting one)."""
        await self._version_tag(args, "delete-tag", "DELETE")

    async def _version_tag(self, args: dict[str, Any], endpoint: str, method: str) -> None:
        name = self.model_name(args)
        version = self.version_number(args)
        attrs = await self.model(name)
        found = await self.version(name, version)
        await self._decide_tag(args, self.version_item(attrs, found))
        self.answer(await self.upstream(method, _VERSIONS + endpoint, body=args))
