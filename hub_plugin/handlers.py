"""nbguard's hub pages (second factor, enrolment, step-up) and its admin API.

Registered by ``MFAAuthenticatorMixin.get_handlers`` under the hub's base URL:

- ``nbguard/mfa``: the code for a pending login (TOTP or a recovery code);
- ``nbguard/mfa/enrol``: QR code and confirmation for a user with no factor yet;
- ``nbguard/mfa/step-up``: a fresh second factor for a logged-in user;
- ``nbguard/api/users/NAME/mfa``: GET (enrolled?) and DELETE (reset), admins only.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn
from urllib.parse import urlencode

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.handlers.base import BaseHandler
from jupyterhub.scopes import needs_scope
from tornado import web

from nbguard.errors import MFAError
from nbguard.hub_plugin.auth_state import read_state, with_state
from nbguard.hub_plugin.hub_guard import NBGuard
from nbguard.hub_plugin.login_policy import LoginPolicy
from nbguard.hub_plugin.pages import finish_page
from nbguard.hub_plugin.pending import PendingLogin
from nbguard.hub_plugin.recording import fail_closed

#: What the user reads for each way a code can fail (never the code itself).
CODE_ERRORS = {
    "invalid": "That code is not right. Check that your device's clock is correct and try again.",
    "replayed": "That code was already used. Wait for the next code and try again.",
    "not_enrolled": "No second factor is set up for this account.",
}


def code_error(error: MFAError) -> tuple[int, str]:
    """HTTP status and message for a failed code."""
    if error.reason == "locked":
        return 429, f"Too many wrong codes. Try again in {error.retry_after} seconds."
    return 403, CODE_ERRORS.get(error.reason, CODE_ERRORS["invalid"])


def hub_guard(authenticator: Any) -> NBGuard:
    """The hub's NBGuard, held by the wrapped authenticator (500 if it is not wrapped)."""
    guard = getattr(authenticator, "nbguard", None)
    if not isinstance(guard, NBGuard):
        raise web.HTTPError(500, "nbguard is not configured on this hub's authenticator")
    return guard


class NBGuardPage(BaseHandler):  # type: ignore[misc]
    """Base of nbguard's pages: access to the hub's NBGuard and login policy."""

    @property
    def guard(self) -> NBGuard:
        return hub_guard(self.authenticator)

    @property
    def login(self) -> LoginPolicy:
        login: LoginPolicy = self.authenticator.nbguard_login
        return login

    def code(self) -> str:
        """The submitted code, bounded (it is attacker-controlled)."""
        return self.get_body_argument("code", "", strip=True)[:64]

    async def require_pending(self) -> PendingLogin:
        """This browser's pending login; otherwise the request ends with :meth:`expired`."""
        pending = self.login.pending_for(self)
        if pending is None:
            await self.expired()  # ends the request
        return pending

    async def expired(self) -> NoReturn:
        """The page for a missing, expired, used or foreign pending login."""
        await finish_page(
            self,
            "nbguard_denied.html",
            status=401,
            title="Please sign in again",
            reason="Your sign-in was not finished in time, or was started in another browser.",
            remedies=[],
            reference="",
            retry_url=self.settings["login_url"],
        )

    async def failed(
        self, pending: PendingLogin, error: MFAError, page: str, **values: Any
    ) -> None:
        """Re-show ``page`` with the error, or end the pending login after too many tries."""
        if error.reason != "locked":
            pending.failures += 1
        if pending.failures >= self.guard.pending_login_attempts:
            self.login.drop(self, pending)
            await finish_page(
                self,
                "nbguard_denied.html",
                status=403,
                title="Please sign in again",
                reason="Too many wrong codes for this sign-in.",
                remedies=[],
                reference="",
                retry_url=self.settings["login_url"],
            )
        status, message = code_error(error)
        if error.retry_after:
            self.set_header("Retry-After", str(error.retry_after))
        await finish_page(self, page, status=status, error=message, **values)


class MFAChallengeHandler(NBGuardPage):
    """The second factor of a pending login."""

    def _page(self, pending: PendingLogin) -> dict[str, Any]:
        return {
            "title": "Second factor",
            "intro": f"Signing in as {pending.username}. Enter the code from your "
            "authenticator app.",
            "allow_recovery": True,
            "form_action": self.request.path,
            "cancel_url": self.settings["login_url"],
        }

    @fail_closed
    async def get(self) -> None:
        pending = await self.require_pending()
        if not self.guard.store.is_enrolled(pending.username):
            self.redirect(self.hub.base_url + "nbguard/mfa/enrol")
            return
        await finish_page(self, "nbguard_mfa.html", **self._page(pending))

    @fail_closed
    async def post(self) -> None:
        pending = await self.require_pending()
        try:
            method = await self.login.factor.verify(
                pending.username,
                self.code(),
                client_ip=pending.observation.client_ip,
                session=pending.session_id,
                event="verify",
            )
        except MFAError as error:
            if error.reason == "not_enrolled":
                self.redirect(self.hub.base_url + "nbguard/mfa/enrol")
                return
            await self.failed(pending, error, "nbguard_mfa.html", **self._page(pending))
            return
        user = await self.login.complete(self, pending, method)
        self.redirect(self.login.next_url(self, pending, user))


class EnrolHandler(NBGuardPage):
    """TOTP enrolment during a pending login: QR code, then a confirmation code."""

    def _page(self, pending: PendingLogin) -> dict[str, Any]:
        offer = self.login.factor.offer(pending.username, pending.enrol_secret)
        pending.enrol_secret = offer.secret
        return {"secret": offer.secret, "qr_svg": offer.qr_svg, "form_action": self.request.path}

    @fail_closed
    async def get(self) -> None:
        pending = await self.require_pending()
        if self.guard.store.is_enrolled(pending.username):
            # Enrolment never replaces a factor: an admin resets it first.
            self.redirect(self.hub.base_url + "nbguard/mfa")
            return
        await finish_page(self, "nbguard_enrol.html", **self._page(pending))

    @fail_closed
    async def post(self) -> None:
        pending = await self.require_pending()
        if pending.enrol_secret is None or self.guard.store.is_enrolled(pending.username):
            self.redirect(self.hub.base_url + "nbguard/mfa")
            return
        try:
            codes = await self.login.factor.confirm(
                pending.username,
                pending.enrol_secret,
                self.code(),
                client_ip=pending.observation.client_ip,
                session=pending.session_id,
            )
        except MFAError as error:
            await self.failed(pending, error, "nbguard_enrol.html", **self._page(pending))
            return
        user = await self.login.complete(self, pending, "totp")
        await finish_page(
            self,
            "nbguard_recovery_codes.html",
            codes=codes,
            next_url=self.login.next_url(self, pending, user),
        )


class StepUpHandler(NBGuardPage):
    """A fresh second factor for a logged-in user, without a full login."""

    def _page(self, error: str = "") -> dict[str, Any]:
        query = urlencode({"next": self.get_argument("next", "")})
        return {
            "title": "Confirm it is you",
            "intro": "This needs a recent second factor. Enter the code from your "
            "authenticator app (or a recovery code).",
            "allow_recovery": True,
            "form_action": f"{self.request.path}?{query}",
            "cancel_url": "",
            "error": error,
        }

    @web.authenticated  # type: ignore[misc]
    @fail_closed
    async def get(self) -> None:
        await finish_page(self, "nbguard_mfa.html", **self._page())

    @web.authenticated  # type: ignore[misc]
    @fail_closed
    async def post(self) -> None:
        user = self.current_user
        auth_state = await user.get_auth_state()
        state = read_state(auth_state)
        if state is None:
            # A session without nbguard's state: only a full login can fix it.
            self.clear_login_cookie()
            self.redirect(self.settings["login_url"])
            return
        client_ip = self.guard.context.observe(self.request, user.name).client_ip
        try:
            method = await self.login.factor.verify(
                user.name, self.code(), client_ip=client_ip, session=state.session_id,
                event="step-up",
            )  # fmt: skip
        except MFAError as error:
            status, message = code_error(error)
            if error.retry_after:
                self.set_header("Retry-After", str(error.retry_after))
            await finish_page(self, "nbguard_mfa.html", status=status, **self._page(message))
            return
        await user.save_auth_state(with_state(auth_state, state.stepped_up(method)))
        self.redirect(self.get_next_url(user))


class MFAAdminAPIHandler(APIHandler):  # type: ignore[misc]
    """Admin API: is a user's second factor enrolled; reset it (recorded in the ledger)."""

    @property
    def guard(self) -> NBGuard:
        return hub_guard(self.authenticator)

    @needs_scope("admin:users")  # type: ignore[misc]
    @fail_closed
    async def get(self, user_name: str) -> None:
        if self.find_user(user_name) is None:
            raise web.HTTPError(404, f"no such user {user_name!r}")
        enrolled = self.guard.store.is_enrolled(user_name)
        self.write(json.dumps({"name": user_name, "enrolled": enrolled}))

    @needs_scope("admin:users")  # type: ignore[misc]
    @fail_closed
    async def delete(self, user_name: str) -> None:
        if self.find_user(user_name) is None:
            raise web.HTTPError(404, f"no such user {user_name!r}")
        admin = self.current_user.name
        removed = self.guard.store.reset(user_name)
        await self.authenticator.nbguard_login.factor.record(
            "reset", "success" if removed else "failure", "totp", user_name, None,
            reset_by=admin, reason=None if removed else "no factor was enrolled",
        )  # fmt: skip
        if not removed:
            raise web.HTTPError(404, f"{user_name} has no second factor to reset")
        self.log.warning("nbguard: %s reset the second factor of %s", admin, user_name)
        self.set_status(204)


def nbguard_handlers() -> list[tuple[str, Any]]:
    """Routes to add to the hub (relative to its base URL)."""
    return [
        (r"/nbguard/mfa", MFAChallengeHandler),
        (r"/nbguard/mfa/enrol", EnrolHandler),
        (r"/nbguard/mfa/step-up", StepUpHandler),
        (r"/nbguard/api/users/([^/]+)/mfa", MFAAdminAPIHandler),
    ]
