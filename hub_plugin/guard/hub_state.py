"""What the hub knows about a user that decisions need: their MFA state and server leases.

The guard service reads it from the hub's REST API with its own token (scopes
``admin:auth_state`` and ``admin:server_state``, granted by
:func:`~nbguard.hub_plugin.guard.hub_config.guard_service`). Both come from the
hub zone: the auth state was written by the login gate, the leases by the
spawner mixin. Answers are cached for ``ttl`` seconds; concurrent requests for
one user share one fetch. If the hub cannot be reached, :class:`HubUnavailable`
is raised and the caller fails closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from nbguard.errors import NBGuardError
from nbguard.hub_plugin.auth_state import MFAState, read_state
from nbguard.hub_plugin.spawner_lease import SpawnLease, server_url_of


class HubUnavailable(NBGuardError):
    """The hub's API did not answer; nothing can be decided without it."""

    default_user_message = (
        "nbguard cannot reach JupyterHub to check your session, so access is refused. "
        "Try again in a moment."
    )


class RunningServer(NamedTuple):
    """A server the hub reports ready."""

    user: str
    #: The server's name ("" for the default server).
    name: str
    #: The lease the spawner mixin made (None for a server nbguard did not spawn).
    lease: SpawnLease | None
    #: Its own URL, where the proxy routes to ("" when the spawner did not keep it).
    url: str


@dataclass(frozen=True, slots=True)
class UserState:
    """A user as the hub sees them, at ``fetched`` (time.monotonic)."""

    name: str
    admin: bool
    mfa: MFAState | None
    #: Running (or starting) servers by name, with the lease the spawner mixin made.
    leases: dict[str, SpawnLease] = field(default_factory=dict)
    fetched: float = 0.0


class HubClient:
    """A small async client of the hub REST API, with a per-user cache."""

    def __init__(
        self, api_url: str, api_token: str, *, ttl: float, log: logging.Logger | None = None
    ) -> None:
        self.api_url = api_url.rstrip("/") + "/"
        self._token = api_token
        self.ttl = ttl
        self.log = log or logging.getLogger("nbguard.guard")
        self._cache: dict[str, UserState] = {}
        self._inflight: dict[str, asyncio.Future[UserState | None]] = {}
        self._http = AsyncHTTPClient()

    async def _call(self, method: str, path: str) -> Any:
        request = HTTPRequest(
            self.api_url + path,
            method=method,
            headers={"Authorization": f"token {self._token}"},
            request_timeout=10,
            allow_nonstandard_methods=True,
        )
        try:
            response = await self._http.fetch(request)
        except HTTPClientError as error:
            if error.code == 404:
                return None
            raise HubUnavailable(f"hub API {method} {path}: HTTP {error.code}") from error
        except OSError as error:
            raise HubUnavailable(f"hub API {method} {path}: {error}") from error
        if not response.body:
            return {}
        try:
            return json.loads(response.body)
        except ValueError as error:
            raise HubUnavailable(f"hub API {method} {path}: not JSON ({error})") from error

    async def user_state(self, name: str, *, max_age: float | None = None) -> UserState | None:
        """The user's state, at most ``max_age`` (default ``ttl``) seconds old; None if unknown."""
        limit = self.ttl if max_age is None else max_age
        cached = self._cache.get(name)
        if cached is not None and time.monotonic() - cached.fetched <= limit:
            return cached
        pending = self._inflight.get(name)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(name))
            self._inflight[name] = pending
            pending.add_done_callback(lambda _done: self._inflight.pop(name, None))
        return await asyncio.shield(pending)

    async def _fetch(self, name: str) -> UserState | None:
        model = await self._call("GET", f"users/{quote(name, safe='')}")
        if not isinstance(model, dict) or not model:
            self._cache.pop(name, None)
            return None
        leases: dict[str, SpawnLease] = {}
        for server_name, server in (model.get("servers") or {}).items():
            lease = SpawnLease.from_state(server.get("state")) if isinstance(server, dict) else None
            if lease is not None and not server.get("stopped"):
                leases[str(server_name)] = lease
        state = UserState(
            name=name,
            admin=model.get("admin") is True,
            mfa=read_state(model.get("auth_state")),
            leases=leases,
            fetched=time.monotonic(),
        )
        self._cache[name] = state
        return state

    def forget(self, name: str) -> None:
        """Drop the cached state of ``name`` (after the hub changed it)."""
        self._cache.pop(name, None)

    async def stop_server(self, name: str, server: str = "") -> None:
        """Ask the hub to stop one of ``name``'s servers."""
        path = f"users/{quote(name, safe='')}/server"
        if server:
            path += f"s/{quote(server, safe='')}"
        await self._call("DELETE", path)
        self.forget(name)

    async def running_servers(self) -> list[RunningServer]:
        """Every running server on the hub."""
        users = await self._call("GET", "users?state=active&include_stopped_servers=0")
        found: list[RunningServer] = []
        for model in users if isinstance(users, list) else []:
            for server_name, server in (model.get("servers") or {}).items():
                if isinstance(server, dict) and server.get("ready"):
                    state = server.get("state")
                    found.append(
                        RunningServer(
                            str(model.get("name")),
                            str(server_name),
                            SpawnLease.from_state(state),
                            server_url_of(state),
                        )
                    )
        return found
