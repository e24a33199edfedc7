"""Approval rules: first match wins, a configurable default, strict checks naming the setting."""

from __future__ import annotations

from typing import Any

import pytest

from nbguard.elevation.rules import ApprovalRule, ApprovalRules
from nbguard.errors import ConfigError

RULES: list[dict[str, Any]] = [
    {"match": {"sensitivity": "restricted"}, "approvals": 2, "max_duration_seconds": 7200},
    {
        "match": {"role": ["ml-engineer", "data-steward"], "environment": "prod"},
        "approvals": 1,
        "max_duration_seconds": 28800,
        "break_glass": True,
    },
    {
        "match": {"kind": "grant", "action": "dataset.export"},
        "approvals": 3,
        "max_duration_seconds": 900,
    },
]


@pytest.mark.parametrize(
    ("request_values", "expected"),
    [
        pytest.param(
            ("grant", "", "dataset.read", "restricted", "prod"),
            ApprovalRule(2, 7200, False),
            id="sensitivity",
        ),
        pytest.param(
            ("grant", "", "dataset.export", "restricted", "dev"),
            ApprovalRule(2, 7200, False),
            id="first-match-wins",
        ),
        pytest.param(
            ("grant", "", "dataset.export", "internal", "dev"),
            ApprovalRule(3, 900, False),
            id="kind-and-action",
        ),
        pytest.param(
            ("role", "ml-engineer", "", "", "prod"), ApprovalRule(1, 28800, True), id="role-in-list"
        ),
        pytest.param(
            ("role", "data-steward", "", "", "prod"),
            ApprovalRule(1, 28800, True),
            id="second-in-list",
        ),
        pytest.param(
            ("role", "ml-engineer", "", "", "dev"),
            ApprovalRule(1, 8 * 3600, False),
            id="all-keys-must-hold",
        ),
        pytest.param(
            ("grant", "", "dataset.read", "internal", "dev"), ApprovalRule(), id="default"
        ),
    ],
)
def test_rule_for(request_values: tuple[str, ...], expected: ApprovalRule) -> None:
    """The first rule whose every match key holds the request's value applies, else the default."""
    assert ApprovalRules(RULES).rule_for(*request_values) == expected


def test_default_rule() -> None:
    """The built-in default is 1 approval, 8 hours, no break-glass."""
    assert ApprovalRules().rule_for("role", "x", "", "", "dev") == ApprovalRule(1, 28800, False)


def test_default_is_configurable() -> None:
    """A configured default applies when no rule matches; missing keys keep built-in values."""
    rules = ApprovalRules([], default={"approvals": 2, "break_glass": True})
    assert rules.rule_for("role", "x", "", "", "dev") == ApprovalRule(2, 28800, True)


def test_empty_match_matches_everything() -> None:
    """A rule without match keys catches every request."""
    rules = ApprovalRules([{"approvals": 4, "max_duration_seconds": 60}])
    assert rules.rule_for("role", "x", "", "", "none") == ApprovalRule(4, 60, False)


@pytest.mark.parametrize(
    ("rules", "default", "where"),
    [
        pytest.param(
            {"approvals": 1}, None, "GuardService.approval_rules must be a list", id="not-a-list"
        ),
        pytest.param(
            ["x"], None, "GuardService.approval_rules[0] must be a dict", id="rule-not-dict"
        ),
        pytest.param(
            [{"aprovals": 1}], None, "GuardService.approval_rules[0].aprovals", id="unknown-key"
        ),
        pytest.param(
            [{"approvals": 0}],
            None,
            "GuardService.approval_rules[0].approvals",
            id="zero-approvals",
        ),
        pytest.param(
            [{"approvals": "2"}],
            None,
            "GuardService.approval_rules[0].approvals",
            id="approvals-string",
        ),
        pytest.param(
            [{"approvals": True}],
            None,
            "GuardService.approval_rules[0].approvals",
            id="approvals-bool",
        ),
        pytest.param(
            [{"approvals": 1.5}],
            None,
            "GuardService.approval_rules[0].approvals",
            id="approvals-float",
        ),
        pytest.param(
            [{}, {"max_duration_seconds": 0}],
            None,
            "GuardService.approval_rules[1].max_duration_seconds",
            id="zero-duration",
        ),
        pytest.param(
            [{"max_duration_seconds": -5}],
            None,
            "GuardService.approval_rules[0].max_duration_seconds",
            id="negative-duration",
        ),
        pytest.param(
            [{"break_glass": "yes"}],
            None,
            "GuardService.approval_rules[0].break_glass",
            id="break-glass-string",
        ),
        pytest.param(
            [{"match": ["role"]}], None, "GuardService.approval_rules[0].match", id="match-not-dict"
        ),
        pytest.param(
            [{"match": {"user": "bob"}}],
            None,
            "GuardService.approval_rules[0].match.user",
            id="unknown-match-key",
        ),
        pytest.param(
            [{"match": {"role": 3}}],
            None,
            "GuardService.approval_rules[0].match.role",
            id="match-not-string",
        ),
        pytest.param(
            [{"match": {"role": []}}],
            None,
            "GuardService.approval_rules[0].match.role",
            id="match-empty-list",
        ),
        pytest.param(
            [{"match": {"role": [""]}}],
            None,
            "GuardService.approval_rules[0].match.role",
            id="match-empty-string",
        ),
        pytest.param(
            [{"match": {"sensitivity": "secret"}}],
            None,
            "GuardService.approval_rules[0].match.sensitivity",
            id="unknown-sensitivity",
        ),
        pytest.param(
            [{"match": {"environment": ["prod", "staging"]}}],
            None,
            "GuardService.approval_rules[0].match.environment",
            id="unknown-environment",
        ),
        pytest.param(
            [{"match": {"kind": "admin"}}],
            None,
            "GuardService.approval_rules[0].match.kind",
            id="unknown-kind",
        ),
        pytest.param(
            [], {"approvals": 0}, "GuardService.default_approval_rule.approvals", id="default-zero"
        ),
        pytest.param(
            [], {"match": {}}, "GuardService.default_approval_rule.match", id="default-with-match"
        ),
        pytest.param(
            [], [1], "GuardService.default_approval_rule must be a dict", id="default-not-dict"
        ),
    ],
)
def test_invalid_rules(rules: Any, default: Any, where: str) -> None:
    """Every malformed rule is a ConfigError naming the setting, index and key."""
    with pytest.raises(ConfigError) as caught:
        ApprovalRules(rules, default=default)
    assert where in str(caught.value)
