"""Ledger records and webhook notifications for elevation, revocation and lock events.

The elevation and lock handlers change the store first and then call these, so
a record never describes a change that did not happen. The decision that
allowed the change was already recorded (and refused if it could not be), so a
ledger that fails at this point is logged loudly rather than turned into an
error for a change that is already in force.

Webhook payloads carry ids, names, states and times: never a token, a reason
or comment (free text may hold personal data), or a storage location.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from nbguard.elevation.models import ElevationGrant, ElevationRequest, Lock, rfc3339
from nbguard.errors import AccessDenied, NBGuardError
from nbguard.hub_plugin.guard.handlers.base import http_error

if TYPE_CHECKING:
    from nbguard.hub_plugin.guard.app import GuardService
    from nbguard.hub_plugin.guard.contexts import CallerContext

T = TypeVar("T")


async def in_store(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one elevation-store call off the event loop; its errors as JSON 4xx/503.

    In a thread, so that a replica waiting on a row lock held by another replica
    does not stall every other request.
    """
    try:
        return await asyncio.to_thread(call, *args, **kwargs)
    except NBGuardError as error:
        raise http_error(error) from error


def refuse_if_locked(who: CallerContext) -> None:
    """403 for a locked user or device, for routes that make no recorded decision."""
    if who.locks:
        lock = who.locks[0]
        words = (
            f"Your access is locked by an administrator ({lock.kind} lock: {lock.reason}). "
            "Ask your hub administrator to lift it."
        )
        details = {"allowed": False, "locked": True, "lock_id": lock.id, "message": words}
        raise http_error(AccessDenied(f"{who.name}: locked", user_message=words, details=details))


def asked_for(role: str, action: str, target: str) -> str:
    """What is asked for, in one string: ``role:x`` or ``dataset.read on dataset:y``."""
    return f"role:{role}" if role else f"{action} on {target}"


def request_summary(request: ElevationRequest) -> dict[str, Any]:
    """A request as webhook payloads show it (no reason, no comments)."""
    return {
        "id": request.id,
        "requester": request.requester,
        "kind": request.kind,
        "role": request.role,
        "action": request.action,
        "target": request.target,
        "duration_seconds": request.duration_seconds,
        "environment": request.environment,
        "sensitivity": request.sensitivity,
        "status": request.status,
        "required_approvals": request.required_approvals,
        "approvals": sum(a.verdict == "approve" for a in request.approvals),
        "break_glass": request.break_glass,
        "expires": rfc3339(request.expires),
        "grant_id": request.grant_id,
    }


def grant_summary(grant: ElevationGrant) -> dict[str, Any]:
    """A grant as webhook payloads show it (no reasons, no comments)."""
    return {
        "id": grant.id,
        "request_id": grant.request_id,
        "user": grant.user,
        "role": grant.role,
        "action": grant.action,
        "target": grant.target,
        "starts": rfc3339(grant.starts),
        "expires": rfc3339(grant.expires),
        "break_glass": grant.break_glass,
        "revoked": rfc3339(grant.revoked),
        "revoked_by": grant.revoked_by,
        "review_status": grant.review_status,
        "reviewed_by": grant.reviewed_by,
    }


def lock_summary(lock: Lock) -> dict[str, Any]:
    """A lock as webhook payloads show it (no reason)."""
    return {
        "id": lock.id,
        "kind": lock.kind,
        "value": lock.value,
        "created_by": lock.created_by,
        "until": rfc3339(lock.until),
        "lifted": rfc3339(lock.lifted),
        "lifted_by": lock.lifted_by,
    }


class ElevationEvents:
    """Writes the ``elevation`` and ``lock`` ledger records and sends the webhooks."""

    def __init__(self, guard: GuardService) -> None:
        self.guard = guard

    async def _append(self, kind: str, body: dict[str, Any], who: CallerContext) -> None:
        try:
            await self.guard.ledger.append_async(
                kind, body, actor=who.name, session=who.session_id or None
            )
        except NBGuardError as error:
            self.guard.log.error(
                "nbguard guard: %s %s is in force but could not be recorded: %s",
                kind,
                body.get("event"),
                error,
            )

    async def request(
        self,
        who: CallerContext,
        event: str,
        request: ElevationRequest,
        *,
        text: str = "",
        grant: ElevationGrant | None = None,
        notify: str = "",
    ) -> None:
        """Record ``event`` about ``request`` (by ``who``), then notify ``notify``."""
        body: dict[str, Any] = {
            "event": event,
            "request_id": request.id,
            "requester": request.requester,
            "grant": asked_for(request.role, request.action, request.target)[:512],
            "duration_s": request.duration_seconds,
        }
        if event not in ("request", "cancel", "break-glass"):
            body["approver"] = who.name
        if text:
            body["reason"] = text[:2048]
        if grant is not None:
            body["grant_id"] = grant.id
            body["expires_at"] = rfc3339(grant.expires)
        await self._append("elevation", body, who)
        if notify:
            extra = {"grant": grant_summary(grant)} if grant is not None else {}
            self.guard.notifier.notify(
                notify, by=who.name, request=request_summary(request), **extra
            )

    async def grant(
        self, who: CallerContext, event: str, grant: ElevationGrant, *, text: str, notify: str
    ) -> None:
        """Record ``event`` (revoke, review) about ``grant`` by ``who``, then notify."""
        body: dict[str, Any] = {
            "event": event,
            "request_id": grant.request_id,
            "requester": grant.user,
            "approver": who.name,
            "grant": asked_for(grant.role, grant.action, grant.target)[:512],
            "grant_id": grant.id,
            "expires_at": rfc3339(grant.expires),
        }
        if text:
            body["reason"] = text[:2048]
        await self._append("elevation", body, who)
        self.guard.notifier.notify(notify, by=who.name, grant=grant_summary(grant))

    async def lock(self, who: CallerContext, event: str, lock: Lock, *, notify: str) -> None:
        """Record ``event`` (lock, unlock) about ``lock`` by ``who``, then notify."""
        body: dict[str, Any] = {
            "event": event,
            "lock_id": lock.id,
            "kind": lock.kind,
            "value": lock.value,
            "by": who.name,
        }
        if event == "lock":
            body["reason"] = lock.reason[:2048]
        if lock.until is not None:
            body["until"] = rfc3339(lock.until)
        await self._append("lock", body, who)
        self.guard.notifier.notify(notify, by=who.name, lock=lock_summary(lock))


async def stop_servers(
    guard: GuardService, holds: Callable[[str], Awaitable[bool]], why: str
) -> list[str]:
    """Stop, through the hub, every running server whose user ``holds``; ``user/server``
    names of those stopped. Failures are logged: what they follow is already in force."""
    stopped: list[str] = []
    try:
        running = await guard.hub.running_servers()
    except NBGuardError as error:
        guard.log.error("nbguard guard: cannot list servers to stop (%s): %s", why, error)
        return stopped
    for name, server, _lease, _url in running:
        try:
            if not await holds(name):
                continue
            await guard.hub.stop_server(name, server)
        except NBGuardError as error:
            guard.log.error(
                "nbguard guard: could not stop %s/%s (%s): %s", name, server, why, error
            )
            continue
        guard.log.info("nbguard guard: stopped %s/%s (%s)", name, server, why)
        stopped.append(f"{name}/{server}")
    return stopped
