"""``NBGuardAuthorizer``: Jupyter's own resources as the guard's entitlement allows.

jupyter-server asks its ``Authorizer`` about an ``(action, resource)`` pair for
every request (``read``/``write`` from the HTTP method, ``execute`` for
websockets). Four kinds of pair need a permission from the user's current
entitlement (see :mod:`~nbguard.server_extension.entitlements`):

| resource | action | permission |
|---|---|---|
| ``terminals`` | any | ``jupyter.terminal`` |
| ``contents`` | ``write`` | ``jupyter.contents_write`` |
| ``kernels`` | ``execute`` (websocket); ``write`` but DELETE | ``jupyter.kernel_execute`` |
| ``sessions`` | ``write`` but DELETE (starts a kernel) | ``jupyter.kernel_execute`` |

``events`` ``write`` (``POST /api/events``) is always refused: events sent that
way could be forged. Shutting a kernel or a session down, and interrupting a
kernel, stay allowed, so a user who lost execution can still stop what runs.
Everything else is allowed, as Jupyter's default authorizer would. Without a
valid entitlement the server fails closed: no terminals, no writes, no execution.

This is a convenience in the user zone (the user can run code as the server's
OS user once execution is allowed); the guard service enforces governed access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jupyter_server.auth.authorizer import Authorizer

if TYPE_CHECKING:
    from jupyter_server.auth.identity import User
    from jupyter_server.base.handlers import JupyterHandler

TERMINAL = "jupyter.terminal"
CONTENTS_WRITE = "jupyter.contents_write"
KERNEL_EXECUTE = "jupyter.kernel_execute"
#: Marks a pair that is refused whatever the entitlement says.
NEVER = "never"


def required_permission(action: str, resource: str, method: str = "", path: str = "") -> str | None:
    """The entitlement permission ``(action, resource)`` needs; None if none, NEVER if refused.

    ``method`` and ``path`` are the request's (shutting down and interrupting are
    always allowed).
    """
    if resource == "events" and action == "write":
        return NEVER
    if resource == "terminals":
        return TERMINAL
    if resource == "contents" and action == "write":
        return CONTENTS_WRITE
    stops = method == "DELETE" or (method == "POST" and path.endswith("/interrupt"))
    starts_or_runs = action == "execute" or (action == "write" and not stops)
    if resource == "kernels" and starts_or_runs:
        return KERNEL_EXECUTE
    if resource == "sessions" and action == "write" and method != "DELETE":
        return KERNEL_EXECUTE
    return None


class NBGuardAuthorizer(Authorizer):
    """Allows terminals, writes and execution as the guard's entitlement says; fails closed."""

    async def is_authorized(  # type: ignore[override]
        self, handler: JupyterHandler, user: User, action: str, resource: str
    ) -> bool:
        """True if ``user`` may take ``action`` on ``resource`` in this server now."""
        request = handler.request
        needed = required_permission(action, resource, request.method or "", request.path or "")
        if needed is None:
            return True
        if needed == NEVER:
            self.log.warning("nbguard | refused %s on %s from the user zone", action, resource)
            return False
        cache = getattr(handler.settings.get("nbguard"), "entitlements", None)
        entitlement = await cache.current() if cache is not None else None
        allowed = entitlement is not None and entitlement.allows(needed)
        if not allowed:
            self.log.info(
                "nbguard | refused %s on %s for %s: %s",
                action,
                resource,
                getattr(user, "username", "?"),
                "no valid entitlement" if entitlement is None else f"{needed} not entitled",
            )
        return allowed
