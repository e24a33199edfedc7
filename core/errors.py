"""The exception hierarchy: one root, specific subclasses.

Every error carries two messages: ``str(error)`` is for logs and may name files,
ids and internals; ``error.user_message`` is what an end user may be shown. Edges
(HTTP handlers, the CLI) translate errors; nothing below them formats responses.
"""

from __future__ import annotations


class NBGuardError(Exception):
    """Root of every error nbguard raises on purpose."""

    #: Shown to users when no specific ``user_message`` is given.
    default_user_message = "The request could not be completed."

    def __init__(self, message: str, *, user_message: str | None = None) -> None:
        super().__init__(message)
        self.user_message = user_message or self.default_user_message


class ConfigError(NBGuardError):
    """A setting, key file or configuration file is missing or invalid."""

    default_user_message = "nbguard is misconfigured; ask your hub admin."


class PolicyError(NBGuardError):
    """Root of policy and schema problems."""

    default_user_message = "The access policy could not be evaluated."


class PolicyLoadError(PolicyError):
    """A schema, policy or entity file failed to parse or validate.

    ``problems`` lists every problem found, each naming its file and line where
    known, so that an admin can fix them all in one pass.
    """

    def __init__(self, problems: list[SourceProblem]) -> None:
        self.problems = list(problems)
        summary = "; ".join(str(p) for p in self.problems[:5])
        more = len(self.problems) - 5
        if more > 0:
            summary += f"; and {more} more"
        super().__init__(summary)


class SourceProblem:
    """One problem in an admin-written file: where it is and what is wrong."""

    __slots__ = ("line", "message", "path")

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path = path
        self.line = line
        self.message = message

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}"

    def __repr__(self) -> str:
        return f"SourceProblem({self.path!r}, {self.line!r}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SourceProblem):
            return NotImplemented
        return (self.path, self.line, self.message) == (other.path, other.line, other.message)

    def __hash__(self) -> int:
        return hash((self.path, self.line, self.message))


class EntityError(PolicyError):
    """An entity (user, role, dataset, model) is malformed or conflicts with the schema."""


class RequestError(NBGuardError):
    """A request is malformed: unknown entity type, bad id, context of the wrong shape."""

    default_user_message = "The request was malformed."


class NotFoundError(RequestError):
    """A named thing (request, grant, lock, dataset, file) does not exist, or the caller
    may not know that it does."""

    default_user_message = "Not found."


class ConflictError(NBGuardError):
    """The request conflicts with the current state: a request already decided or
    expired, a second approval by the same person, a grant already revoked."""

    default_user_message = "The request conflicts with the current state."


class AccessDenied(NBGuardError):
    """A policy decision denied the request.

    ``details`` is the decision in its JSON form (deciding policies, correlation
    id, and what would allow the request); ``user_message`` says it in words.
    """

    default_user_message = "Access denied."

    def __init__(
        self, message: str, *, user_message: str | None = None, details: dict[str, object]
    ) -> None:
        super().__init__(message, user_message=user_message)
        self.details = details


class DeviceAssertionError(NBGuardError):
    """A device assertion was refused; the device is treated as untrusted.

    ``reason`` is a stable code for logs and the ledger: ``malformed``,
    ``algorithm``, ``unknown_key``, ``signature``, ``expired``, ``not_yet_valid``,
    ``lifetime``, ``audience``, ``issuer``, ``wrong_user``, ``missing_claim``.
    """

    default_user_message = "This device could not be verified as trusted."

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class SecretError(NBGuardError):
    """A sealed secret could not be opened: wrong or rotated-out key, or tampered data."""

    default_user_message = "A stored secret could not be read; ask your hub admin."


class MFAError(NBGuardError):
    """A second-factor check failed.

    ``reason`` is a stable code: ``invalid`` (wrong or malformed code),
    ``replayed`` (a code already used), ``locked`` (too many failures; see
    ``retry_after`` seconds), ``not_enrolled``.
    """

    default_user_message = "The code was not accepted."

    def __init__(self, message: str, *, reason: str, retry_after: int = 0) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


class LedgerError(NBGuardError):
    """Root of ledger problems (storage, schemas, integrity)."""

    default_user_message = "The audit ledger is unavailable; access is denied until it recovers."


class RecordValidationError(LedgerError):
    """A record does not match its schema; nothing was written.

    ``field`` is the JSON path of the offending field (``"outputs.0.text"``), or
    ``""`` for the record as a whole.
    """

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class LedgerIntegrityError(LedgerError):
    """Verification found a broken chain, checkpoint or signature.

    ``seq`` is the first sequence number at which the ledger stops verifying.
    """

    def __init__(self, message: str, *, seq: int | None = None) -> None:
        super().__init__(message)
        self.seq = seq
