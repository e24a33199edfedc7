"""Fixtures for policy tests: the shipped example policies and scratch policy directories."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from nbguard.policy import DEFAULT_POLICY_DIR, PolicyEngine, RequestContext

GOOD = {
    "network_zone": "corporate",
    "device_trusted": True,
    "device_id": "laptop-1",
    "mfa_method": "totp",
    "mfa_age_seconds": 60,
    "hour": 10,
    "weekday": 1,
    "risk": "low",
    "environment": "train",
}


@pytest.fixture(scope="session")
def default_engine() -> PolicyEngine:
    """The engine over the shipped example policies (read-only: do not change its entities)."""
    return PolicyEngine(policy_dir=str(DEFAULT_POLICY_DIR))


@pytest.fixture
def engine_copy(tmp_path: Path) -> Callable[..., PolicyEngine]:
    """Build an engine over a private copy of the example policies, with overrides."""

    def make(**kwargs: object) -> PolicyEngine:
        target = tmp_path / "policies"
        if not target.exists():
            shutil.copytree(DEFAULT_POLICY_DIR, target)
        return PolicyEngine(policy_dir=str(target), **kwargs)

    return make


def good_context(**changes: object) -> RequestContext:
    """A well-behaved session context with some fields changed."""
    return RequestContext.from_mapping({**GOOD, **changes})


def write_file(directory: Path, name: str, text: str) -> Path:
    """Write a text file in ``directory`` and return its path."""
    path = directory / name
    path.write_text(text)
    return path
