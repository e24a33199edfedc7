"""Approval rules: how many approvals a request needs, how long it may last, break-glass.

Admins write them as a list of dicts (``GuardService.approval_rules``); the first
rule whose ``match`` fits the request wins, else the default rule applies
(``GuardService.default_approval_rule``: 1 approval, 8 hours, no break-glass).
Everything is checked when the rules are built, so a typo fails at startup with
the setting's name, never silently at request time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nbguard.elevation.models import KINDS
from nbguard.errors import ConfigError
from nbguard.policy.vocabulary import ENVIRONMENTS, NO_ENVIRONMENT, SENSITIVITIES

RULES_SETTING = "GuardService.approval_rules"
DEFAULT_SETTING = "GuardService.default_approval_rule"

#: Match keys and, where the set is closed, the values they accept.
MATCH_KEYS: dict[str, tuple[str, ...] | None] = {
    "kind": KINDS,
    "role": None,
    "action": None,
    "sensitivity": SENSITIVITIES,
    "environment": (*ENVIRONMENTS, NO_ENVIRONMENT),
}
_RULE_KEYS = ("match", "approvals", "max_duration_seconds", "break_glass")
_DEFAULT_KEYS = ("approvals", "max_duration_seconds", "break_glass")


@dataclass(frozen=True, slots=True)
class ApprovalRule:
    """What a request needs: ``approvals`` distinct approvers, at most
    ``max_duration_seconds``, and whether break-glass (no approval, review after) is allowed."""

    approvals: int = 1
    max_duration_seconds: int = 8 * 3600
    break_glass: bool = False


class ApprovalRules:
    """The admin's rules, checked; :meth:`rule_for` picks the one for a request."""

    def __init__(
        self,
        rules: Sequence[Mapping[str, Any]] = (),
        *,
        default: Mapping[str, Any] | None = None,
    ) -> None:
        """Check ``rules`` and ``default``; raise ConfigError naming the setting and key."""
        if isinstance(rules, str | bytes | Mapping) or not isinstance(rules, Sequence):
            raise ConfigError(f"{RULES_SETTING} must be a list of rules")
        self.default = (
            ApprovalRule() if default is None else _rule(default, DEFAULT_SETTING, _DEFAULT_KEYS)
        )
        self.rules: tuple[tuple[dict[str, frozenset[str]], ApprovalRule], ...] = tuple(
            (_match(raw, f"{RULES_SETTING}[{index}]"), _rule(raw, f"{RULES_SETTING}[{index}]"))
            for index, raw in enumerate(rules)
        )

    def rule_for(
        self, kind: str, role: str, action: str, sensitivity: str, environment: str
    ) -> ApprovalRule:
        """The first rule whose match keys all hold the request's values, else the default."""
        request = {
            "kind": kind,
            "role": role,
            "action": action,
            "sensitivity": sensitivity,
            "environment": environment,
        }
        for match, rule in self.rules:
            if all(request[key] in values for key, values in match.items()):
                return rule
        return self.default


def _rule(raw: Mapping[str, Any], where: str, keys: tuple[str, ...] = _RULE_KEYS) -> ApprovalRule:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a dict with keys {', '.join(keys)}")
    unknown = sorted(str(key) for key in raw if key not in keys)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key; known keys: {', '.join(keys)}")
    defaults = ApprovalRule()
    approvals = raw.get("approvals", defaults.approvals)
    duration = raw.get("max_duration_seconds", defaults.max_duration_seconds)
    break_glass = raw.get("break_glass", defaults.break_glass)
    for key, value in (("approvals", approvals), ("max_duration_seconds", duration)):
        # bool is an int subclass; True is not a count.
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{where}.{key} must be a whole number of at least 1, got {value!r}")
    if not isinstance(break_glass, bool):
        raise ConfigError(f"{where}.break_glass must be true or false, got {break_glass!r}")
    return ApprovalRule(approvals, duration, break_glass)


def _match(raw: Any, where: str) -> dict[str, frozenset[str]]:
    if not isinstance(raw, Mapping):
        return {}  # _rule reports the shape
    where = f"{where}.match"
    match = raw.get("match", {})
    if not isinstance(match, Mapping):
        raise ConfigError(f"{where} must be a dict with keys among {', '.join(MATCH_KEYS)}")
    checked: dict[str, frozenset[str]] = {}
    for key, value in match.items():
        if key not in MATCH_KEYS:
            raise ConfigError(f"{where}.{key}: unknown key; known keys: {', '.join(MATCH_KEYS)}")
        values = [value] if isinstance(value, str) else value
        if (
            not isinstance(values, list | tuple)
            or not values
            or not all(isinstance(item, str) and item for item in values)
        ):
            raise ConfigError(
                f"{where}.{key} must be a non-empty string or list of them, got {value!r}"
            )
        allowed = MATCH_KEYS[key]
        wrong = [item for item in values if allowed is not None and item not in allowed]
        if wrong:
            raise ConfigError(
                f"{where}.{key}: {wrong[0]!r} is not one of {', '.join(allowed or ())}"
            )
        checked[key] = frozenset(values)
    return checked
