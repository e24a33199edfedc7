"""The guard service's pages for approvers and admins, in JupyterHub's look.

Browsers sign in with JupyterHub OAuth (the hub's login, second factor
included); the service keeps the OAuth token in its own cookie and checks the
hub's XSRF token on every form. Pages show:

- ``requests``: requests waiting for the caller's approval, with approve and
  deny forms (a comment each), the caller's own requests, and a form to ask
  for a role or a grant (denials in notebooks link here; ``?action=``,
  ``resource=`` and ``role=`` fill it in);
- ``grants``: active grants (everyone's for admins) with revoke forms, and
  break-glass grants waiting for review;
- ``locks`` (admins): locks in force, a form to lock a user or device, lift;
- ``sessions`` (admins): running servers, privileged ones first, with a
  terminate form; below them the latest witness alerts.

Forms post to ``actions/...`` routes that are the API handlers themselves,
with the form as body and a redirect back as answer: a page can do nothing the
API would not let the same person do, and every rule and record is the API's.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar
from urllib.parse import urlencode

from jupyterhub.services.auth import HubOAuthCallbackHandler
from tornado import web

from nbguard.elevation.models import PENDING, REVIEW_REQUIRED, rfc3339
from nbguard.hub_plugin.guard.elevation_records import asked_for, in_store
from nbguard.hub_plugin.guard.handlers.base import GuardError, GuardHandler
from nbguard.hub_plugin.guard.handlers.elevation import (
    ElevationAPIHandler,
    GrantReviewHandler,
    GrantRevokeHandler,
    RequestDecisionHandler,
    RequestsHandler,
    same_person,
)
from nbguard.hub_plugin.guard.handlers.executions import in_execution_store
from nbguard.hub_plugin.guard.handlers.locks import LockHandler, LocksHandler
from nbguard.hub_plugin.guard.handlers.sessions import (
    SessionsAPIHandler,
    SessionTerminateHandler,
)
from nbguard.hub_plugin.guard.identity import caller_from_model
from nbguard.hub_plugin.guard.server_orders import ended_in_words

#: A signed cookie that carries what an action did to running servers (stopped,
#: interrupted, unreachable) to the page the form returns to, once, for a minute:
#: the words are the service's own, never taken from the URL.
OUTCOME_COOKIE = "nbguard-outcome"
OUTCOME_SECONDS = 60
#: Form fields that are checkboxes (present: true).
CHECKBOXES = frozenset({"stop_servers", "interrupt_kernels", "revoke_grants"})
#: Optional form fields that an empty input leaves out (others are sent as typed).
OMIT_IF_EMPTY = frozenset({"until"})
#: What the page says after an action went through, by the action's ``done`` key.
DONE = {
    "ask": "Your request is waiting for approval.",
    "decision": "Your decision is recorded.",
    "revoke": "The grant is revoked.",
    "review": "Your review is recorded.",
    "lock": "The lock is in force.",
    "unlock": "The lock is lifted.",
    "terminate": "The session is stopping.",
}
#: The pages, in the order of the navigation tabs: (path, title, admins only).
TABS = (
    ("requests", "Requests", False),
    ("grants", "Grants", False),
    ("locks", "Locks", True),
    ("sessions", "Sessions", True),
    # Recorded sessions: the policy decides who may look (session.review), and the
    # page says what would allow it to anyone else.
    ("review", "Review", False),
)


class _User:
    """The signed-in user as JupyterHub's ``page.html`` expects it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.json_escaped_name = json.dumps(name)[1:-1]


class PageAuth(GuardHandler):
    """Browser authentication: the service's OAuth cookie, the hub's XSRF check on forms.

    Listed first among a page handler's bases, so that its ``prepare``,
    ``check_xsrf_cookie`` and ``write_error`` win over an API handler's.
    """

    async def prepare(self) -> None:
        """Identify the user from the cookie; send a browser without one to sign in."""
        model = await self.hub_auth.get_user(self, sync=False)
        if not model:
            if self.request.method in ("GET", "HEAD"):
                self.redirect(self.get_login_url())
                return
            raise GuardError(401, "unauthenticated", "Sign in again, then retry.")
        if not self.hub_auth.check_scopes(self.hub_auth.access_scopes, model):
            raise GuardError(403, "forbidden", "You may not use the nbguard service.")
        token = self.hub_auth.get_token(self, in_cookie=True) or ""
        self.current_user = model
        self.caller = caller_from_model(model, token)
        if not self.caller.is_user:
            raise GuardError(403, "forbidden", "Only hub users sign in to these pages.")

    def check_xsrf_cookie(self) -> None:
        """JupyterHub's XSRF check: every form carries the hub's ``_xsrf`` token."""
        self.hub_auth.check_xsrf_cookie(self)

    def page_url(self, path: str = "", **query: str) -> str:
        """The URL of a page of the service (``requests``), with ``query``."""
        url = self.guard.service_prefix + path
        return f"{url}?{urlencode(query)}" if query else url

    def render_page(self, template: str, status: int = 200, **values: Any) -> None:
        """Render ``template`` inside JupyterHub's page frame."""
        hub_prefix = f"{self.guard.hub_base_url}hub/"
        caller = getattr(self, "caller", None)
        namespace = {
            "static_url": lambda path, include_version=True: f"{hub_prefix}static/{path}",
            "base_url": hub_prefix,
            "prefix": self.guard.hub_base_url,
            "logout_url": f"{hub_prefix}logout",
            "login_url": f"{hub_prefix}login",
            "user": _User(caller.name) if caller else None,
            "no_spawner_check": True,
            "parsed_scopes": set(),
            "services": [],
            "xsrf_token": self.xsrf_token.decode("ascii"),
            "xsrf_form_html": self.xsrf_form_html,
            "page_url": self.page_url,
            "current_page": self.request.path,
            "tabs": [
                (self.page_url(path), title)
                for path, title, admin in TABS
                if not admin or values.get("is_admin")
            ],
            **values,
        }
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        environment = self.settings["nbguard_templates"]
        self.finish(environment.get_template(template).render(namespace))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Errors as a page: what went wrong, and the step-up link when fresh MFA helps."""
        error = self.error_value(status_code, **kwargs)
        step_up = error.get("step_up_url")
        if step_up:
            back = self.get_argument("next", "") or self.request.path
            step_up = f"{step_up}?{urlencode({'next': self.safe_next(back)})}"
        self.render_page(
            "guard_error.html", status=status_code, error=error, step_up=step_up, is_admin=False
        )

    def notice(self) -> str:
        """The words for ``?done=`` after an action (only the fixed ones), and what the
        action did to running servers if it said so (see :data:`OUTCOME_COOKIE`)."""
        done = DONE.get(self.get_query_argument("done", ""), "")
        if self.get_cookie(OUTCOME_COOKIE) is None:
            return done
        path = self.guard.service_prefix
        outcome = self.get_signed_cookie(OUTCOME_COOKIE, max_age_days=OUTCOME_SECONDS / 86400)
        self.clear_cookie(OUTCOME_COOKIE, path=path)
        if not done or outcome is None:
            return done
        return f"{done} {outcome.decode('utf-8', 'replace')}"

    def safe_next(self, value: str) -> str:
        """``value`` if it is a page of this service, else the first page."""
        prefix = self.guard.service_prefix
        if value.startswith(prefix) and "//" not in value and "\\" not in value:
            return value
        return self.page_url("requests")


class PageAction(PageAuth):
    """A form that an API handler carries out: the form is its body, a redirect its answer.

    Combine it, first, with the API handler: ``class X(PageAction, GrantRevokeHandler)``.
    """

    #: Key of the words shown after success (see ``DONE``).
    done: ClassVar[str] = ""

    def json_body(self) -> dict[str, Any]:
        """The submitted form as the API body: checkboxes true, empty optional fields out."""
        body: dict[str, Any] = {}
        for name, values in self.request.body_arguments.items():
            if name in ("_xsrf", "next"):
                continue
            value = values[-1].decode("utf-8", "replace").strip()
            if name in CHECKBOXES:
                body[name] = True
            elif value or name not in OMIT_IF_EMPTY:
                body[name] = value
        return body

    def get(self, *args: str) -> None:
        """Actions are forms: nothing to GET."""
        raise GuardError(405, "method_not_allowed", "Use the form on the page.")

    def write_json(self, value: Any, status: int = 200) -> None:
        """Back to the page the form was on, saying it is done (and what it did to
        running servers, if anything)."""
        # The options the form ticked, from its fields (not the body parsed again).
        ticked = {name: True for name in CHECKBOXES if name in self.request.body_arguments}
        outcome = ended_in_words(value, ticked) if isinstance(value, dict) else ""
        if outcome:
            self.set_signed_cookie(
                OUTCOME_COOKIE,
                outcome[:1024],
                expires_days=None,
                path=self.guard.service_prefix,
                httponly=True,
                samesite="Strict",
                secure=self.request.protocol == "https",
            )
        back = self.safe_next(self.get_body_argument("next", ""))
        separator = "&" if "?" in back else "?"
        self.redirect(f"{back}{separator}{urlencode({'done': self.done})}", status=303)


class PageView(PageAuth, ElevationAPIHandler):
    """A page (GET) with the elevation helpers: who the caller is, what they may approve."""


class RootPage(PageAuth):
    """The service's root: the requests page."""

    def get(self) -> None:
        """Redirect to ``requests``."""
        self.redirect(self.page_url("requests"))


#: What the ask form offers: grantable actions, and durations in minutes.
ASK_ACTIONS = (
    "dataset.read",
    "dataset.write",
    "dataset.export",
    "model.read",
    "model.register",
    "model.export",
    "model.promote",
    "model.delete",
)
ASK_MINUTES = (30, 60, 120, 240, 480)


class RequestsPage(PageView):
    """Requests waiting for the caller's approval, the caller's own, and the ask form."""

    async def get(self) -> None:
        """Render the requests page."""
        who = await self.who()
        store = self.guard.elevations
        pending = await in_store(store.list_requests, status=PENDING)
        approvable = [r for r in pending if self.may_approve(who, r)]
        mine = await in_store(store.list_requests, requester=who.name)
        self.render_page(
            "guard_requests.html",
            title="Elevation requests",
            approvable=approvable,
            mine=mine,
            asked_for=asked_for,
            when=rfc3339,
            is_admin=self.is_admin(who),
            notice=self.notice(),
            ask_actions=ASK_ACTIONS,
            ask_minutes=ASK_MINUTES,
            prefill={
                name: self.get_query_argument(name, "")[:256]
                for name in ("action", "resource", "role")
            },
        )


class GrantsPage(PageView):
    """Active grants (the caller's; everyone's for admins) and grants awaiting review."""

    async def get(self) -> None:
        """Render the grants page."""
        who = await self.who()
        admin = self.is_admin(who)
        store = self.guard.elevations
        grants = await in_store(store.list_grants, user=None if admin else who.name)
        waiting = await in_store(
            store.list_grants, active_only=False, review_status=REVIEW_REQUIRED
        )
        reviews = []
        for grant in waiting:
            if not same_person(grant.user, who.name):
                request = await in_store(store.get_request, grant.request_id)
                if self.may_approve(who, request):
                    reviews.append(grant)
        self.render_page(
            "guard_grants.html",
            title="Grants",
            grants=grants,
            reviews=reviews,
            asked_for=asked_for,
            when=rfc3339,
            is_admin=admin,
            notice=self.notice(),
        )


class LocksPage(PageView):
    """Locks in force and the lock form. Admins only (a recorded decision)."""

    async def get(self) -> None:
        """Render the locks page."""
        await self.require_admin(await self.caller_context())
        locks = await in_store(self.guard.elevations.list_locks)
        self.render_page(
            "guard_locks.html",
            title="Locks",
            locks=locks,
            when=rfc3339,
            is_admin=True,
            notice=self.notice(),
        )


class SessionsPage(PageAuth, SessionsAPIHandler):
    """Running servers, privileged first, with terminate forms, and the latest witness
    alerts. Admins only."""

    #: Witness alerts the page lists (the API gives more).
    ALERTS = 50

    async def get(self) -> None:
        """Render the sessions page."""
        await self.require_admin(await self.caller_context())
        alerts = await in_execution_store(self.guard.executions.recent_alerts, limit=self.ALERTS)
        self.render_page(
            "guard_sessions.html",
            title="Live sessions",
            sessions=await self.sessions(),
            alerts=[alert.to_dict() for alert in alerts],
            asked_for=asked_for,
            is_admin=True,
            notice=self.notice(),
        )


class AskAction(PageAction, RequestsHandler):
    """The ask form: a role or a grant, for some minutes, with a reason."""

    done = "ask"

    def json_body(self) -> dict[str, Any]:
        """The form as an ask: minutes as ``duration_seconds``; either a role or a grant."""
        form = super().json_body()
        minutes = form.pop("duration_minutes", "")
        if not minutes.isdigit():
            raise GuardError(400, "bad_request", "Choose how long you need it, in minutes.")
        body: dict[str, Any] = {"duration_seconds": int(minutes) * 60}
        if form.get("role"):
            body["role"] = form["role"]
        else:
            body.update(action=form.get("action", ""), resource=form.get("resource", ""))
        body["reason"] = form.get("reason", "")
        return body


class DecisionAction(PageAction, RequestDecisionHandler):
    """Approve or deny from the requests page."""

    done = "decision"


class RevokeAction(PageAction, GrantRevokeHandler):
    """Revoke from the grants page."""

    done = "revoke"


class ReviewAction(PageAction, GrantReviewHandler):
    """Review a break-glass grant from the grants page."""

    done = "review"


class LockAction(PageAction, LocksHandler):
    """Lock a user or device from the locks page."""

    done = "lock"


class UnlockAction(PageAction, LockHandler):
    """Lift a lock from the locks page."""

    done = "unlock"

    async def post(self, lock_id: str) -> None:
        """Forms cannot DELETE: POST lifts the lock."""
        await self.delete(lock_id)


class TerminateAction(PageAction, SessionTerminateHandler):
    """Terminate a session from the sessions page."""

    done = "terminate"


class GuardOAuthCallback(HubOAuthCallbackHandler):  # type: ignore[misc]
    """Where the hub sends the browser back after OAuth, with this service's ``HubOAuth``."""

    def initialize(self) -> None:
        """Use the service's own HubOAuth (not a process-wide singleton)."""
        self.hub_auth = self.settings["hub_auth"]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """A short plain answer (the hub's login is one click away); never a traceback."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = "Sign-in failed."
        if isinstance(exc, web.HTTPError) and exc.log_message and status_code < 500:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code}: {message}\n")


#: ``(path under the prefix, handler)`` of the pages and their forms.
PAGE_ROUTES: list[tuple[str, Any]] = [
    ("", RootPage),
    ("oauth_callback", GuardOAuthCallback),
    ("requests", RequestsPage),
    ("grants", GrantsPage),
    ("locks", LocksPage),
    ("sessions", SessionsPage),
    ("actions/requests", AskAction),
    ("actions/requests/{id}/decision", DecisionAction),
    ("actions/grants/{id}/revoke", RevokeAction),
    ("actions/grants/{id}/review", ReviewAction),
    ("actions/locks", LockAction),
    ("actions/locks/{id}/lift", UnlockAction),
    ("actions/sessions/{user}/terminate", TerminateAction),
]
