"""REST endpoints for the JupyterLab panel, under ``/nbguard/api/``.

Each one forwards to the guard service with the server's own token and passes
the guard's answer back unchanged, errors included (same status, same JSON
body, so a denial still says what would allow the access). The browser
request's address, user agent and Jupyter user go along in the
``X-NBGuard-Browser`` header as information for the guard's records; the guard
never decides on them. ``openapi.yaml`` beside this module describes the routes,
and a test checks it against :data:`ROUTES`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler

from nbguard.server_extension.guard_client import (
    BROWSER_HEADER,
    GuardAnswerError,
    GuardClient,
    error_body,
)

if TYPE_CHECKING:
    from nbguard.server_extension.app import NBGuardExtension

#: The ``auth_resource`` of every route here (allowed like any Jupyter resource).
AUTH_RESOURCE = "nbguard"

#: The fields ``POST requests`` accepts, with their types (as the guard's ``NewRequest``).
REQUEST_FIELDS: dict[str, type] = {
    "role": str,
    "action": str,
    "resource": str,
    "duration_seconds": int,
    "reason": str,
}
MAX_REASON = 2000


class GuardProxyHandler(APIHandler):
    """Forwards one panel call to the guard service and writes back its answer."""

    auth_resource = AUTH_RESOURCE

    @property
    def extension(self) -> NBGuardExtension:
        """The running extension (the ExtensionApp puts itself in the settings)."""
        app: NBGuardExtension = self.settings["nbguard"]
        return app

    @property
    def guard(self) -> GuardClient:
        """The client to the guard service, with the server's token."""
        client = self.extension.guard
        if client is None:  # routes exist only when the extension is active
            raise RuntimeError("nbguard's routes are served without a guard client")
        return client

    def browser_context(self) -> str:
        """The browser request's context as JSON, for the guard's records only."""
        user = self.current_user
        return json.dumps(
            {
                "remote_ip": self.request.remote_ip,
                "user_agent": self.request.headers.get("User-Agent", "")[:512],
                "jupyter_user": getattr(user, "username", ""),
            },
            separators=(",", ":"),
        )

    async def forward(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
    ) -> None:
        """Call the guard and write its status and JSON body as this answer."""
        status, answer = await self.guard.call(
            method,
            path,
            params=params,
            body=body,
            headers={BROWSER_HEADER: self.browser_context()},
        )
        self.set_status(status)
        self.finish(json.dumps(answer))

    def query(self, *names: str) -> dict[str, str]:
        """The given query arguments that the browser sent (the guard checks their values)."""
        found = {}
        for name in names:
            value = self.get_query_argument(name, None)
            if value is not None:
                found[name] = value
        return found

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """The guard's JSON error body as is; other errors in the same shape."""
        self.set_header("Content-Type", "application/json")
        exc_info = kwargs.get("exc_info")
        error = exc_info[1] if exc_info else None
        if isinstance(error, GuardAnswerError):
            self.finish(json.dumps(error.body))
            return
        message = getattr(error, "log_message", None) or self._reason
        self.finish(json.dumps(error_body(status_code, code_for(status_code), message)))


def code_for(status: int) -> str:
    """The error code of an error the server itself answers."""
    return {400: "bad_request", 403: "forbidden", 404: "not_found", 405: "not_allowed"}.get(
        status, "error"
    )


def bad_request(message: str) -> GuardAnswerError:
    """400 in the guard's error shape, for a body the server refuses before forwarding."""
    return GuardAnswerError(400, error_body(400, "bad_request", message))


def checked_request(raw: bytes) -> dict[str, Any]:
    """The body of ``POST requests``, checked: a JSON object of the guard's fields.

    Either ``role``, or ``action`` and ``resource``; ``duration_seconds`` a
    positive integer; ``reason`` a non-empty string of at most 2000 characters.
    """
    try:
        body = json.loads(raw or b"")
    except ValueError:
        raise bad_request("The body must be JSON.") from None
    if not isinstance(body, dict):
        raise bad_request("The body must be a JSON object.")
    unknown = sorted(set(body) - set(REQUEST_FIELDS))
    if unknown:
        raise bad_request(f"Unknown field(s): {', '.join(unknown)}.")
    for name, kind in REQUEST_FIELDS.items():
        value = body.get(name)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise bad_request(f"{name} must be a {kind.__name__}.")
    if ("role" in body) == ("action" in body or "resource" in body):
        raise bad_request("Ask for either a role, or an action and a resource.")
    if "role" not in body and not ("action" in body and "resource" in body):
        raise bad_request("An action needs a resource, and a resource an action.")
    duration = body.get("duration_seconds")
    if duration is None or duration < 1:
        raise bad_request("duration_seconds must be a positive number of seconds.")
    reason = body.get("reason")
    if not reason or not reason.strip() or len(reason) > MAX_REASON:
        raise bad_request(f"reason must say why, in at most {MAX_REASON} characters.")
    return body


class ContextHandler(GuardProxyHandler):
    """``GET /nbguard/api/context``: who I am and the context I am decided in (guard ``me``)."""

    @authorized
    async def get(self) -> None:
        """The guard's ``api/v1/me``."""
        await self.forward("GET", "api/v1/me")


class CatalogHandler(GuardProxyHandler):
    """``GET /nbguard/api/catalog``: the datasets I may see, with what I may do now."""

    @authorized
    async def get(self) -> None:
        """The guard's ``api/v1/datasets``."""
        await self.forward("GET", "api/v1/datasets")


class ModelsHandler(GuardProxyHandler):
    """``GET /nbguard/api/models``: the registered models I may see, with what I may do now."""

    @authorized
    async def get(self) -> None:
        """The guard's ``api/v1/models`` (``max_results``, ``page_token`` passed on); its
        404 when the guard fronts no model registry."""
        await self.forward("GET", "api/v1/models", params=self.query("max_results", "page_token"))


class GrantsHandler(GuardProxyHandler):
    """``GET /nbguard/api/grants``: my grants."""

    @authorized
    async def get(self) -> None:
        """The guard's ``api/v1/grants`` (``scope``, ``active`` passed on)."""
        await self.forward("GET", "api/v1/grants", params=self.query("scope", "active"))


class RequestsHandler(GuardProxyHandler):
    """``GET`` and ``POST /nbguard/api/requests``: my elevation requests; ask for one."""

    @authorized
    async def get(self) -> None:
        """The guard's ``api/v1/requests`` (``scope``, ``status`` passed on)."""
        await self.forward("GET", "api/v1/requests", params=self.query("scope", "status"))

    @authorized
    async def post(self) -> None:
        """Check the body, then ask the guard (201 with the new request)."""
        body = checked_request(self.request.body)
        await self.forward("POST", "api/v1/requests", body=body)


#: ``(path under the server's base URL, handler)``, as the OpenAPI document names them.
ROUTES: list[tuple[str, type[GuardProxyHandler]]] = [
    ("nbguard/api/context", ContextHandler),
    ("nbguard/api/catalog", CatalogHandler),
    ("nbguard/api/models", ModelsHandler),
    ("nbguard/api/grants", GrantsHandler),
    ("nbguard/api/requests", RequestsHandler),
]
