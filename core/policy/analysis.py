"""What the loaded policies read from the context, found by walking their Cedar JSON form.

Two uses:

* The decision cache keys on the context fields the policies read and nothing
  else. A whole-number field (MFA age, hour, weekday) that policies only compare
  with constants is keyed by its position among those constants: two MFA ages on
  the same side of every threshold get the same answer from every policy, so the
  cache stays exact while ``mfa_age_seconds`` ticks every second. A field used in
  any other way is keyed by its exact value.
* Remedies: the network zones policies name are the zones worth suggesting.

It also finds configurations worth shouting about at start-up: no permit at all
(everyone locked out) and unconditional permits (everyone let in).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from nbguard.policy.context import RequestContext
from nbguard.policy.sources import PolicySource

_COMPARISONS = {"==", "!=", "<", "<=", ">", ">="}
_WHOLE_NUMBER_FIELDS = ("mfa_age_seconds", "hour", "weekday")
_CONTEXT_FIELDS = tuple(f.name for f in fields(RequestContext))


@dataclass(frozen=True, slots=True)
class ContextUsage:
    """How the policies use the context.

    ``exact``: fields keyed by value. ``thresholds``: whole-number fields keyed by
    their position among these constants. Fields in neither are never read.
    """

    exact: tuple[str, ...]
    thresholds: Mapping[str, tuple[int, ...]]
    zones: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LintFinding:
    """A configuration an admin must hear about at start-up."""

    level: str  # "error" | "warning"
    message: str


def analyse_context(sources: Iterable[PolicySource], settings: Mapping[str, int]) -> ContextUsage:
    """Find which context fields the policies read and how."""
    walker = _Walker(settings)
    for source in sources:
        for condition in source.est.get("conditions", []):
            walker.visit(condition.get("body"))
    opaque = set(_CONTEXT_FIELDS) if walker.whole_context else walker.opaque
    exact = tuple(
        name
        for name in _CONTEXT_FIELDS
        if name in opaque or (name in walker.used and name not in _WHOLE_NUMBER_FIELDS)
    )
    thresholds = {
        name: tuple(sorted(walker.constants.get(name, set())))
        for name in _WHOLE_NUMBER_FIELDS
        if name in walker.used and name not in opaque
    }
    return ContextUsage(exact, thresholds, tuple(sorted(walker.zones)))


def lint(sources: Iterable[PolicySource]) -> list[LintFinding]:
    """Findings for policy sets that lock everyone out or let everyone in."""
    sources = list(sources)
    findings = []
    permits = [s for s in sources if s.est.get("effect") == "permit" and not s.is_template]
    if not permits:
        findings.append(
            LintFinding("error", "no permit policies are loaded: every request will be denied")
        )
    for source in permits:
        scopes = (
            source.est.get(part, {}).get("op") for part in ("principal", "action", "resource")
        )
        if all(op == "All" for op in scopes) and not source.est.get("conditions"):
            findings.append(
                LintFinding(
                    "warning",
                    f"policy {source.id} ({source.location}) permits every principal every "
                    "action on every resource, unconditionally",
                )
            )
    return findings


def _context_attr(node: Any) -> str | None:
    """``context.NAME`` -> NAME, else None."""
    if isinstance(node, dict) and len(node) == 1 and "." in node:
        inner = node["."]
        if inner.get("left") == {"Var": "context"}:
            attr = inner.get("attr")
            return attr if isinstance(attr, str) else None
    return None


class _Walker:
    def __init__(self, settings: Mapping[str, int]) -> None:
        self.settings = settings
        self.used: set[str] = set()
        self.opaque: set[str] = set()
        self.constants: dict[str, set[int]] = {}
        self.zones: set[str] = set()
        self.whole_context = False

    def constant(self, node: Any) -> int | str | None:
        """A literal, or a Settings::"global" attribute the engine knows, else None."""
        if not isinstance(node, dict) or len(node) != 1:
            return None
        if "Value" in node:
            value = node["Value"]
            return value if isinstance(value, int | str) and not isinstance(value, bool) else None
        if "." in node:
            inner = node["."]
            left = inner.get("left", {}).get("Value")
            if isinstance(left, dict) and left.get("__entity") == {
                "type": "nbguard::Settings",
                "id": "global",
            }:
                value = self.settings.get(inner.get("attr", ""))
                return value if isinstance(value, int) else None
        return None

    def visit(self, node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                self.visit(item)
            return
        if not isinstance(node, dict):
            return
        if node == {"Var": "context"}:
            self.whole_context = True
            return
        attr = _context_attr(node)
        if attr is not None:
            self.used.add(attr)
            self.opaque.add(attr)
            return
        if len(node) == 1:
            op, body = next(iter(node.items()))
            if op in _COMPARISONS and isinstance(body, dict) and self.comparison(body):
                return
            if op == "has" and isinstance(body, dict) and body.get("left") == {"Var": "context"}:
                return  # `context has x` does not depend on x's value
            if op == "contains" and isinstance(body, dict):
                self.note_zone_set(body)
        for value in node.values():
            self.visit(value)

    def comparison(self, body: dict[str, Any]) -> bool:
        """Record ``context.F <op> constant`` (either way round); True if handled."""
        left, right = body.get("left"), body.get("right")
        for field_node, other in ((left, right), (right, left)):
            attr = _context_attr(field_node)
            value = self.constant(other)
            if attr is None or value is None:
                continue
            self.used.add(attr)
            if attr == "network_zone" and isinstance(value, str):
                self.zones.add(value)
            if attr in _WHOLE_NUMBER_FIELDS and isinstance(value, int):
                self.constants.setdefault(attr, set()).add(value)
            elif attr in _WHOLE_NUMBER_FIELDS:
                self.opaque.add(attr)
            return True
        return False

    def note_zone_set(self, body: dict[str, Any]) -> None:
        """``["corporate", "vpn"].contains(context.network_zone)`` names zones too."""
        if _context_attr(body.get("right")) != "network_zone":
            return
        left = body.get("left")
        if isinstance(left, dict) and isinstance(left.get("Set"), list):
            for item in left["Set"]:
                value = self.constant(item)
                if isinstance(value, str):
                    self.zones.add(value)
