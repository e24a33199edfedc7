"""Entitlements: what a user may do in their own server, decided here and signed.

``GET /api/v1/entitlements`` (the server's own token only) decides, with the
policy, each Jupyter action of :data:`nbguard.entitlements.ACTIONS` on the
caller's server (a ``Server`` entity owned by the user, in the environment of
its profile), records each decision like any other, and answers with a
short-lived EdDSA-signed JWT that the server extension's Authorizer verifies.
``GET /api/v1/entitlements/key`` publishes the public key to any hub token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbguard.entitlements import ACTIONS
from nbguard.errors import NBGuardError
from nbguard.hub_plugin.guard.handlers.base import APIHandler, http_error
from nbguard.hub_plugin.guard.handlers.executions import ServerAPIHandler
from nbguard.policy import EntityRef
from nbguard.policy.entities import server as server_entity
from nbguard.policy.vocabulary import ENVIRONMENTS

if TYPE_CHECKING:
    from nbguard.hub_plugin.guard.contexts import CallerContext


def server_name(user: str, server: str) -> str:
    """JupyterHub's name of a user's server: ``alice`` (default) or ``alice/gpu``."""
    return f"{user}/{server}" if server else user


class EntitlementsHandler(ServerAPIHandler):
    """``GET /api/v1/entitlements``: the caller's Jupyter permissions in this server, signed."""

    async def get(self) -> None:
        """Decide (recorded) each action, then answer ``{"token", "expires_in", "permissions"}``.

        A locked user or device gets 403 like any decision: the server then has
        no entitlement and stays read-only.
        """
        who = await self.server_caller()
        resource = self.server_resource(who)
        permissions: dict[str, bool] = {}
        for action in ACTIONS:
            who, decision = await self.decide(who, action, resource)
            permissions[action] = decision.allowed
        issued = self.guard.entitlements.issue(
            user=who.name,
            server=resource.id,  # alice or alice/gpu: one server of one user
            session=who.session_id,
            permissions=permissions,
        )
        self.write_json(
            {"token": issued.token, "expires_in": issued.expires_in, "permissions": permissions}
        )

    def server_resource(self, who: CallerContext) -> EntityRef:
        """The caller's server as a policy entity, kept in step with its profile.

        The entity is rebuilt when the server's environment changed (a respawn
        with another profile); a server whose profile has no known environment
        has no entity, so every decision on it is a denial.
        """
        name = server_name(who.name, who.server or "")
        ref = EntityRef.of("Server", name)
        environment = who.context.environment
        engine = self.guard.engine
        try:
            if environment not in ENVIRONMENTS:
                if ref in engine.entities:
                    engine.remove_entities([ref])
                return ref
            built = server_entity(name, owner=who.name, environment=environment)
            if engine.entities.get(ref) != built:
                engine.upsert_entities([built])
        except NBGuardError as error:
            raise http_error(error) from error
        return ref


class EntitlementKeyHandler(APIHandler):
    """``GET /api/v1/entitlements/key``: the public key that verifies entitlements."""

    async def get(self) -> None:
        """The key as PEM and as a JWK (``OKP``, ``Ed25519``), with its ``kid``."""
        self.write_json(self.guard.entitlements.key_document())
