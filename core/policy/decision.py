"""Decisions as values: the verdict, who decided it, and what would change a denial."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nbguard.errors import AccessDenied
from nbguard.policy.refs import EntityRef

#: Requirement kinds a remedy can name, in the order they are explained.
REQUIREMENT_KINDS = ("role", "grant", "fresh_mfa", "trusted_device", "network_zone")


@dataclass(frozen=True, slots=True)
class Requirement:
    """One condition a remedy needs.

    ``kind`` is one of REQUIREMENT_KINDS; ``value`` is the role name, the granted
    action, the maximum MFA age in seconds, the zone name, or "" for a device.
    """

    kind: str
    value: str | int = ""

    def describe(self) -> str:
        """The requirement in words, for a person."""
        if self.kind == "role":
            return f"the {self.value} role (ask for an elevation)"
        if self.kind == "grant":
            return f"an approved elevation grant for {self.value} on this resource"
        if self.kind == "fresh_mfa":
            return f"a second factor within the last {_duration(int(self.value))} (step up)"
        if self.kind == "trusted_device":
            return "a trusted, managed device"
        if self.kind == "network_zone":
            return f"a connection from the {self.value} network"
        return f"{self.kind} {self.value}".strip()

    def to_dict(self) -> dict[str, Any]:
        """The stable machine-readable form."""
        return {"kind": self.kind, "value": self.value}


@dataclass(frozen=True, slots=True)
class Remedy:
    """A set of requirements that together would turn the denial into an allow."""

    requirements: tuple[Requirement, ...]

    def describe(self) -> str:
        """The remedy in words: requirements joined with "and"."""
        parts = [r.describe() for r in self.requirements]
        if len(parts) <= 1:
            return "".join(parts)
        return ", ".join(parts[:-1]) + " and " + parts[-1]

    def to_dict(self) -> dict[str, Any]:
        """The stable machine-readable form, with the words under ``message``."""
        return {
            "requirements": [r.to_dict() for r in self.requirements],
            "message": self.describe(),
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """The part of a decision that depends only on its inputs, and so can be cached."""

    allowed: bool
    policy_ids: tuple[str, ...]
    errors: tuple[str, ...]
    remedies: tuple[Remedy, ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one request.

    ``policy_ids`` are the deciding policies: the permits that allowed it, or the
    forbids that denied it (none when nothing permitted it). Any evaluation
    error makes the decision a denial. ``remedies`` lists alternative ways a
    denial would become an allow, where nbguard could find one.
    """

    principal: EntityRef
    action: str
    resource: EntityRef
    verdict: Verdict
    correlation_id: str
    cached: bool = False

    @property
    def allowed(self) -> bool:
        """True only when a policy permitted the request, none forbade it, and nothing erred."""
        return self.verdict.allowed

    @property
    def policy_ids(self) -> tuple[str, ...]:
        """Ids of the policies that decided."""
        return self.verdict.policy_ids

    @property
    def errors(self) -> tuple[str, ...]:
        """Evaluation errors; non-empty means the decision is a denial."""
        return self.verdict.errors

    @property
    def remedies(self) -> tuple[Remedy, ...]:
        """Ways the denial could become an allow (empty for allows)."""
        return self.verdict.remedies

    def explain(self) -> str:
        """One paragraph for a person: the verdict, why, and what would allow it."""
        request = f"{self.principal} {self.action} {self.resource}"
        if self.allowed:
            return f"Allowed: {request} (by {', '.join(self.policy_ids)})."
        if self.errors:
            reason = f"{self.errors[0]}; access is denied"
        elif self.policy_ids:
            reason = f"forbidden by {', '.join(self.policy_ids)}"
        else:
            reason = "no policy permits it"
        text = f"Denied: {request}: {reason}."
        if self.remedies:
            options = "; or ".join(r.describe() for r in self.remedies)
            text += f" It would be allowed with {options}."
        elif not self.errors:
            text += " No single role or grant, with any change of context, would allow it."
        return text

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON form used by the API, the ledger and the CLI."""
        return {
            "allowed": self.allowed,
            "principal": str(self.principal),
            "action": self.action,
            "resource": str(self.resource),
            "policy_ids": list(self.policy_ids),
            "errors": list(self.errors),
            "correlation_id": self.correlation_id,
            "remedies": [r.to_dict() for r in self.remedies],
            "message": self.explain(),
        }

    def require(self) -> Decision:
        """Return the decision if it allows; otherwise raise AccessDenied explaining it."""
        if self.allowed:
            return self
        raise AccessDenied(
            f"{self.explain()} [correlation {self.correlation_id}]",
            user_message=self.explain(),
            details=self.to_dict(),
        )


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0 and seconds >= 3600:
        hours = seconds // 3600
        return f"{hours} hour{'s' if hours != 1 else ''}"
    if seconds % 60 == 0 and seconds >= 60:
        minutes = seconds // 60
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"
