"""Fixtures for the elevation tests: a settable clock, stores on SQLite files, requests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbguard.elevation.models import ElevationRequest
from nbguard.elevation.rules import ApprovalRule
from nbguard.elevation.store import ElevationStore

START = 1_750_000_000.0
ONE = ApprovalRule(approvals=1, max_duration_seconds=3600, break_glass=False)
TWO = ApprovalRule(approvals=2, max_duration_seconds=7200, break_glass=True)


class Clock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    """A clock at START that only moves when told."""
    return Clock()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """The URL of a fresh SQLite file."""
    return f"sqlite:///{tmp_path / 'guard.db'}"


@pytest.fixture
def store(sqlite_url: str, clock: Clock) -> Iterator[ElevationStore]:
    """An elevation store on a SQLite file, on the test clock, requests pending for an hour."""
    elevation = ElevationStore(sqlite_url, clock=clock, request_ttl_seconds=3600)
    yield elevation
    elevation.close()


def request_values(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments of a valid resource-grant request, with ``overrides``."""
    values: dict[str, Any] = {
        "requester": "alice",
        "action": "dataset.read",
        "target": "dataset:customers",
        "duration_seconds": 600,
        "reason": "incident 42",
        "environment": "prod",
        "sensitivity": "restricted",
        "rule": ONE,
    }
    values.update(overrides)
    return values


def new_request(store: ElevationStore, **overrides: Any) -> ElevationRequest:
    """Create a valid request (see :func:`request_values`)."""
    return store.create_request(**request_values(**overrides))
