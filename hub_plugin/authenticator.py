"""``MFAAuthenticatorMixin``: a second factor and context checks for any authenticator.

The wrapped authenticator's primary login (password, LDAP, OAuth, ...) runs
unchanged. Its result reaches :meth:`MFAAuthenticatorMixin.run_post_auth_hook`,
the last stage of every JupyterHub login path (the login form, OAuth callbacks,
and any handler the wrapped class registers, since they all call
``login_user``). There nbguard observes the context, asks the policy, and,
instead of returning the user (which would set the login cookie), holds the
result as a pending login and sends the browser to the second-factor page.
Only that page completes the login. As a second line, ``refresh_user`` sends any
cookie session without nbguard's auth state back to the login page.

Use it with :func:`guarded_authenticator`::

    c.JupyterHub.authenticator_class = guarded_authenticator("generic-oauth")
"""

from __future__ import annotations

import secrets
from typing import Any

from nbguard.errors import ConfigError
from nbguard.hub_plugin.auth_state import read_state, with_state
from nbguard.hub_plugin.hub_guard import NBGuard
from nbguard.hub_plugin.idp_mfa import idp_did_mfa
from nbguard.hub_plugin.login_policy import LoginPolicy
from nbguard.hub_plugin.plugin_classes import resolve_plugin_class
from nbguard.hub_plugin.recording import await_recorded, fail_closed


class MFAAuthenticatorMixin:
    """Adds nbguard's second factor, context and policy checks to an Authenticator class."""

    nbguard: NBGuard

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # MFA method and time must survive in encrypted auth state for freshness
        # checks: on by default here, and an explicit False is a configuration error.
        if not self.enable_auth_state:  # type: ignore[attr-defined]
            if self._nbguard_configured("enable_auth_state"):
                raise ConfigError(
                    "nbguard needs Authenticator.enable_auth_state = True (and "
                    "JUPYTERHUB_CRYPT_KEY set), so that MFA time and context are kept "
                    "encrypted for freshness checks"
                )
            self.enable_auth_state = True
        self.nbguard = NBGuard(parent=self)
        self.nbguard_login = LoginPolicy(self.nbguard)

    def _nbguard_configured(self, trait: str) -> bool:
        config = self.config  # type: ignore[attr-defined]
        return any(
            trait in config[cls.__name__] for cls in type(self).__mro__ if cls.__name__ in config
        )

    @property
    def nbguard_method(self) -> str:
        """The primary login method as recorded in the ledger (``dummy``, ``genericoauth``...)."""
        for cls in type(self).__mro__:
            if cls is not MFAAuthenticatorMixin and not cls.__name__.startswith("NBGuard"):
                name = cls.__name__.lower().removesuffix("authenticator")
                return name or "authenticator"
        return "authenticator"

    # -- JupyterHub stages --------------------------------------------------------------

    async def authenticate(self, handler: Any, data: Any = None) -> Any:
        """The wrapped primary login; a failure is recorded in the ledger."""
        result = await _maybe_await(super().authenticate(handler, data))  # type: ignore[misc]
        if result is None:
            username = data.get("username", "") if isinstance(data, dict) else ""
            await self.nbguard_login.record_primary(
                handler, str(username), self.nbguard_method, outcome="failure",
                reason="primary authentication failed",
            )  # fmt: skip
        return result

    @fail_closed
    async def run_post_auth_hook(self, handler: Any, authentication: dict[str, Any]) -> Any:
        """After the primary login and the admin's own hook: nbguard's gate.

        Returns the user model only when the identity provider's MFA is trusted
        and the policy allows the login; otherwise the browser is sent to the
        second-factor page (or shown why the login is refused) and the request
        ends here, with no login cookie.
        """
        model = await super().run_post_auth_hook(handler, authentication)  # type: ignore[misc]
        if not model:
            return model
        username = model["name"]
        login = self.nbguard_login
        observation, risk, enrolled = login.observe(handler, username)
        # The login session starts here, so that its login record is part of it.
        session_id = secrets.token_hex(16)
        # Queued now, durable before any answer that grants or refuses: awaited
        # below, or (for a login held for its second factor, which grants nothing
        # yet) before that login completes.
        primary = login.queue_primary(
            handler,
            username,
            self.nbguard_method,
            outcome="success",
            observation=observation,
            session=session_id,
        )
        if self.nbguard.trust_idp_mfa and idp_did_mfa(
            model.get("auth_state"),
            amr_values=self.nbguard.idp_mfa_amr,
            acr_values=self.nbguard.idp_mfa_acr,
            userinfo_key=getattr(self, "user_auth_state_key", "oauth_user"),
        ):
            decision = login.decide(username, observation, risk, mfa_method="idp")
            await await_recorded(self.nbguard, primary, "login")
            if not decision.allowed:
                await login.refuse(handler, username, decision, observation)
            await login.record_idp_mfa(username, session_id, observation.client_ip)
            login.remember(username, observation, risk)
            return login.logged_in_model(model, observation, risk, "idp", session_id)
        # Refuse early what no second factor could fix (wrong role, zone, device...).
        decision = login.decide(username, observation, risk, mfa_method="totp")
        if not decision.allowed:
            await await_recorded(self.nbguard, primary, "login")
            await login.refuse(handler, username, decision, observation)
        await login.hold(handler, model, observation, risk, session_id, primary, enrolled=enrolled)
        return None  # not reached: hold() ends the request

    @fail_closed
    async def refresh_user(self, user: Any, handler: Any = None) -> Any:
        """The wrapped refresh, and no session without nbguard's second-factor state."""
        result = await _maybe_await(super().refresh_user(user, handler))  # type: ignore[misc]
        if not result:
            return result
        current = await user.get_auth_state()
        state = read_state(current)
        if state is None:
            self.log.warning(  # type: ignore[attr-defined]
                "nbguard: %s has a session without a second factor; login required", user.name
            )
            return False
        if isinstance(result, dict) and "auth_state" in result:
            result = dict(result)
            result["auth_state"] = with_state(result["auth_state"], state)
        return result

    def get_handlers(self, app: Any) -> list[tuple[str, Any]]:
        """The wrapped class's handlers plus nbguard's second-factor pages and API."""
        from nbguard.hub_plugin.handlers import nbguard_handlers

        return [*super().get_handlers(app), *nbguard_handlers()]  # type: ignore[misc]


async def _maybe_await(value: Any) -> Any:
    if hasattr(value, "__await__"):
        return await value
    return value


def guarded_authenticator(base: type | str) -> type:
    """``base`` (a class or an entry-point name like ``"dummy"``) with nbguard's MFA."""
    from jupyterhub.auth import Authenticator

    cls = resolve_plugin_class(base, "jupyterhub.authenticators", Authenticator)
    if issubclass(cls, MFAAuthenticatorMixin):
        return cls
    return type(f"NBGuard{cls.__name__}", (MFAAuthenticatorMixin, cls), {"__module__": __name__})
