"""The login side of nbguard: observe, decide, hold for a second factor, complete.

The authenticator mixin and the second-factor pages share this one object,
so that the pending-login cookie, the policy question and the ledger records
are made in one place.
"""

from __future__ import annotations

import time
from copy import deepcopy
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn
from urllib.parse import urlencode

from tornado.web import Finish

from nbguard.hub_plugin.auth_state import MFAState, with_state
from nbguard.hub_plugin.pages import finish_page
from nbguard.hub_plugin.pending import PendingLogin
from nbguard.hub_plugin.recording import await_recorded, queue_record
from nbguard.hub_plugin.request_context import Observation, risk_level
from nbguard.hub_plugin.second_factor import SecondFactor
from nbguard.policy import Decision, EntityRef

if TYPE_CHECKING:
    from nbguard.hub_plugin.hub_guard import NBGuard
    from nbguard.ledger.writer import PendingReceipt

#: Cookie that binds a pending login to the browser (signed by the hub's cookie secret).
PENDING_COOKIE = "nbguard-pending"
HUB = EntityRef.parse("hub:hub")
DEVICE, NETWORK = "device", "network"


class Observed(NamedTuple):
    """What :meth:`LoginPolicy.observe` learns about a primary login."""

    observation: Observation
    #: The login's risk level (a new device and/or network raises it).
    risk: str
    #: True when the user already has a second factor (else enrolment comes next).
    enrolled: bool


def plain_reason(decision: Decision) -> tuple[str, list[str]]:
    """A sentence for the user and the list of things that would allow the request."""
    if any(error.startswith("unknown entity user:") for error in decision.errors):
        reason = (
            "Your account is not known to this hub's access policy. Ask an administrator to add it."
        )
    elif decision.errors:
        reason = "nbguard could not evaluate its policy for this request, so it is refused."
    elif decision.policy_ids:
        reason = "A rule of this hub forbids this here and now."
    else:
        reason = "No rule of this hub allows your account to do this."
    return reason, [remedy.describe() for remedy in decision.remedies]


class LoginPolicy:
    """Login decisions and records for one hub."""

    def __init__(self, guard: NBGuard) -> None:
        self.guard = guard
        self.factor = SecondFactor(guard)

    # -- observing and deciding -------------------------------------------------------

    def observe(self, handler: Any, username: str) -> Observed:
        """The request's observation, its risk (new device and/or network) and enrolment.

        One read of the MFA store answers both questions of a primary login: is
        this device or network new, and which page (code or enrolment) comes next.
        """
        observation = self.guard.context.observe(handler.request, username)
        facts = self.guard.store.login_facts(username, self._sightings(observation))
        seen = facts.seen
        risk = risk_level(new_device=DEVICE not in seen, new_network=NETWORK not in seen)
        return Observed(observation, risk, facts.enrolled)

    @staticmethod
    def _sightings(observation: Observation) -> dict[str, str]:
        return {
            DEVICE: observation.device_fingerprint,
            NETWORK: observation.network_fingerprint,
        }

    def decide(
        self, username: str, observation: Observation, risk: str, *, mfa_method: str
    ) -> Decision:
        """``hub.login`` for ``username`` as if the second factor were just satisfied."""
        context = observation.context(mfa_method=mfa_method, mfa_age=0, risk=risk)
        return self.guard.engine.decide(EntityRef.of("User", username), "hub.login", HUB, context)

    def remember(self, username: str, observation: Observation, risk: str) -> None:
        """Note this device and network as seen, after a completed login.

        ``risk`` is the one :meth:`observe` gave: the risk of a device and network
        both seen before means there is nothing to write (a sighting is never removed).
        """
        if risk == risk_level(new_device=False, new_network=False):
            return
        for kind, fingerprint in self._sightings(observation).items():
            self.guard.store.remember(username, kind, fingerprint)

    # -- outcomes ---------------------------------------------------------------------------

    async def refuse(
        self, handler: Any, username: str, decision: Decision, observation: Observation
    ) -> NoReturn:
        """Record a refused login and show the user why, in words; ends the request."""
        reason, remedies = plain_reason(decision)
        await self.record_primary(
            handler, username, "policy", outcome="failure",
            reason=f"policy: {', '.join(decision.policy_ids) or 'no permit'} "
            f"[{decision.correlation_id}]", observation=observation,
        )  # fmt: skip
        handler.log.warning("nbguard refused login of %s: %s", username, decision.explain())
        await finish_page(
            handler,
            "nbguard_denied.html",
            status=403,
            title="Sign-in refused",
            reason=reason,
            remedies=remedies,
            reference=decision.correlation_id,
            retry_url=handler.settings["login_url"],
        )

    async def hold(
        self,
        handler: Any,
        model: dict[str, Any],
        observation: Observation,
        risk: str,
        session_id: str = "",
        primary_record: PendingReceipt | None = None,
        *,
        enrolled: bool | None = None,
    ) -> NoReturn:
        """Keep the primary login pending and send the browser to the second factor.

        ``primary_record`` is the queued ``login`` record of the primary login:
        :meth:`complete` awaits its durability before the login cookie is set.
        ``enrolled`` (from :meth:`observe`) picks the code page or the enrolment
        page; None reads it from the store. Either page checks again on arrival.
        """
        try:
            next_url = handler.get_next_url()
        except Exception:  # a handler's own next-url logic must not break the gate
            next_url = ""
        pending = self.guard.pending.create(
            username=model["name"],
            auth_model=deepcopy(model),
            observation=observation,
            risk=risk,
            next_url=next_url,
            session_id=session_id,
            primary_record=primary_record,
        )
        handler._set_cookie(
            PENDING_COOKIE,
            pending.token,
            encrypted=True,
            path=handler.hub.base_url,
            samesite="Lax",
            expires_days=None,
        )
        if enrolled is None:
            enrolled = self.guard.store.is_enrolled(pending.username)
        page = "nbguard/mfa" if enrolled else "nbguard/mfa/enrol"
        handler.redirect(handler.hub.base_url + page)
        raise Finish()

    def pending_for(self, handler: Any) -> PendingLogin | None:
        """The pending login of this browser, if live and made from this browser."""
        raw = handler.get_secure_cookie(
            PENDING_COOKIE, max_age_days=self.guard.pending_login_ttl / 86400 + 1
        )
        token = raw.decode("ascii", "replace") if raw else None
        pending = self.guard.pending.get(token)
        if pending is None:
            return None
        observation = self.guard.context.observe(handler.request, pending.username)
        if not pending.binds(observation):
            handler.log.warning(
                "nbguard: pending login of %s presented from another browser or address",
                pending.username,
            )
            self.guard.pending.discard(pending.token)
            return None
        return pending

    def drop(self, handler: Any, pending: PendingLogin) -> None:
        """Forget a pending login and its cookie."""
        self.guard.pending.discard(pending.token)
        handler.clear_cookie(PENDING_COOKIE, path=handler.hub.base_url)

    async def complete(self, handler: Any, pending: PendingLogin, method: str) -> Any:
        """Finish a login whose second factor was just verified; return the hub User.

        The policy is asked again with the satisfied factor; a refusal ends the
        request with the reason. Otherwise the user's auth state gets nbguard's
        section and the hub's login cookie is set, here and nowhere else.
        """
        self.drop(handler, pending)
        if pending.primary_record is not None:
            # The primary login's record, queued a request ago, is durable before
            # anything of the login is kept (auth state) or granted (cookie).
            await await_recorded(self.guard, pending.primary_record, "login")
        observation = pending.observation
        decision = self.decide(pending.username, observation, pending.risk, mfa_method=method)
        if not decision.allowed:
            await self.refuse(handler, pending.username, decision, observation)
        model = self.logged_in_model(
            pending.auth_model, observation, pending.risk, method, pending.session_id
        )
        user = await handler.auth_to_user(model)
        handler.set_login_cookie(user)
        user._auth_refreshed = time.monotonic()
        handler._jupyterhub_user = user
        self.remember(pending.username, observation, pending.risk)
        handler.log.info("nbguard: %s logged in with %s", user.name, method)
        return user

    @staticmethod
    def logged_in_model(
        model: dict[str, Any], observation: Observation, risk: str, method: str, session_id: str
    ) -> dict[str, Any]:
        """A copy of the auth model whose auth state records this login's second factor."""
        now = time.time()
        state = MFAState(
            session_id=session_id,
            mfa_method=method,
            mfa_time=now,
            login_time=now,
            client_ip=observation.client_ip,
            network_zone=observation.zone,
            device_trusted=observation.device_trusted,
            device_id=observation.device_id,
            risk=risk,
        )
        updated = deepcopy(model)
        updated["auth_state"] = with_state(model.get("auth_state"), state)
        return updated

    def next_url(self, handler: Any, pending: PendingLogin, user: Any) -> str:
        """Where to go after the login: the URL asked for before it, else the hub default."""
        return pending.next_url or handler.get_next_url(user)

    # -- records -------------------------------------------------------------------------------

    def queue_primary(
        self,
        handler: Any,
        username: str,
        method: str,
        *,
        outcome: str,
        reason: str | None = None,
        observation: Observation | None = None,
        session: str | None = None,
    ) -> PendingReceipt:
        """Queue a ``login`` record for a primary login attempt; return its receipt.

        Await the receipt (``recording.await_recorded``) before the answer the
        record must precede. Pass the request's ``observation`` when it was
        already made, so that the device assertion is not verified twice in one
        request; a successful one names the login ``session`` it starts
        (reviewers find it there).
        """
        if observation is None:
            observation = self.guard.context.observe(handler.request, username or "unknown")
        body: dict[str, Any] = {
            "outcome": outcome,
            "method": method,
            "username": username[:256],
            "client_ip": observation.client_ip,
            "user_agent": observation.user_agent,
        }
        if reason:
            body["reason"] = reason[:512]
        return queue_record(
            self.guard, "login", body, actor=username[:256] or "unknown", session=session
        )

    async def record_primary(self, handler: Any, username: str, method: str, **kw: Any) -> None:
        """:meth:`queue_primary`, durable before this returns (HTTP 503 if it was not stored)."""
        receipt = self.queue_primary(handler, username, method, **kw)
        await await_recorded(self.guard, receipt, "login")

    async def record_idp_mfa(self, username: str, session_id: str, client_ip: str) -> None:
        """Append the ``mfa`` record of a second factor satisfied by the IdP."""
        await self.factor.record(
            "verify", "success", "idp", username, session_id, client_ip=client_ip
        )


def step_up_url(hub_base_url: str, next_url: str) -> str:
    """The step-up page that returns to ``next_url`` once the factor is fresh again."""
    return f"{hub_base_url}nbguard/mfa/step-up?{urlencode({'next': next_url})}"
