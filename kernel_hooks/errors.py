"""What the guard client raises in a notebook, each also a familiar built-in error.

Notebook code catches ``PermissionError``, ``ConnectionError``, ``FileNotFoundError``
and ``ValueError``; pandas and fsspec expect them. So every client error is both an
:class:`~nbguard.errors.NBGuardError` (one root for nbguard's own errors) and the
built-in a caller would expect. ``str(error)`` is written for the person at the
notebook: what happened and what to do, never a traceback of the HTTP library.
"""

from __future__ import annotations

from typing import Any

from nbguard.errors import NBGuardError


class GuardClientError(NBGuardError):
    """Root of the errors of the kernel's guard client."""

    default_user_message = "The nbguard guard service could not complete the request."

    def __init__(self, message: str) -> None:
        # The message is written for the notebook user; logs get the same words.
        super().__init__(message, user_message=message)


class GuardPermissionError(GuardClientError, PermissionError):
    """The guard refused the access: a policy denial, a lock, or a token it does not accept.

    ``decision`` is the guard's decision in its JSON form (deciding policies,
    ``correlation_id``, ``remedies``) when the refusal was a policy decision;
    ``step_up_url`` is where a fresh second factor can be given, when that would help.
    """

    def __init__(
        self,
        message: str,
        *,
        decision: dict[str, Any] | None = None,
        step_up_url: str | None = None,
        status: int = 403,
    ) -> None:
        super().__init__(message)
        self.decision = decision or {}
        self.step_up_url = step_up_url
        self.status = status

    @property
    def correlation_id(self) -> str | None:
        """The decision's correlation id (quote it to an admin), if there was a decision."""
        value = self.decision.get("correlation_id")
        return value if isinstance(value, str) else None


class GuardUnavailable(GuardClientError, ConnectionError):
    """The guard service cannot be reached or answered that it cannot decide now.

    Governed access fails closed: nothing is read or written until it answers.
    """


class GuardNotConfigured(GuardUnavailable):
    """This process was not started by an nbguard hub (no guard URL or token)."""


class GuardRequestError(GuardClientError, ValueError):
    """The guard refused the request itself (a bad path, a body too large, a bad range)."""


class GuardTransferError(GuardClientError, OSError):
    """A transfer broke off, or the file changed while it was being read."""
