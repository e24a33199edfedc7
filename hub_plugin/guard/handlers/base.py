"""The guard service's HTTP edge: authentication, JSON bodies, and errors as JSON.

API routes (``/api/v1/...``) accept only hub API tokens (``Authorization: token
...`` or ``Bearer``): the single-user server's token, a kernel's copy of it, or a
user's own API token. Cookies are ignored there, so no page the user visits can
make their browser call the API (no CSRF surface). Pages use JupyterHub OAuth
(:mod:`nbguard.hub_plugin.guard.handlers.pages`).

Every error leaves as ``{"error": {"status", "code", "message"}}`` with a 4xx
status where the request was at fault; nbguard's own errors are translated here
and only here. The log gets the detailed message; the body gets the user's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from jupyterhub.services.auth import HubOAuthenticated
from tornado import web

from nbguard.catalog.store import CatalogStoreError
from nbguard.elevation.changes import UNREAD, Version
from nbguard.elevation.store import ElevationStoreError
from nbguard.errors import (
    AccessDenied,
    ConflictError,
    NBGuardError,
    NotFoundError,
    RequestError,
)
from nbguard.hub_plugin.guard.decisions import CELL_HEADER, CellRef, LedgerUnavailable, parse_cell
from nbguard.hub_plugin.guard.hub_state import HubUnavailable
from nbguard.hub_plugin.guard.identity import Caller
from nbguard.policy import Decision, EntityRef

if TYPE_CHECKING:
    from nbguard.hub_plugin.guard.app import GuardService
    from nbguard.hub_plugin.guard.contexts import CallerContext
    from nbguard.ledger.writer import Expectation

#: The resource of hub-wide actions (``guard.admin``).
HUB = EntityRef("Hub", "hub")

#: HTTP statuses and stable codes for nbguard's errors, most specific first.
_ERROR_STATUS: tuple[tuple[type[NBGuardError], int, str], ...] = (
    (NotFoundError, 404, "not_found"),
    (RequestError, 400, "bad_request"),
    (ConflictError, 409, "conflict"),
    (AccessDenied, 403, "access_denied"),
    (HubUnavailable, 503, "hub_unavailable"),
    (LedgerUnavailable, 503, "ledger_unavailable"),
    (ElevationStoreError, 503, "unavailable"),
    (CatalogStoreError, 503, "unavailable"),
)
_STATUS_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    411: "length_required",
    413: "too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    429: "too_many_requests",
    503: "unavailable",
}


class GuardError(web.HTTPError):
    """An HTTP error with a stable code and extra JSON fields for the body."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(status, log_message=message.replace("%", "%%"))
        self.code = code
        self.message = message
        self.extra = extra


def http_error(error: NBGuardError) -> GuardError:
    """The GuardError for one of nbguard's errors."""
    for kind, status, code in _ERROR_STATUS:
        if isinstance(error, kind):
            extra: dict[str, Any] = {}
            if isinstance(error, AccessDenied):
                extra = {"decision": error.details}
                if "step_up_url" in error.details:
                    extra["step_up_url"] = error.details["step_up_url"]
            return GuardError(status, code, _user_words(error), **extra)
    return GuardError(500, "internal", error.user_message)


def _user_words(error: NBGuardError) -> str:
    """What the caller reads: the error's user message, or for errors about the
    caller's own input (bad request, not found, conflict) without one, the message,
    which describes only that input."""
    if error.user_message == type(error).default_user_message and isinstance(
        error, RequestError | ConflictError
    ):
        return str(error)
    return error.user_message


class GuardHandler(HubOAuthenticated, web.RequestHandler):  # type: ignore[misc]
    """Shared by every guard-service handler: the app, the caller, JSON errors."""

    def initialize(self) -> None:
        """Use the service's own HubOAuth (not a process-wide singleton)."""
        self.hub_auth = self.settings["hub_auth"]

    def get_current_user(self) -> Any:
        """The user a page's ``prepare`` identified (API routes: none).

        Never the mixin's own lookup, which would block the event loop on a call
        to the hub (tornado and the hub's XSRF code ask for ``current_user``).
        """
        return None

    @property
    def guard(self) -> GuardService:
        """The running service."""
        service: GuardService = self.settings["nbguard_guard"]
        return service

    def set_default_headers(self) -> None:
        """No caching of answers about access, no sniffing, no framing."""
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", "frame-ancestors 'none'")

    def write_json(self, value: Any, status: int = 200) -> None:
        """Send ``value`` as the JSON response body."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(value))

    def error_value(self, status_code: int, **kwargs: Any) -> dict[str, Any]:
        """The ``{"status", "code", "message", ...}`` of an error; never a traceback."""
        code = _STATUS_CODES.get(status_code, "internal" if status_code >= 500 else "error")
        message = self._reason if status_code < 500 else "internal error"
        extra: dict[str, Any] = {}
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, GuardError):
            code, message, extra = exc.code, exc.message, exc.extra
        elif isinstance(exc, web.HTTPError) and exc.log_message and status_code < 500:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        return {"status": status_code, "code": code, "message": message, **extra}

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every error as a JSON body."""
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({"error": self.error_value(status_code, **kwargs)}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """Log nbguard's errors and expected HTTP errors as one line, others in full."""
        if isinstance(value, GuardError):
            self.guard.log.info("%s %s: %s", self.request.method, self.request.path, value.message)
            return
        super().log_exception(typ, value, tb)


class APIHandler(GuardHandler):
    """A JSON API route, token-authenticated, whose ``caller`` is set before the verb runs."""

    #: Largest JSON body accepted, in bytes.
    max_body: ClassVar[int] = 64 * 1024

    caller: Caller
    #: Announces this request's decision record to the ledger's group commit (see
    #: :meth:`Ledger.expect`): once no request in progress still has a record to
    #: come, a batch is committed without waiting out ``Ledger.max_delay``.
    _expected: Expectation | None = None
    #: The database's change version :meth:`caller_context` read, until a decision
    #: uses it (see :meth:`decide`).
    _context_version: Version = UNREAD

    def check_xsrf_cookie(self) -> None:
        """Token-only routes: cookies never authenticate, so there is nothing to forge."""

    async def prepare(self) -> None:
        """Authenticate the token with the hub; 401 without a valid one."""
        self._expected = self.guard.ledger.expect()
        token = self.hub_auth.get_token(self, in_cookie=False)
        if not token:
            raise GuardError(
                401,
                "unauthenticated",
                "Authentication required: send a JupyterHub API token (Authorization: token ...).",
            )
        try:
            model = await self.hub_auth.user_for_token(token, sync=False)
        except Exception as error:  # the hub's client raises plain HTTPErrors
            self.guard.log.error("nbguard guard: token check failed: %s", error)
            raise GuardError(503, "hub_unavailable", HubUnavailable.default_user_message) from None
        if not model:
            raise GuardError(401, "unauthenticated", "The token is not valid (or has expired).")
        self.caller, scoped = self.settings["nbguard_callers"].caller(model, token, self._scoped)
        if not scoped:
            raise GuardError(
                403, "forbidden", "This token may not use the nbguard service (missing scope)."
            )
        if not self.caller.is_user:
            raise GuardError(403, "forbidden", "Only hub users act through this API.")

    def _scoped(self, model: Mapping[str, Any]) -> bool:
        return bool(self.hub_auth.check_scopes(self.hub_auth.access_scopes, model))

    def finish(self, chunk: Any = None) -> Any:
        """Answer; the request records nothing more, so stop announcing a record.

        Here rather than in ``on_finish``, which handlers override.
        """
        try:
            return super().finish(chunk)
        finally:
            self._withdraw_expectation()

    def on_connection_close(self) -> None:
        """The client left: stop announcing a record that may never come."""
        self._withdraw_expectation()
        super().on_connection_close()

    def _withdraw_expectation(self) -> None:
        if self._expected is not None:
            self._expected.withdraw()
            self._expected = None

    async def caller_context(self) -> CallerContext:
        """The caller's context, from hub-zone facts (fails closed if the hub is down).

        The database's change version read for it also serves the catalog check
        of the next :meth:`decide` (one question instead of two per decision).
        """
        version = self._context_version = self.guard.db_changes.version()
        try:
            return await self.guard.resolver.resolve(self.caller, version=version)
        except NBGuardError as error:
            raise http_error(error) from error

    async def decide(
        self, who: CallerContext, action: str, resource: EntityRef
    ) -> tuple[CallerContext, Decision]:
        """Decide (and record) ``action`` on ``resource``, allowed or not.

        Catalog changes another replica made are loaded first, so that no replica
        decides on a dataset's old sensitivity, or on one that is gone.
        """
        # The version caller_context read serves the first decision only: one
        # after this request committed something must look at the database again.
        # (The catalog changes only through the dataset routes, which load it
        # themselves after their commit.)
        version, self._context_version = self._context_version, UNREAD
        try:
            self.guard.sync_catalog(version)
            return await self.guard.decider.decide(
                who, action, resource, cell=self.cell(), expected=self._expected
            )
        except NBGuardError as error:
            raise http_error(error) from error

    async def decide_or_deny(
        self, who: CallerContext, action: str, resource: EntityRef
    ) -> tuple[CallerContext, Decision]:
        """Decide (and record) ``action`` on ``resource``; 403 with the reasons if denied."""
        who, decision = await self.decide(who, action, resource)
        if not decision.allowed:
            raise http_error(self.guard.decider.denial(decision))
        return who, decision

    async def require_admin(self, who: CallerContext) -> CallerContext:
        """403 unless the policy lets the caller administer the guard (``guard.admin``)."""
        who, _decision = await self.decide_or_deny(who, "guard.admin", HUB)
        return who

    def cell(self) -> CellRef | None:
        """The cell the client says made this request (only recorded, never trusted)."""
        try:
            return parse_cell(self.request.headers.get(CELL_HEADER))
        except RequestError as error:
            raise http_error(error) from error

    def json_body(self) -> dict[str, Any]:
        """The request body as a JSON object, or a 4xx saying what is wrong with it."""
        content_type = self.request.headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise GuardError(415, "unsupported_media_type", "Send the body as application/json.")
        body = self.request.body
        if len(body) > self.max_body:
            raise GuardError(413, "too_large", f"The body exceeds {self.max_body} bytes.")
        try:
            value = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise GuardError(400, "bad_request", "The body is not valid JSON.") from None
        if not isinstance(value, dict):
            raise GuardError(400, "bad_request", "The body must be a JSON object.")
        return value


def require_fields(
    body: Mapping[str, Any], types: Mapping[str, type | tuple[type, ...]], *, optional: Any = ()
) -> None:
    """400 unless ``body`` has exactly the fields of ``types`` (less ``optional`` ones), typed."""
    unknown = sorted(set(body) - set(types))
    if unknown:
        raise GuardError(400, "bad_request", f"Unknown field(s): {', '.join(unknown)}.")
    for name, kind in types.items():
        if name not in body:
            if name in optional:
                continue
            raise GuardError(400, "bad_request", f"Missing field: {name}.")
        value = body[name]
        wanted = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in wanted:
            value = None  # true/false is not a number here
        if not isinstance(value, wanted):
            names = " or ".join(_json_type(k) for k in wanted)
            raise GuardError(400, "bad_request", f"Field {name} must be {names}.")


def _json_type(kind: type) -> str:
    return {str: "a string", int: "a whole number", bool: "true or false", dict: "an object"}.get(
        kind, kind.__name__
    )
