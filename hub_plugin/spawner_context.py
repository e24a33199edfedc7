"""What a spawn is decided in, and what must never reach the server it starts."""

from __future__ import annotations

from typing import Any


def spawn_context(
    guard: Any, observation: Any, state: Any, roles: frozenset[str], grants: Any
) -> Any:
    """The request context of a spawn: where and on what from the spawn request (the
    login's values without one), how recently the second factor, from the login."""
    from datetime import datetime

    from nbguard.policy import RequestContext
    from nbguard.policy.vocabulary import MFA_NEVER

    if observation is not None and observation.client.address is not None:
        zone = observation.zone
    else:
        zone = state.network_zone if state else "unknown"
    if observation is not None:
        device_trusted, device_id = observation.device_trusted, observation.device_id
        hour, weekday = observation.hour, observation.weekday
    else:
        device_trusted = state.device_trusted if state else False
        device_id = state.device_id if state else ""
        moment = datetime.now(guard.context.tz)
        hour, weekday = moment.hour, moment.weekday()
    return RequestContext(
        network_zone=zone,
        device_trusted=device_trusted,
        device_id=device_id,
        mfa_method=state.mfa_method if state else "none",
        mfa_age_seconds=state.mfa_age() if state else MFA_NEVER,
        hour=hour,
        weekday=weekday,
        # No nbguard login state at all is the least trusted case.
        risk=state.risk if state else "high",
        elevated_roles=frozenset(roles),
        grants=frozenset(grants),
    )


def guard_secrets(guard: Any) -> list[str]:
    """Values that must never appear in a server's environment."""
    ledger = guard.ledger
    values = [*guard.secret_keys, guard.mfa_db_url, ledger.url, ledger.signing_key_file]
    return [v for v in values if isinstance(v, str) and v]
