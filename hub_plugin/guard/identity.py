"""Who is calling the guard service: a hub user (through one of their servers or not).

JupyterHub identifies every request's token (``/hub/api/user``); this module
turns that model into a :class:`Caller`. Which server a token speaks for is taken
from its scopes only as a claim: :mod:`nbguard.hub_plugin.guard.hub_state`
confirms it against the server's spawn lease before any policy sees the
server's environment.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
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
    return _caller(model, token_hash(token))


def token_hash(token: str) -> str:
    """SHA-256 of a token, as spawn leases keep it (``Caller.token_hash``)."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def _caller(model: Mapping[str, Any], hashed: str) -> Caller:
    kind = str(model.get("kind") or "user")
    name = str(model.get("name") or "")
    scopes = frozenset(str(s) for s in model.get("scopes") or ())
    return Caller(
        kind=kind,
        name=name,
        server=_claimed_server(name, scopes) if kind == "user" else None,
        token_hash=hashed,
        hub_session=str(model.get("session_id") or ""),
        scopes=scopes,
    )


class CallerCache:
    """Each token's Caller and scope check, kept while the hub's answer for it is kept.

    JupyterHub's ``HubAuth`` keeps the user model it got for a token for
    ``cache_max_age`` seconds and hands out that very object meanwhile. An entry
    here is used only while the model given is that same object, so it lives no
    longer than HubAuth's answer: a token the hub revoked or whose scopes
    changed is looked at afresh as soon as HubAuth asks the hub again. Keyed by
    the token's hash, so no token is kept here.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        #: token hash -> (the model, its Caller, whether the scope check passed)
        self._entries: dict[str, tuple[Mapping[str, Any], Caller, bool]] = {}

    def caller(
        self, model: Mapping[str, Any], token: str, scoped: Callable[[Mapping[str, Any]], bool]
    ) -> tuple[Caller, bool]:
        """The Caller of ``token`` whose hub model is ``model``, and ``scoped(model)``."""
        hashed = token_hash(token)
        entry = self._entries.get(hashed)
        if entry is not None and entry[0] is model:
            return entry[1], entry[2]
        caller, allowed = _caller(model, hashed), bool(scoped(model))
        if len(self._entries) >= self.size:
            self._entries.clear()  # tokens in use are few; a full table simply restarts
        self._entries[hashed] = (model, caller, allowed)
        return caller, allowed


def _claimed_server(name: str, scopes: frozenset[str]) -> str | None:
    """The one server of ``name`` the scopes name, if exactly one."""
    prefix = f"{_SERVER_SCOPE}{name}/"
    servers = {s[len(prefix) :] for s in scopes if s.startswith(prefix)}
    if len(servers) != 1:
        return None
    return servers.pop()
