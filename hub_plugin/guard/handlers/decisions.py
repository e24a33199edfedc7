"""``/api/v1/me`` (the caller's context) and ``/api/v1/decisions`` (the decision point).

A decision is always about the caller: the principal is the token's user, and
the context is built in the hub zone (:mod:`~nbguard.hub_plugin.guard.contexts`).
Clients send only the action, the resource and, optionally, the cell that asked.
"""

from __future__ import annotations

from nbguard.errors import RequestError
from nbguard.hub_plugin.guard.handlers.base import (
    APIHandler,
    GuardError,
    http_error,
    require_fields,
)
from nbguard.policy import EntityRef

#: Resource types a caller may ask decisions about.
DECIDABLE_TYPES = frozenset({"Dataset", "Model", "ModelVersion", "Profile", "Server"})


class MeHandler(APIHandler):
    """GET /api/v1/me: who the caller is and the context their requests are decided in."""

    async def get(self) -> None:
        """The caller's identity, roles, MFA, device, zone, environment, grants."""
        who = await self.caller_context()
        self.write_json(
            {
                **who.describe(),
                "roles": self.guard.standing_roles(who.name),
                "step_up_url": self.guard.step_up_url,
            }
        )


class DecisionHandler(APIHandler):
    """POST /api/v1/decisions: may the caller do ``action`` on ``resource``?"""

    async def post(self) -> None:
        """Decide, record, and answer with the decision (200 whether allowed or not)."""
        body = self.json_body()
        require_fields(body, {"action": str, "resource": str})
        try:
            resource = EntityRef.parse(body["resource"])
        except RequestError as error:
            raise http_error(error) from error
        if resource.type not in DECIDABLE_TYPES:
            raise GuardError(
                400,
                "bad_request",
                f"Decisions are made on {', '.join(sorted(DECIDABLE_TYPES))}; "
                f"not on {resource.type}.",
            )
        _who, decision = await self.decide(await self.caller_context(), body["action"], resource)
        answer = decision.to_dict()
        if not decision.allowed:
            details = self.guard.decider.denial(decision).details
            if "step_up_url" in details:
                answer["step_up_url"] = details["step_up_url"]
        self.write_json(answer)
