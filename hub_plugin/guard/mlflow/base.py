"""The gateway's HTTP edge: hub-token authentication, MLflow-style errors, decisions.

The MLflow client sends ``MLFLOW_TRACKING_TOKEN`` as ``Authorization: Bearer ...``;
the spawner sets it to the server's own hub API token, which the guard accepts
like any API route does (a user's own API token works too, from environment
``none``). Errors leave as MLflow's ``{"error_code", "message"}`` so the client
raises its usual ``RestException`` with nbguard's words, including what would
allow a denied call.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from nbguard.errors import NBGuardError, RequestError
from nbguard.hub_plugin.guard.handlers.base import HUB, APIHandler, GuardError, http_error
from nbguard.hub_plugin.guard.mlflow.attributes import (
    ModelAttributes,
    check_model_name,
    check_version,
    registrant,
    reserved_keys,
    tag_map,
)
from nbguard.hub_plugin.guard.mlflow.upstream import UpstreamAnswer, UpstreamUnavailable
from nbguard.policy import Decision, EntityRef

if TYPE_CHECKING:
    from nbguard.hub_plugin.guard.contexts import CallerContext
    from nbguard.hub_plugin.guard.mlflow.gateway import ModelGateway

#: MLflow's error codes for the statuses the gateway answers with.
_ERROR_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    405: "ENDPOINT_NOT_FOUND",
    409: "RESOURCE_ALREADY_EXISTS",
    413: "INVALID_PARAMETER_VALUE",
    415: "INVALID_PARAMETER_VALUE",
    503: "TEMPORARILY_UNAVAILABLE",
}
_GET_VERSION = "api/2.0/mlflow/model-versions/get"


def mlflow_error(status: int, message: str, error_code: str = "") -> GuardError:
    """An error the MLflow client shows as ``ERROR_CODE: message``."""
    code = error_code or _ERROR_CODES.get(status, "INTERNAL_ERROR")
    return GuardError(status, code.lower(), message, error_code=code)


def reserved_tag_error(keys: list[str]) -> GuardError:
    """The 403 of a user's attempt to set nbguard's own tags."""
    return mlflow_error(
        403,
        f"Tags under 'nbguard.' ({', '.join(keys)}) drive nbguard's policies and are set "
        "by nbguard or a hub administrator only.",
    )


class EarlyDecision:
    """A read's decision, made and recorded while the registry answers.

    A read is decided on what the registry returns, so its decision (and the
    durable ledger record it needs) would follow the registry's answer. When the
    gateway has a fresh guess of the entity (the one this model or version was last
    decided on), the decision starts at once, beside the registry call;
    :meth:`settle` lets it stand only if the answer shows that very entity, and
    otherwise decides again on what the registry returned (so a model whose tags
    changed outside the gateway gets two records, and the second one counts).
    """

    def __init__(
        self, handler: MLflowHandlerBase, who: CallerContext, action: str, guess: Any
    ) -> None:
        self.handler = handler
        self.who = who
        self.action = action
        self.guess = guess
        self.task: asyncio.Future[Decision] | None = None
        if guess is not None:
            self.task = asyncio.ensure_future(handler.decide_entity_quietly(who, action, guess))

    async def settle(self, item: dict[str, Any]) -> Decision:
        """The decision on ``item`` as the registry returned it; 403 if denied."""
        if self.task is not None:
            decision = await self.task
            self.task = None
            if item == self.guess:
                if not decision.allowed:
                    raise self.handler.fail(self.handler.guard.decider.denial(decision))
                return decision
        return await self.handler.decide_entity(self.who, self.action, item)

    async def drop(self) -> None:
        """Wait for an early decision that is no longer needed (its record stays)."""
        if self.task is not None:
            task, self.task = self.task, None
            await asyncio.wait([task])
            if not task.cancelled():
                task.exception()  # retrieved: it was logged where it happened


class MLflowHandlerBase(APIHandler):
    """Shared by the gateway's operations: arguments, upstream calls and decisions."""

    SUPPORTED_METHODS: ClassVar[tuple[str, ...]] = ("GET", "POST", "PATCH", "DELETE", "PUT")
    #: Registry request bodies are small; artifact uploads are read whole (see artifacts).
    max_body: ClassVar[int] = 1024 * 1024

    @property
    def gateway(self) -> ModelGateway:
        """The service's gateway (the route exists only when it is configured)."""
        gateway: ModelGateway = self.guard.mlflow
        return gateway

    # -- errors --------------------------------------------------------------------------

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every error as MLflow's JSON; denials keep nbguard's decision beside it."""
        value = self.error_value(status_code, **kwargs)
        code = value.pop("error_code", None) or _ERROR_CODES.get(status_code, "INTERNAL_ERROR")
        body = {"error_code": code, "message": value.pop("message", "")}
        for extra in ("decision", "step_up_url"):
            if extra in value:
                body[extra] = value[extra]
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(body))

    def fail(self, error: NBGuardError) -> GuardError:
        """nbguard's error as the gateway's HTTP error."""
        if isinstance(error, UpstreamUnavailable):
            self.guard.log.error("nbguard guard: %s", error)
            return mlflow_error(503, error.user_message)
        translated = http_error(error)
        code = _ERROR_CODES.get(translated.status_code, "INTERNAL_ERROR")
        translated.extra.setdefault("error_code", code)
        return translated

    # -- arguments -------------------------------------------------------------------------

    def args(self) -> dict[str, Any]:
        """The call's arguments: the query of a GET, else the JSON body (MLflow's forms)."""
        if self.request.method == "GET":
            return {k: self.get_query_argument(k) for k in self.request.query_arguments}
        if not self.request.body:
            return {}
        if len(self.request.body) > self.max_body:
            raise mlflow_error(413, f"The body exceeds {self.max_body} bytes.")
        try:
            value = json.loads(self.request.body)
        except (ValueError, UnicodeDecodeError):
            raise mlflow_error(400, "The body is not valid JSON.") from None
        if not isinstance(value, dict):
            raise mlflow_error(400, "The body must be a JSON object.")
        return value

    def model_name(self, args: Mapping[str, Any], field: str = "name") -> str:
        """The checked model name in ``args[field]``."""
        try:
            return check_model_name(args.get(field))
        except RequestError as error:
            raise self.fail(error) from None

    def version_number(self, args: Mapping[str, Any]) -> str:
        """The checked ``version`` in ``args``."""
        try:
            return check_version(args.get("version"))
        except RequestError as error:
            raise self.fail(error) from None

    @staticmethod
    def refuse_reserved(keys: list[Any]) -> None:
        """403 if any key is under the reserved ``nbguard.`` prefix."""
        reserved = reserved_keys(keys)
        if reserved:
            raise reserved_tag_error(reserved)

    # -- the registry ------------------------------------------------------------------------

    async def upstream(self, method: str, path: str, **kw: Any) -> UpstreamAnswer:
        """A JSON call to the registry with the service's credentials."""
        try:
            return await self.gateway.call(method, path, **kw)
        except NBGuardError as error:
            raise self.fail(error) from None

    async def model(self, name: str) -> ModelAttributes:
        """The attributes of an existing model; MLflow's 404 if there is none."""
        try:
            attrs = await self.gateway.model(name)
        except NBGuardError as error:
            raise self.fail(error) from None
        if attrs is None:
            raise mlflow_error(404, f"Registered Model with name={name} not found")
        return attrs

    async def maybe_model(self, name: str) -> ModelAttributes | None:
        """The attributes of model ``name``, None if there is none."""
        try:
            return await self.gateway.model(name)
        except NBGuardError as error:
            raise self.fail(error) from None

    async def version(self, name: str, version: str) -> dict[str, Any]:
        """The registry's model-version object; MLflow's 404 if there is none."""
        answer = await self.upstream("GET", _GET_VERSION, query={"name": name, "version": version})
        found = answer.body.get("model_version")
        if not answer.ok or not isinstance(found, dict):
            self.relay(answer)
            raise mlflow_error(404, f"Model Version (name={name}, version={version}) not found")
        return found

    def relay(self, answer: UpstreamAnswer) -> None:
        """Raise the registry's own error answer (4xx), with its code and message."""
        if answer.ok:
            return
        code = answer.body.get("error_code")
        message = answer.body.get("message")
        raise mlflow_error(
            answer.status,
            str(message)[:2000] if isinstance(message, str) else "The registry refused the call.",
            code if isinstance(code, str) and code.isupper() else "",
        )

    def answer(self, answer: UpstreamAnswer) -> None:
        """Send the registry's answer on (its error, or its JSON body)."""
        self.relay(answer)
        self.write_json(answer.body)

    # -- decisions -------------------------------------------------------------------------

    async def who(self) -> CallerContext:
        """The caller's context (503 in MLflow's form if the hub cannot be asked)."""
        try:
            return await self.guard.resolver.resolve(self.caller)
        except NBGuardError as error:
            raise self.fail(error) from None

    async def decide_entity(
        self, who: CallerContext, action: str, item: dict[str, Any]
    ) -> Decision:
        """Decide (and record) ``action`` on the entity ``item``; 403 if denied."""
        decision = await self.decide_entity_quietly(who, action, item)
        if not decision.allowed:
            raise self.fail(self.guard.decider.denial(decision))
        return decision

    async def decide_entity_quietly(
        self, who: CallerContext, action: str, item: dict[str, Any]
    ) -> Decision:
        """Decide (and record) ``action`` on the entity ``item``, allowed or not."""
        ref = EntityRef.from_cedar(item["uid"])
        try:
            self.guard.engine.upsert_entities([item])
            _who, decision = await self.guard.decider.decide(
                who, action, ref, cell=self.cell(), expected=self._expected
            )
        except NBGuardError as error:
            raise self.fail(error) from None
        return decision

    @staticmethod
    async def settled(future: asyncio.Future[Any]) -> None:
        """Let a registry call finish whose outcome an earlier error made moot."""
        if not future.done():
            await asyncio.wait([future])
        if not future.cancelled():
            future.exception()  # retrieved; the error that came first is the answer

    @asynccontextmanager
    async def early_decision(
        self, who: CallerContext, action: str, name: str, version: str = ""
    ) -> AsyncIterator[EarlyDecision]:
        """An :class:`EarlyDecision` on the gateway's guess of a model or version."""
        early = EarlyDecision(self, who, action, self.gateway.guess(name, version))
        try:
            yield early
        finally:
            await early.drop()

    def allowed(self, who: CallerContext, action: str, item: dict[str, Any]) -> bool:
        """Whether ``action`` on ``item`` is allowed now (asked, not recorded: listings).

        An entity the policy cannot take (a name made outside the gateway that breaks
        its rules, say) is not allowed: hidden from a listing, not an error for it.
        """
        if who.locks:
            return False
        try:
            self.guard.engine.upsert_entities([item])
            ref = EntityRef.from_cedar(item["uid"])
            return self.guard.engine.decide(who.principal, action, ref, who.context).allowed
        except NBGuardError as error:
            self.guard.log.warning("nbguard guard: model %s hidden: %s", item.get("uid"), error)
            return False

    async def require_admin_for_tags(self, who: CallerContext) -> None:
        """Changing a reserved tag: only callers the policy lets administer the guard."""
        try:
            _who, decision = await self.guard.decider.decide(
                who, "guard.admin", HUB, cell=self.cell()
            )
        except NBGuardError as error:
            raise self.fail(error) from None
        if not decision.allowed:
            raise self.fail(self.guard.decider.denial(decision))

    def version_item(
        self,
        attrs: ModelAttributes,
        found: Mapping[str, Any],
        *,
        stage: str | None = None,
        aliases: list[str] | None = None,
        entity_id: str = "",
    ) -> dict[str, Any]:
        """The ``ModelVersion`` entity of a registry version object (or of a target state)."""
        current_aliases = found.get("aliases")
        return attrs.version_entity(
            str(found.get("version", "")),
            registered_by=registrant(tag_map(found.get("tags"))),
            stage=stage if stage is not None else str(found.get("current_stage") or "None"),
            aliases=aliases
            if aliases is not None
            else [a for a in current_aliases or [] if isinstance(a, str)],
            settings=self.gateway.settings,
            entity_id=entity_id,
        )

    def teams_of(self, user: str) -> list[str]:
        """The caller's teams in the policy entities, sorted (a new model's team: the first)."""
        item = self.guard.engine.entities.get(EntityRef.of("User", user)) or {}
        return sorted(
            parent["id"]
            for parent in item.get("parents", [])
            if parent.get("type", "").endswith("::Team")
        )

    async def record_listing(self, who: CallerContext, action: str) -> None:
        """One ledger record for a search (``action`` on ``model:*``).

        The per-result checks filter the answer and are not recorded one by one (like
        the dataset catalog); the search itself is, with the cell that asked.
        """
        body: dict[str, Any] = {
            "principal": str(who.principal),
            "action": action,
            "resource": "model:*",
            "allowed": True,
            "policy_ids": [],
            "correlation_id": f"mlflow-search-{secrets.token_hex(8)}",
        }
        cell = self.cell()
        if cell is not None:
            body["cell"] = cell.to_dict()
        try:
            await self.guard.ledger.append_async(
                "access", body, actor=who.name, session=who.session_id or None
            )
        except NBGuardError as error:
            self.guard.log.error("nbguard guard: could not record a model search: %s", error)
            raise mlflow_error(
                503, "nbguard could not record this call in its audit ledger."
            ) from None
