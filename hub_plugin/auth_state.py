"""nbguard's part of a user's encrypted JupyterHub auth state.

After a login with a second factor, ``auth_state["nbguard"]`` records how and
when the factor was satisfied and what the login looked like, so that later
checks (spawn, step-up, the guard service) can ask how fresh the MFA is.
JupyterHub encrypts auth state with ``JUPYTERHUB_CRYPT_KEY``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from nbguard.policy.vocabulary import MFA_METHODS, MFA_NEVER, RISK_LEVELS

#: Key of nbguard's section in the auth state.
SECTION = "nbguard"
VERSION = 1


@dataclass(frozen=True, slots=True)
class MFAState:
    """How the user's current login session satisfied its second factor."""

    session_id: str
    mfa_method: str
    mfa_time: float
    login_time: float
    client_ip: str
    network_zone: str
    device_trusted: bool
    device_id: str
    risk: str

    def mfa_age(self, now: float | None = None) -> int:
        """Seconds since the second factor was last satisfied."""
        moment = time.time() if now is None else now
        return max(0, min(int(moment - self.mfa_time), MFA_NEVER))

    def stepped_up(self, method: str, at: float | None = None) -> MFAState:
        """This state with a fresh second factor (a step-up)."""
        return replace(self, mfa_method=method, mfa_time=time.time() if at is None else at)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in the auth state."""
        return {"v": VERSION, **asdict(self)}


def read_state(auth_state: Mapping[str, Any] | None) -> MFAState | None:
    """nbguard's section of ``auth_state``, or None when absent or malformed."""
    if not isinstance(auth_state, Mapping):
        return None
    section = auth_state.get(SECTION)
    if not isinstance(section, Mapping) or section.get("v") != VERSION:
        return None
    try:
        state = MFAState(
            session_id=str(section["session_id"]),
            mfa_method=str(section["mfa_method"]),
            mfa_time=float(section["mfa_time"]),
            login_time=float(section["login_time"]),
            client_ip=str(section["client_ip"]),
            network_zone=str(section["network_zone"]),
            device_trusted=section["device_trusted"] is True,
            device_id=str(section["device_id"]),
            risk=str(section["risk"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
    if state.mfa_method not in MFA_METHODS or state.risk not in RISK_LEVELS:
        return None
    return state


def with_state(auth_state: Mapping[str, Any] | None, state: MFAState) -> dict[str, Any]:
    """A copy of ``auth_state`` (the wrapped authenticator's, possibly None) with ours set."""
    merged = dict(auth_state) if isinstance(auth_state, Mapping) else {}
    merged[SECTION] = state.to_dict()
    return merged
