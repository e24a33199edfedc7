"""Policy test cases: requests with the decision an admin expects, checked against the engine.

A case file is YAML::

    defaults:                 # optional, merged under every case's context
      context: {network_zone: corporate, mfa_method: totp, mfa_age_seconds: 60}
    cases:
      - id: alice-reads-sales
        principal: user:alice
        action: dataset.read
        resource: dataset:sales
        context: {environment: train}
        expect: allow           # or deny
        policies: [data-scientist.datasets.read]   # optional: the deciding policies

Problems in the file are reported with its name and the case's line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nbguard.errors import NBGuardError, PolicyLoadError, SourceProblem
from nbguard.policy.context import RequestContext
from nbguard.policy.decision import Decision
from nbguard.policy.engine import PolicyEngine
from nbguard.policy.refs import EntityRef, parse_action

_CASE_KEYS = {"id", "principal", "action", "resource", "context", "expect", "policies"}
_REQUIRED = ("id", "principal", "action", "resource", "expect")


@dataclass(frozen=True, slots=True)
class PolicyCase:
    """One expected decision."""

    id: str
    line: int | None
    principal: EntityRef
    action: str
    resource: EntityRef
    context: RequestContext
    expect_allow: bool
    policies: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class CaseResult:
    """A case, the decision the engine made, and whether they agree."""

    case: PolicyCase
    decision: Decision

    @property
    def passed(self) -> bool:
        """True when the verdict (and the deciding policies, if given) match."""
        if self.decision.allowed != self.case.expect_allow:
            return False
        expected = self.case.policies
        return expected is None or sorted(expected) == sorted(self.decision.policy_ids)

    def diff(self) -> list[str]:
        """Readable lines describing a mismatch: expected (-) against actual (+)."""
        case, decision = self.case, self.decision
        want = "allow" if case.expect_allow else "deny"
        got = "allow" if decision.allowed else "deny"
        lines = [f"  request:  {case.principal} {case.action} {case.resource}"]
        if want != got:
            lines += [f"  - expected: {want}", f"  + actual:   {got}"]
        if case.policies is not None:
            expected = ", ".join(sorted(case.policies)) or "(none)"
            actual = ", ".join(sorted(decision.policy_ids)) or "(none)"
            if expected != actual:
                lines += [f"  - deciding policies: {expected}", f"  + deciding policies: {actual}"]
        else:
            lines.append(f"    deciding policies: {', '.join(decision.policy_ids) or '(none)'}")
        lines += [f"    error: {error}" for error in decision.errors]
        return lines


def load_cases(path: Path) -> list[PolicyCase]:
    """Parse a case file; raise PolicyLoadError naming the file and line of each problem."""
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as error:
        raise PolicyLoadError([SourceProblem(shown, None, f"cannot read: {error}")]) from error
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise PolicyLoadError([SourceProblem(shown, line, f"invalid YAML: {error}")]) from error
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise PolicyLoadError([SourceProblem(shown, 1, "expected a mapping with a `cases` list")])
    defaults = data.get("defaults") or {}
    base_context = defaults.get("context") or {} if isinstance(defaults, dict) else None
    if not isinstance(base_context, dict):
        raise PolicyLoadError([SourceProblem(shown, 1, "defaults.context must be a mapping")])
    lines = _case_lines(root)
    cases: list[PolicyCase] = []
    problems: list[SourceProblem] = []
    seen: set[str] = set()
    for index, raw in enumerate(data["cases"]):
        line = lines[index] if index < len(lines) else None
        try:
            case = _parse_case(raw, base_context, line)
        except NBGuardError as error:
            problems.append(SourceProblem(shown, line, f"case {index + 1}: {error}"))
            continue
        if case.id in seen:
            problems.append(SourceProblem(shown, line, f"duplicate case id {case.id!r}"))
        seen.add(case.id)
        cases.append(case)
    if problems:
        raise PolicyLoadError(problems)
    return cases


def run_cases(engine: PolicyEngine, cases: list[PolicyCase]) -> list[CaseResult]:
    """Decide every case; the results say which agree with their expectation."""
    return [
        CaseResult(case, engine.decide(case.principal, case.action, case.resource, case.context))
        for case in cases
    ]


def _parse_case(raw: Any, base_context: dict[str, Any], line: int | None) -> PolicyCase:
    """One case from its YAML form; NBGuardError says what is wrong with it."""
    if not isinstance(raw, dict):
        raise NBGuardError("each case must be a mapping")
    missing = [k for k in _REQUIRED if k not in raw]
    unknown = sorted(set(raw) - _CASE_KEYS)
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown key(s) {', '.join(unknown)}")
        raise NBGuardError("; ".join(parts))
    expect = raw["expect"]
    if expect not in ("allow", "deny"):
        raise NBGuardError(f"expect must be allow or deny, got {expect!r}")
    policies = raw.get("policies")
    if policies is not None and (
        not isinstance(policies, list) or not all(isinstance(p, str) for p in policies)
    ):
        raise NBGuardError("policies must be a list of policy ids")
    context = raw.get("context") or {}
    if not isinstance(context, dict):
        raise NBGuardError("context must be a mapping")
    return PolicyCase(
        id=str(raw["id"]),
        line=line,
        principal=EntityRef.parse(raw["principal"]),
        action=parse_action(raw["action"]),
        resource=EntityRef.parse(raw["resource"]),
        context=RequestContext.from_mapping({**base_context, **context}),
        expect_allow=expect == "allow",
        policies=tuple(policies) if policies is not None else None,
    )


def _case_lines(root: yaml.Node | None) -> list[int]:
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        if key.value == "cases" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []
