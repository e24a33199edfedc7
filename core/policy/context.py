"""The request context: where, on what device, how recently authenticated, with which grants.

The hub zone builds it from what it observed (client address behind trusted
proxies, verified device assertions, auth state, active grants); it is never
taken from the user zone as is. Defaults are the least trusted values, so a
forgotten field can only deny.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from nbguard.errors import RequestError
from nbguard.policy.vocabulary import (
    ENVIRONMENTS,
    MFA_METHODS,
    MFA_NEVER,
    NO_ENVIRONMENT,
    RISK_LEVELS,
)


@dataclass(frozen=True, slots=True)
class Grant:
    """An active elevation grant: ``action`` on the resource whose key is ``resource``."""

    action: str
    resource: str


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Everything about a request besides who, what action and which resource.

    ``hour`` and ``weekday`` default to the current UTC time; callers that have a
    configured time zone pass them (see :meth:`at`).
    """

    network_zone: str = "unknown"
    device_trusted: bool = False
    device_id: str = ""
    mfa_method: str = "none"
    mfa_age_seconds: int = MFA_NEVER
    hour: int = -1
    weekday: int = -1
    risk: str = "low"
    environment: str = NO_ENVIRONMENT
    elevated_roles: frozenset[str] = field(default_factory=frozenset)
    grants: frozenset[Grant] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.hour == -1 or self.weekday == -1:
            now = datetime.now(UTC)
            if self.hour == -1:
                object.__setattr__(self, "hour", now.hour)
            if self.weekday == -1:
                object.__setattr__(self, "weekday", now.weekday())
        _check_context(self)

    @classmethod
    def at(cls, moment: datetime, **values: Any) -> RequestContext:
        """Build a context whose hour and weekday are those of ``moment`` (an aware datetime)."""
        if moment.tzinfo is None:
            raise RequestError("RequestContext.at needs a timezone-aware datetime")
        return cls(hour=moment.hour, weekday=moment.weekday(), **values)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RequestContext:
        """Build a context from JSON-like data (case files, the CLI); unknown keys are errors."""
        if not isinstance(values, Mapping):
            raise RequestError(f"context must be a mapping, got {type(values).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise RequestError(
                f"unknown context field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        data = dict(values)
        if "elevated_roles" in data:
            data["elevated_roles"] = frozenset(_strings("elevated_roles", data["elevated_roles"]))
        if "grants" in data:
            data["grants"] = frozenset(_grants(data["grants"]))
        return cls(**data)

    def to_cedar(self) -> dict[str, Any]:
        """The context record as cedarpy takes it."""
        return {
            "network_zone": self.network_zone,
            "device_trusted": self.device_trusted,
            "device_id": self.device_id,
            "mfa_method": self.mfa_method,
            "mfa_age_seconds": self.mfa_age_seconds,
            "hour": self.hour,
            "weekday": self.weekday,
            "risk": self.risk,
            "environment": self.environment,
            "elevated_roles": sorted(self.elevated_roles),
            "grants": [
                {"action": g.action, "resource": g.resource}
                for g in sorted(self.grants, key=lambda g: (g.action, g.resource))
            ],
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, the inverse of :meth:`from_mapping`."""
        return self.to_cedar()


def _strings(name: str, value: Any) -> Iterable[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise RequestError(f"context.{name} must be a list of strings")
    items = list(value)
    if not all(isinstance(item, str) for item in items):
        raise RequestError(f"context.{name} must be a list of strings")
    return items


def _grants(value: Any) -> Iterable[Grant]:
    if isinstance(value, str | Mapping) or not isinstance(value, Iterable):
        raise RequestError("context.grants must be a list of {action, resource} records")
    grants = []
    for item in value:
        if isinstance(item, Grant):
            grants.append(item)
            continue
        if (
            not isinstance(item, Mapping)
            or set(item) != {"action", "resource"}
            or not all(isinstance(v, str) for v in item.values())
        ):
            raise RequestError(
                f"context.grants entries must be {{action, resource}} strings, got {item!r}"
            )
        grants.append(Grant(item["action"], item["resource"]))
    return grants


_CHOICES = {
    "mfa_method": MFA_METHODS,
    "risk": RISK_LEVELS,
    "environment": (*ENVIRONMENTS, NO_ENVIRONMENT),
}
_RANGES = {"mfa_age_seconds": (0, MFA_NEVER), "hour": (0, 23), "weekday": (0, 6)}


def _check_context(ctx: RequestContext) -> None:
    for name in ("network_zone", "device_id", "mfa_method", "risk", "environment"):
        if not isinstance(getattr(ctx, name), str):
            raise RequestError(f"context.{name} must be a string")
    for name, choices in _CHOICES.items():
        if getattr(ctx, name) not in choices:
            raise RequestError(
                f"context.{name} must be one of {', '.join(choices)}, got {getattr(ctx, name)!r}"
            )
    if not isinstance(ctx.device_trusted, bool):
        raise RequestError("context.device_trusted must be true or false")
    for name, (low, high) in _RANGES.items():
        value = getattr(ctx, name)
        # bool is an int subclass; true is not an age.
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise RequestError(f"context.{name} must be a whole number from {low} to {high}")
    if not isinstance(ctx.elevated_roles, frozenset) or not isinstance(ctx.grants, frozenset):
        raise RequestError("context.elevated_roles and context.grants must be frozensets")
