"""Refused spawns: a clean message for the user, the details for the log.

JupyterHub 6 shows a failed spawn in three places: the spawn page's error
(``write_error``), the progress event stream of the spawn-pending page, and the
"not running" page after a failure. The event stream falls back to
``str(exception)``, which for a ``SpawnException`` includes its log message, so
every refusal sets ``jupyterhub_message`` and ``jupyterhub_html_message``: only
those reach the browser, and the log keeps the rest.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from jupyterhub.spawner import SpawnException

if TYPE_CHECKING:
    from nbguard.policy import Decision

#: Prefix of every refusal, so the user sees at once that the hub decided.
REFUSED = "Your server was not started"


class SpawnRefused(SpawnException):
    """A spawn nbguard refused; only ``jupyterhub_message`` reaches the user.

    ``reason`` is a short stable label (``policy``, ``profile``,
    ``misconfigured``, ``ledger``) for JupyterHub's metrics and the log.
    """

    def __init__(
        self, message: str, *, reason: str, log_message: str, message_html: str = ""
    ) -> None:
        message_html = message_html or html.escape(message)
        super().__init__(
            message,
            reason=f"nbguard-{reason}",
            log_message=f"nbguard: {log_message}",
            message_html=message_html,
            status_code=403,
        )
        self.jupyterhub_message = message
        self.jupyterhub_html_message = message_html


def denied(decision: Decision, profile: str, step_up: str) -> SpawnRefused:
    """The refusal of a spawn the policy denied, saying what would allow it.

    ``step_up`` is the URL of the step-up page, linked when fresh MFA would help.
    """
    reference = f"Reference: {decision.correlation_id}."
    options = [remedy.describe() for remedy in decision.remedies]
    if decision.errors:
        why = "the access policy could not be evaluated for this request."
        help_text = "Please contact your hub administrator."
    elif options:
        why = f"the {profile} profile needs " + "; or ".join(options) + "."
        help_text = ""
    else:
        why = f"your account may not use the {profile} profile."
        help_text = "Ask your hub administrator if you need it."
    needs_fresh_mfa = any(
        req.kind == "fresh_mfa" for remedy in decision.remedies for req in remedy.requirements
    )
    # The spawn form shows the plain message (JupyterHub prefers it to the HTML
    # one there), so the step-up address is in the text too.
    step = f"Verify your second factor again at {step_up}, then start your server again."
    parts = (f"{REFUSED}: {why}", help_text, step if needs_fresh_mfa else "", reference)
    text = " ".join(part for part in parts if part)
    page = html.escape(" ".join(part for part in (f"{REFUSED}: {why}", help_text) if part))
    if needs_fresh_mfa:
        link = f'<a href="{html.escape(step_up, quote=True)}">Verify your second factor again</a>'
        page += f" {link}, then start your server again."
    page += f" {html.escape(reference)}"
    return SpawnRefused(text, reason="policy", log_message=decision.explain(), message_html=page)


def bad_profile(message: str, log_message: str) -> SpawnRefused:
    """The refusal of a profile that is missing, malformed or unknown."""
    return SpawnRefused(f"{REFUSED}: {message}", reason="profile", log_message=log_message)


def locked(reason: str) -> SpawnRefused:
    """The refusal for a user or device an administrator locked."""
    return SpawnRefused(
        f"{REFUSED}: your access is locked by an administrator ({reason}). "
        "Ask your hub administrator to lift the lock.",
        reason="locked",
        log_message=f"locked: {reason}",
    )


def misconfigured(log_message: str) -> SpawnRefused:
    """The refusal when nbguard cannot decide at all (fail closed)."""
    return _unavailable(
        "access control for servers is not available right now", "misconfigured", log_message
    )


def unrecorded(log_message: str) -> SpawnRefused:
    """The refusal when the decision could not be written to the ledger."""
    return _unavailable("the audit record could not be written", "ledger", log_message)


def _unavailable(what: str, reason: str, log_message: str) -> SpawnRefused:
    return SpawnRefused(
        f"{REFUSED}: {what}. Please try again in a minute, and contact your hub "
        "administrator if this persists.",
        reason=reason,
        log_message=log_message,
    )
