"""Who is calling the guard service: a hub user (through one of their servers or not).

JupyterHub identifies every request's token (``/hub/api/user``); this module
turns that model into a :class:`Caller`. Which server a token speaks for is taken
from its scopes only as a claim: :mod:`nbguard.hub_plugin.guard.hub_state`
confirms it against the server's spawn lease before any policy sees the
server's environment.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_SERVER_SCOPE = "access:servers!server="


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated principal of one request."""

    #: "user" or "service".
    kind: str
    name: str
    #: The server name this token claims to belong to ("" for the default server),
    #: or None when the token is not scoped to exactly one of the user's servers.
    server: str | None
    #: SHA-256 of the token, to compare with a server lease's ``token_hash``.
    token_hash: str
    #: The hub's login session the token belongs to ("" if none).
    hub_session: str
    scopes: frozenset[str]

    @property
    def is_user(self) -> bool:
        """True for hub users (services never act as policy principals)."""
        return self.kind == "user"


def caller_from_model(model: Mapping[str, Any], token: str) -> Caller:
    """The Caller for a hub ``/user`` model of ``token`` (``kind``, ``name``, ``scopes``)."""
    kind = str(model.get("kind") or "user")
    name = str(model.get("name") or "")
    scopes = frozenset(str(s) for s in model.get("scopes") or ())
    return Caller(
        kind=kind,
        name=name,
        server=_claimed_server(name, scopes) if kind == "user" else None,
        token_hash=hashlib.sha256(token.encode("utf-8", "replace")).hexdigest(),
        hub_session=str(model.get("session_id") or ""),
        scopes=scopes,
    )


def _claimed_server(name: str, scopes: frozenset[str]) -> str | None:
    """The one server of ``name`` the scopes name, if exactly one."""
    prefix = f"{_SERVER_SCOPE}{name}/"
    servers = {s[len(prefix) :] for s in scopes if s.startswith(prefix)}
    if len(servers) != 1:
        return None
    return servers.pop()
