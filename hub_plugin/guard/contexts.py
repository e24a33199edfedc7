"""The request context of a guard-service request, built only from hub-zone facts.

Nothing in a request body or header from the user zone enters the context:

- network zone, device, risk and the second factor's method and time come from
  the login gate's auth state (observed by the hub when the user signed in or
  stepped up);
- the environment is that of the profile the spawner mixin allowed, and only
  when the request carries that server's own API token (its SHA-256 is in the
  spawn lease); any other token of the user acts from environment ``none``;
- elevated roles, grants and locks are read from the elevation store on every
  request, so an expiry or a revocation counts on the very next request, on
  every replica.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from nbguard.elevation.changes import UNREAD, Version
from nbguard.policy import EntityRef, RequestContext
from nbguard.policy.vocabulary import MFA_NEVER, NO_ENVIRONMENT

if TYPE_CHECKING:
    from nbguard.elevation.models import ActiveElevation, Lock
    from nbguard.hub_plugin.auth_state import MFAState
    from nbguard.hub_plugin.guard.hub_state import HubClient, UserState
    from nbguard.hub_plugin.guard.identity import Caller
    from nbguard.policy import PolicyEngine


@dataclass(frozen=True, slots=True)
class CallerContext:
    """A caller with everything decisions about them need."""

    caller: Caller
    context: RequestContext
    #: The nbguard login session (from the auth state), "" when unknown.
    session_id: str
    #: The confirmed server ("" is the default server) or None.
    server: str | None
    #: The profile of the confirmed server, "" when none.
    profile: str
    mfa: MFAState | None
    elevation: ActiveElevation
    locks: tuple[Lock, ...]
    hub_admin: bool
    #: time.monotonic() when the hub state behind this was fetched.
    fetched: float

    @property
    def name(self) -> str:
        """The user's name."""
        return self.caller.name

    @property
    def principal(self) -> EntityRef:
        """The policy principal."""
        return EntityRef.of("User", self.caller.name)

    def describe(self) -> dict[str, Any]:
        """The caller's context as the API shows it to the caller."""
        return {
            "user": self.caller.name,
            "session_id": self.session_id,
            "server": self.server,
            "profile": self.profile or None,
            "environment": self.context.environment,
            "mfa_method": self.context.mfa_method,
            "mfa_age_seconds": (
                None if self.context.mfa_age_seconds >= MFA_NEVER else self.context.mfa_age_seconds
            ),
            "network_zone": self.context.network_zone,
            "device_trusted": self.context.device_trusted,
            "risk": self.context.risk,
            "elevated_roles": sorted(self.elevation.roles),
            "grants": [
                {"action": g.action, "resource": g.resource}
                for g in sorted(self.elevation.grants, key=lambda g: (g.action, g.resource))
            ],
            "locked": bool(self.locks),
        }


class ContextResolver:
    """Builds :class:`CallerContext` values for authenticated callers."""

    def __init__(
        self, hub: HubClient, engine: PolicyEngine, elevations: Any, *, timezone: str
    ) -> None:
        self.hub = hub
        self.engine = engine
        self.elevations = elevations
        self.tz = ZoneInfo(timezone)

    async def resolve(
        self, caller: Caller, *, max_age: float | None = None, version: Version = UNREAD
    ) -> CallerContext:
        """The caller's context, with hub facts at most ``max_age`` seconds old.

        ``version``: the service database's change version, if the caller read it
        already for this request (see :class:`~nbguard.elevation.changes.StandingCache`).
        """
        state = await self.hub.user_state(caller.name, max_age=max_age)
        mfa = state.mfa if state is not None else None
        server, profile = self._confirmed_server(caller, state)
        environment = self._environment(profile)
        elevation, held = self.elevations.standing(
            caller.name, device_id=mfa.device_id if mfa else "", version=version
        )
        locks = tuple(held)
        moment = datetime.now(self.tz)
        context = RequestContext(
            network_zone=mfa.network_zone if mfa else "unknown",
            device_trusted=mfa.device_trusted if mfa else False,
            device_id=mfa.device_id if mfa else "",
            mfa_method=mfa.mfa_method if mfa else "none",
            mfa_age_seconds=mfa.mfa_age() if mfa else MFA_NEVER,
            hour=moment.hour,
            weekday=moment.weekday(),
            # No nbguard login state at all is the least trusted case.
            risk=mfa.risk if mfa else "high",
            environment=environment,
            elevated_roles=frozenset(elevation.roles),
            grants=frozenset(elevation.grants),
        )
        return CallerContext(
            caller=caller,
            context=context,
            session_id=mfa.session_id if mfa else "",
            server=server,
            profile=profile,
            mfa=mfa,
            elevation=elevation,
            locks=locks,
            hub_admin=state.admin if state is not None else False,
            fetched=state.fetched if state is not None else time.monotonic(),
        )

    @staticmethod
    def _confirmed_server(caller: Caller, state: UserState | None) -> tuple[str | None, str]:
        """The caller's server and profile, only if the token is that server's own."""
        if state is None or caller.server is None:
            return None, ""
        lease = state.leases.get(caller.server)
        if lease is None or not lease.token_hash or lease.token_hash != caller.token_hash:
            return None, ""
        if lease.remaining() <= 0:
            return None, ""
        return caller.server, lease.profile

    def _environment(self, profile: str) -> str:
        if not profile:
            return NO_ENVIRONMENT
        entity = self.engine.entities.get(EntityRef.of("Profile", profile)) or {}
        environment = entity.get("attrs", {}).get("environment")
        return environment if isinstance(environment, str) else NO_ENVIRONMENT
