"""What an allowed spawn grants a server: its profile, its deadline, its environment.

A :class:`SpawnLease` is made once the policy allows a spawn. It is kept in the
spawner's state (so a hub restart still knows the deadline), and it is all the
server learns about nbguard: the guard service's URL, the login session id, the
profile and the deadline, never a key, token or database URL of nbguard's.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

#: Key of nbguard's section in the spawner's persisted state.
STATE_KEY = "nbguard"
#: Key of the running server's own URL in the spawner's state (the address the proxy
#: routes to), where the guard sends a server its orders.
SERVER_URL_KEY = "nbguard_server_url"

#: The values nbguard hands a server, by role, and the default variable names.
DEFAULT_ENV_NAMES = {
    "guard_url": "NBGUARD_GUARD_URL",
    "session_id": "NBGUARD_SESSION_ID",
    "profile": "NBGUARD_PROFILE",
    "deadline": "NBGUARD_SERVER_DEADLINE",
    # The MLflow client's own variables: the guard's model-registry gateway, and the
    # server's own hub API token, which the gateway takes as a bearer token.
    "mlflow_uri": "MLFLOW_TRACKING_URI",
    "mlflow_token": "MLFLOW_TRACKING_TOKEN",
}

#: Variables of the hub's own that must never reach a server, whatever the
#: spawner's ``env_keep`` or ``environment`` say.
NEVER_PASSED = frozenset(
    {
        "NBGUARD_SECRET_KEYS",
        "JUPYTERHUB_CRYPT_KEY",
        "CONFIGPROXY_AUTH_TOKEN",
        "JPY_COOKIE_SECRET",
        "JUPYTERHUB_COOKIE_SECRET",
    }
)

#: Secret values shorter than this are not searched for in the environment
#: (an empty or one-letter value would match everything).
MIN_SECRET_LENGTH = 8


@dataclass(frozen=True, slots=True)
class SpawnLease:
    """An allowed spawn: the profile decided, until when, and the decision that allowed it."""

    profile: str
    deadline: int
    correlation_id: str
    session_id: str
    started: int
    #: SHA-256 (hex) of the server's own hub API token, so that the guard service
    #: can tell the server's token from any other token of the same user.
    token_hash: str = ""

    @property
    def deadline_text(self) -> str:
        """The deadline as RFC 3339 UTC, ending in ``Z``."""
        return rfc3339(self.deadline)

    def remaining(self, now: float | None = None) -> float:
        """Seconds left before the deadline (negative once it has passed)."""
        return self.deadline - (time.time() if now is None else now)

    def to_state(self) -> dict[str, Any]:
        """The JSON form kept in the spawner's state."""
        return asdict(self)

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | None) -> SpawnLease | None:
        """The lease in a spawner's state, or None when absent or malformed."""
        section = state.get(STATE_KEY) if isinstance(state, Mapping) else None
        if not isinstance(section, Mapping):
            return None
        try:
            lease = cls(
                profile=str(section["profile"]),
                deadline=int(section["deadline"]),
                correlation_id=str(section["correlation_id"]),
                session_id=str(section["session_id"]),
                started=int(section["started"]),
                token_hash=str(section.get("token_hash", "")),
            )
        except (KeyError, TypeError, ValueError):
            return None
        return lease

    def env(self, names: Mapping[str, str], guard_url: str, server_token: str) -> dict[str, str]:
        """The variables the server gets, under the configured ``names`` (empty: not set).

        The MLflow variables are set only with a guard URL: the gateway lives under it
        (``<guard URL>mlflow``) and accepts ``server_token``, the server's own hub API
        token (the same value as its ``JUPYTERHUB_API_TOKEN``), never MLflow's own
        credentials.
        """
        values = {
            "guard_url": guard_url,
            "session_id": self.session_id,
            "profile": self.profile,
            "deadline": self.deadline_text,
            "mlflow_uri": f"{guard_url.rstrip('/')}/mlflow" if guard_url else "",
            "mlflow_token": server_token if guard_url else "",
        }
        return {names[role]: value for role, value in values.items() if names.get(role) and value}


def server_url_of(state: Mapping[str, Any] | None) -> str:
    """The running server's own URL kept in a spawner's state ("" when absent)."""
    url = state.get(SERVER_URL_KEY) if isinstance(state, Mapping) else None
    return url if isinstance(url, str) and url.startswith(("http://", "https://")) else ""


def token_digest(token: str) -> str:
    """The SHA-256 hex digest a lease keeps of the server's API token."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def rfc3339(epoch: float) -> str:
    """``epoch`` as RFC 3339 UTC with whole seconds, ending in ``Z``."""
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def scrub_env(env: Mapping[str, str], secrets: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """``env`` without the hub's secrets; also returns the names dropped, sorted.

    A variable is dropped when its name is one of :data:`NEVER_PASSED` or its value
    contains one of ``secrets`` (nbguard's keys, key paths and database URLs, and
    the values the hub process holds under the :data:`NEVER_PASSED` names).
    """
    needles = {s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_LENGTH}
    needles |= {
        value
        for name in NEVER_PASSED
        if len(value := os.environ.get(name, "")) >= MIN_SECRET_LENGTH
    }
    kept: dict[str, str] = {}
    dropped: list[str] = []
    for name, value in env.items():
        text = value if isinstance(value, str) else str(value)
        if name in NEVER_PASSED or any(needle in text for needle in needles):
            dropped.append(name)
        else:
            kept[name] = value
    return kept, sorted(dropped)
