"""Live sessions API: the servers running now, which are privileged, and ending one.

A session is a running server. It is *privileged* while its user holds an
active grant (a role or a resource grant from an approved request or
break-glass): what that server's kernels do then is what reviewers replay.
Admins (``guard.admin``) list sessions and terminate them: the hub stops the
server, the user's active grants are revoked when asked, and an ``alert``
record says who ended which session and why.
"""

from __future__ import annotations

from typing import Any

from nbguard.elevation import checks
from nbguard.elevation.models import ElevationGrant, rfc3339
from nbguard.errors import NBGuardError
from nbguard.hub_plugin.guard.elevation_records import ElevationEvents, in_store
from nbguard.hub_plugin.guard.handlers.base import (
    APIHandler,
    GuardError,
    http_error,
    require_fields,
)
from nbguard.hub_plugin.spawner_lease import SpawnLease

TERMINATE_FIELDS: dict[str, type] = {"server": str, "reason": str, "revoke_grants": bool}


def session_summary(
    user: str, server: str, lease: SpawnLease | None, grants: list[ElevationGrant]
) -> dict[str, Any]:
    """One running server as the API and the pages show it."""
    return {
        "user": user,
        "server": server,
        "profile": lease.profile if lease else None,
        "started": rfc3339(lease.started) if lease else None,
        "deadline": rfc3339(lease.deadline) if lease else None,
        "privileged": bool(grants),
        "grants": [
            {
                "id": g.id,
                "role": g.role,
                "action": g.action,
                "target": g.target,
                "expires": rfc3339(g.expires),
                "break_glass": g.break_glass,
            }
            for g in grants
        ],
    }


class SessionsAPIHandler(APIHandler):
    """Shared by the session routes: the running servers with their users' grants."""

    async def sessions(self, user: str | None = None) -> list[dict[str, Any]]:
        """Running servers (of ``user``, or everyone's), privileged ones first."""
        try:
            running = await self.guard.hub.running_servers()
        except NBGuardError as error:
            raise http_error(error) from error
        grants = await in_store(self.guard.elevations.list_grants, user=user)
        held: dict[str, list[ElevationGrant]] = {}
        for grant in grants:
            held.setdefault(grant.user, []).append(grant)
        found = [
            session_summary(name, server, lease, held.get(name, []))
            for name, server, lease, _url in running
            if user is None or name == user
        ]
        found.sort(key=lambda s: (not s["privileged"], s["user"], s["server"]))
        return found


class SessionsHandler(SessionsAPIHandler):
    """``GET /api/v1/sessions``: every running server, privileged first. Admins only."""

    async def get(self) -> None:
        """``privileged=1`` lists only privileged sessions."""
        await self.require_admin(await self.caller_context())
        only = self.get_query_argument("privileged", "0")
        if only not in ("0", "1"):
            raise GuardError(400, "bad_request", "privileged must be 0 or 1.")
        found = await self.sessions()
        if only == "1":
            found = [s for s in found if s["privileged"]]
        self.write_json({"sessions": found})


class SessionTerminateHandler(SessionsAPIHandler):
    """``POST /api/v1/sessions/{user}/terminate``: stop a user's server(s). Admins only."""

    async def post(self, user: str) -> None:
        """Stop ``server`` (default: every server of the user), optionally revoking the
        user's active grants first; 200 with what was done, 404 if nothing runs."""
        body = self.json_body()
        require_fields(body, TERMINATE_FIELDS, optional=("server", "revoke_grants"))
        try:
            reason = checks.text("reason", body["reason"], required=True)
        except NBGuardError as error:
            raise http_error(error) from error
        who = await self.require_admin(await self.caller_context())
        running = await self.sessions(user)
        if "server" in body:
            running = [s for s in running if s["server"] == body["server"]]
        if not running:
            raise GuardError(404, "not_found", "No such running session.")
        revoked: list[str] = []
        if body.get("revoke_grants"):
            events = ElevationEvents(self.guard)
            for grant_id in sorted({g["id"] for s in running for g in s["grants"]}):
                grant = await in_store(
                    self.guard.elevations.revoke, grant_id, by=who.name, reason=reason
                )
                await events.grant(
                    who, "revoke", grant, text=grant.revoke_reason, notify="grant.revoked"
                )
                revoked.append(grant.id)
        stopped = []
        for session in running:
            try:
                await self.guard.hub.stop_server(user, session["server"])
            except NBGuardError as error:
                raise http_error(error) from error
            stopped.append(f"{user}/{session['server']}")
            await self.record(who.name, user, session, reason, revoked)
        self.write_json({"stopped_servers": stopped, "revoked_grants": revoked})

    async def record(
        self, by: str, user: str, session: dict[str, Any], reason: str, revoked: list[str]
    ) -> None:
        """The ``alert`` record of one terminated session (logged if it cannot be written:
        the server is already stopping)."""
        body = {
            "alert": "session-terminated",
            "severity": "warning",
            "message": f"An administrator terminated this session: {reason}"[:2048],
            "subject": user,
            "details": {
                "server": session["server"],
                "by": by,
                "privileged": session["privileged"],
                "revoked_grants": len(revoked),
            },
        }
        try:
            await self.guard.ledger.append_async("alert", body, actor=by)
        except NBGuardError as error:
            self.guard.log.error(
                "nbguard guard: %s/%s terminated but not recorded: %s",
                user,
                session["server"],
                error,
            )
