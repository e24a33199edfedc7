"""Elevation API: requests, approvals, break-glass, grants, revocation and review.

Who may ask and who may approve is the policy's answer (``elevation.request``,
``elevation.approve`` on an ``ElevationRequest`` entity, recorded like every
decision); the store keeps the invariants (no self-approval, one decision per
approver, one grant per request). What a request is for is taken from the
hub's own view: a grant's environment and sensitivity are its target entity's;
a role request is made for the environment the caller acts from (``dev`` when
that is no real environment, e.g. a personal token at the hub) with sensitivity
``internal``.

Request entities are added to the policy engine on first use by each replica,
from the stored request, so any replica can decide on any request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nbguard.catalog.store import CatalogStoreError
from nbguard.elevation import checks
from nbguard.elevation.models import PENDING, REVIEW_REQUIRED, ElevationRequest
from nbguard.errors import NBGuardError
from nbguard.hub_plugin.guard.elevation_records import (
    ElevationEvents,
    in_store,
    refuse_if_locked,
)
from nbguard.hub_plugin.guard.handlers.base import (
    HUB,
    APIHandler,
    GuardError,
    http_error,
    require_fields,
)
from nbguard.hub_plugin.guard.server_orders import end_what_runs
from nbguard.policy import EntityRef
from nbguard.policy.entities import Entity, elevation_request
from nbguard.policy.vocabulary import ENVIRONMENTS, SENSITIVITIES

if TYPE_CHECKING:
    from nbguard.elevation.rules import ApprovalRule
    from nbguard.hub_plugin.guard.contexts import CallerContext

#: Fields of a request or break-glass body; exactly one of role, or action with resource.
ASK_FIELDS: dict[str, type] = {
    "role": str,
    "action": str,
    "resource": str,
    "duration_seconds": int,
    "reason": str,
}
#: The fields of a revocation (``reason`` required).
REVOKE_FIELDS: dict[str, type] = {"reason": str, "stop_servers": bool, "interrupt_kernels": bool}
#: Sensitivity of a role request, which has no target to take one from.
ROLE_SENSITIVITY = "internal"
#: Environment of a role request made from outside any real environment.
ROLE_FALLBACK_ENVIRONMENT = "dev"


@dataclass(frozen=True, slots=True)
class Ask:
    """A checked request or break-glass body, with the hub's view of its target."""

    role: str
    action: str
    target: str
    duration_seconds: int
    reason: str
    environment: str
    sensitivity: str

    def store_args(self) -> dict[str, Any]:
        """Keyword arguments for ``ElevationStore.create_request`` / ``break_glass``."""
        return {
            "role": self.role,
            "action": self.action,
            "target": self.target,
            "duration_seconds": self.duration_seconds,
            "reason": self.reason,
            "environment": self.environment,
            "sensitivity": self.sensitivity,
        }


def query_choice(handler: APIHandler, name: str, choices: tuple[str, ...], default: str) -> str:
    """The query argument ``name``, one of ``choices``; 400 otherwise."""
    value = handler.get_query_argument(name, default)
    if value not in choices:
        raise GuardError(400, "bad_request", f"{name} must be one of {', '.join(choices)}.")
    return value


def same_person(first: str, second: str) -> bool:
    """Whether two user names are one person (see ``checks.same_person``)."""
    return checks.same_person(first, second)


class ElevationAPIHandler(APIHandler):
    """Shared by the elevation routes: the caller, request entities, unrecorded checks."""

    @property
    def events(self) -> ElevationEvents:
        """Ledger records and webhooks for what the route changed."""
        return ElevationEvents(self.guard)

    async def who(self) -> CallerContext:
        """The caller's context; 403 if they or their device are locked."""
        who = await self.caller_context()
        refuse_if_locked(who)
        return who

    @contextmanager
    def held_entity(self, build: Callable[[], Entity]) -> Iterator[EntityRef]:
        """The ``ElevationRequest`` entity ``build`` makes, in the engine for the ``with``
        block; an entity the policy cannot take is the client's error, never a 500."""
        with ExitStack() as stack:
            try:
                ref = stack.enter_context(self.guard.request_entities.using(build()))
            except NBGuardError as error:
                raise http_error(error) from error
            yield ref

    def request_entity(self, request: ElevationRequest) -> AbstractContextManager[EntityRef]:
        """The stored request's policy entity, in the engine for the ``with`` block."""
        return self.held_entity(
            lambda: elevation_request(
                request.id,
                requester=request.requester,
                role=request.role,
                action=request.action,
                target=request.target,
                environment=request.environment,
                sensitivity=request.sensitivity,
                break_glass=request.break_glass,
            )
        )

    def may_approve(self, who: CallerContext, request: ElevationRequest) -> bool:
        """Whether the policy lets the caller approve ``request`` (not recorded)."""
        if same_person(who.name, request.requester):
            return False
        with self.request_entity(request) as ref:
            return self.guard.engine.decide(
                who.principal, "elevation.approve", ref, who.context
            ).allowed

    def is_admin(self, who: CallerContext) -> bool:
        """Whether the caller may administer the guard (not recorded)."""
        return self.guard.engine.decide(who.principal, "guard.admin", HUB, who.context).allowed

    async def visible_request(self, who: CallerContext, request_id: str) -> ElevationRequest:
        """The request if the caller asked for it, may approve it or is an admin; else 404."""
        request = await in_store(self.guard.elevations.get_request, request_id)
        if not (
            same_person(who.name, request.requester)
            or self.may_approve(who, request)
            or self.is_admin(who)
        ):
            raise GuardError(404, "not_found", "No such elevation request.")
        return request

    async def ask(self, who: CallerContext, *, break_glass: bool) -> tuple[Ask, ApprovalRule]:
        """Check the body, find the rule, and decide (recorded) ``elevation.request``.

        The decision is made on an entity whose id is derived from what is asked,
        so nothing is stored before the policy allows it.
        """
        ask = self._parse_ask(who.context.environment)
        kind = "role" if ask.role else "grant"
        rule = self.guard.rules.rule_for(
            kind, ask.role, ask.action, ask.sensitivity, ask.environment
        )
        try:
            checks.duration(ask.duration_seconds, rule)
            checks.text("reason", ask.reason, required=True)
        except NBGuardError as error:
            raise http_error(error) from error
        if break_glass and not rule.break_glass:
            raise GuardError(
                403,
                "forbidden",
                "Break-glass is not allowed for this; request approval instead.",
            )
        digest = hashlib.sha256(
            repr((who.name, ask.role, ask.action, ask.target, ask.environment,
                  ask.sensitivity, break_glass)).encode()
        ).hexdigest()[:32]  # fmt: skip
        provisional = self.held_entity(
            lambda: elevation_request(
                f"ask-{digest}",
                requester=who.name,
                role=ask.role,
                action=ask.action,
                target=ask.target,
                environment=ask.environment,
                sensitivity=ask.sensitivity,
                break_glass=break_glass,
            )
        )
        with provisional as ref:
            await self.decide_or_deny(who, "elevation.request", ref)
        return ask, rule

    def _parse_ask(self, caller_environment: str) -> Ask:
        body = self.json_body()
        require_fields(body, ASK_FIELDS, optional=("role", "action", "resource"))
        role, action, resource = (body.get(k, "") for k in ("role", "action", "resource"))
        if role and (action or resource):
            raise GuardError(
                400, "bad_request", "Ask for either a role, or an action on a resource, not both."
            )
        if role:
            if EntityRef.of("Role", role) not in self.guard.engine.entities:
                raise GuardError(400, "bad_request", f"Unknown role: {role[:128]}.")
            environment = (
                caller_environment
                if caller_environment in ENVIRONMENTS
                else ROLE_FALLBACK_ENVIRONMENT
            )
            return Ask(
                role, "", "", body["duration_seconds"], body["reason"], environment,
                ROLE_SENSITIVITY,
            )  # fmt: skip
        if not action or not resource:
            raise GuardError(
                400, "bad_request", "Ask for a role, or for an action together with its resource."
            )
        try:
            ref = EntityRef.parse(resource)
            # Another replica may have reclassified or removed the target since this
            # one last looked; a stale sensitivity would pick a weaker approval rule.
            self.guard.sync_catalog()
        except CatalogStoreError as error:
            raise GuardError(503, "unavailable", error.user_message) from error
        except NBGuardError as error:
            raise http_error(error) from error
        attrs = (self.guard.engine.entities.get(ref) or {}).get("attrs", {})
        sensitivity, environment = attrs.get("sensitivity"), attrs.get("environment")
        if sensitivity not in SENSITIVITIES or environment not in ENVIRONMENTS:
            raise GuardError(
                400, "bad_request", f"Unknown resource, or not one access can be asked for: {ref}."
            )
        return Ask(
            "", action, str(ref), body["duration_seconds"], body["reason"], environment,
            sensitivity,
        )  # fmt: skip


class RequestsHandler(ElevationAPIHandler):
    """``/api/v1/requests``: ask for elevation (POST), list requests (GET)."""

    async def post(self) -> None:
        """Create a pending request; 201 with it."""
        who = await self.who()
        ask, rule = await self.ask(who, break_glass=False)
        request = await in_store(
            self.guard.elevations.create_request, requester=who.name, rule=rule, **ask.store_args()
        )
        await self.events.request(
            who, "request", request, text=request.reason, notify="request.created"
        )
        self.write_json(request.to_dict(), status=201)

    async def get(self) -> None:
        """``scope=mine`` (default), ``approvable`` (pending, the caller may approve) or
        ``all`` (admins); ``status`` filters."""
        who = await self.who()
        scope = query_choice(self, "scope", ("mine", "approvable", "all"), "mine")
        status = self.get_query_argument("status", "") or None
        store = self.guard.elevations
        if scope == "mine":
            found = await in_store(store.list_requests, requester=who.name, status=status)
        elif scope == "all":
            who = await self.require_admin(who)
            found = await in_store(store.list_requests, status=status)
        else:
            if status not in (None, PENDING):
                raise GuardError(400, "bad_request", "Approvable requests are pending ones.")
            pending = await in_store(store.list_requests, status=PENDING)
            found = [r for r in pending if self.may_approve(who, r)]
        self.write_json({"requests": [r.to_dict() for r in found]})


class RequestHandler(ElevationAPIHandler):
    """``GET /api/v1/requests/{id}``: one request, for its requester, approvers and admins."""

    async def get(self, request_id: str) -> None:
        """The request, or 404 (unknown and not visible look the same)."""
        who = await self.who()
        request = await self.visible_request(who, request_id)
        self.write_json(request.to_dict())


class RequestDecisionHandler(ElevationAPIHandler):
    """``POST /api/v1/requests/{id}/decision``: approve or deny."""

    async def post(self, request_id: str) -> None:
        """Decide ``elevation.approve`` (recorded), then record the verdict in the store."""
        body = self.json_body()
        require_fields(body, {"verdict": str, "comment": str}, optional=("comment",))
        verdict = body["verdict"]
        if verdict not in ("approve", "deny"):
            raise GuardError(400, "bad_request", "verdict must be approve or deny.")
        who = await self.who()
        store = self.guard.elevations
        request = await in_store(store.get_request, request_id)
        if request.status != PENDING:
            raise GuardError(
                409, "conflict", f"This elevation request is already {request.status}."
            )
        with self.request_entity(request) as ref:
            who, _decision = await self.decide_or_deny(who, "elevation.approve", ref)
        request = await in_store(
            store.decide,
            request.id,
            approver=who.name,
            approve=verdict == "approve",
            comment=body.get("comment", ""),
        )
        grant = None
        if request.grant_id:
            grant = await in_store(store.get_grant, request.grant_id)
        notify = {"approved": "request.approved", "denied": "request.denied"}.get(
            request.status, "request.approval"
        )
        await self.events.request(
            who, verdict, request, text=body.get("comment", ""), grant=grant, notify=notify
        )
        self.write_json(request.to_dict())


class RequestCancelHandler(ElevationAPIHandler):
    """``POST /api/v1/requests/{id}/cancel``: the requester withdraws a pending request."""

    async def post(self, request_id: str) -> None:
        """Cancel; 403 for anyone but the requester, 409 unless pending."""
        if self.request.body:
            require_fields(self.json_body(), {})
        who = await self.who()
        request = await self.visible_request(who, request_id)
        if not same_person(who.name, request.requester):
            raise GuardError(403, "forbidden", "Only the requester can cancel a request.")
        request = await in_store(self.guard.elevations.cancel, request.id, by=who.name)
        await self.events.request(who, "cancel", request, notify="request.cancelled")
        self.write_json(request.to_dict())


class BreakGlassHandler(ElevationAPIHandler):
    """``POST /api/v1/break-glass``: take a grant at once where the rule allows it."""

    async def post(self) -> None:
        """Grant now (recorded, approvers notified, review required); 201 with the grant."""
        who = await self.who()
        ask, rule = await self.ask(who, break_glass=True)
        store = self.guard.elevations
        grant = await in_store(store.break_glass, user=who.name, rule=rule, **ask.store_args())
        request = await in_store(store.get_request, grant.request_id)
        await self.events.request(
            who, "break-glass", request, text=ask.reason, grant=grant, notify="break-glass"
        )
        self.write_json(grant.to_dict(), status=201)


class GrantsHandler(ElevationAPIHandler):
    """``GET /api/v1/grants``: the caller's grants, or everyone's for admins."""

    async def get(self) -> None:
        """``scope=mine`` (default) or ``all`` (admins); ``active=1`` (default) or ``0``."""
        who = await self.who()
        scope = query_choice(self, "scope", ("mine", "all"), "mine")
        active = query_choice(self, "active", ("1", "0"), "1") == "1"
        user: str | None = who.name
        if scope == "all":
            who = await self.require_admin(who)
            user = None
        grants = await in_store(self.guard.elevations.list_grants, user=user, active_only=active)
        self.write_json({"grants": [g.to_dict() for g in grants]})


class GrantRevokeHandler(ElevationAPIHandler):
    """``POST /api/v1/grants/{id}/revoke``: end a grant now (its holder or an admin)."""

    async def post(self, grant_id: str) -> None:
        """Revoke, optionally stopping the holder's servers or interrupting their kernels;
        200 with the grant."""
        body = self.json_body()
        require_fields(body, REVOKE_FIELDS, optional=("stop_servers", "interrupt_kernels"))
        who = await self.who()
        store = self.guard.elevations
        grant = await in_store(store.get_grant, grant_id)
        if not same_person(who.name, grant.user):
            who = await self.require_admin(who)
        grant = await in_store(store.revoke, grant.id, by=who.name, reason=body["reason"])
        await self.events.grant(
            who, "revoke", grant, text=grant.revoke_reason, notify="grant.revoked"
        )
        holder = grant.user

        async def holds(name: str) -> bool:
            return name == holder

        ended = await end_what_runs(self.guard, body, holds, f"grant {grant.id} revoked")
        self.write_json({**grant.to_dict(), **ended})


class GrantReviewHandler(ElevationAPIHandler):
    """``POST /api/v1/grants/{id}/review``: review a break-glass grant after the fact."""

    async def post(self, grant_id: str) -> None:
        """Anyone who may approve the grant's request, never its holder; 200 with the grant."""
        body = self.json_body()
        require_fields(body, {"comment": str})
        who = await self.who()
        store = self.guard.elevations
        grant = await in_store(store.get_grant, grant_id)
        if grant.review_status != REVIEW_REQUIRED:
            raise GuardError(409, "conflict", "This grant needs no review (or has had one).")
        request = await in_store(store.get_request, grant.request_id)
        with self.request_entity(request) as ref:
            who, _decision = await self.decide_or_deny(who, "elevation.approve", ref)
        grant = await in_store(store.review, grant.id, reviewer=who.name, comment=body["comment"])
        await self.events.grant(
            who, "review", grant, text=grant.review_comment, notify="grant.reviewed"
        )
        self.write_json(grant.to_dict())
