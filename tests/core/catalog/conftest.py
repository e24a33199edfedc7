"""Fixtures for the catalog tests: sample datasets."""

from __future__ import annotations

import pytest

from nbguard.catalog.models import Dataset


@pytest.fixture
def sales() -> Dataset:
    """A dataset in the default store."""
    return Dataset(
        name="sales",
        description="Monthly sales",
        team="analytics",
        owner="dave",
        sensitivity="internal",
        environment="train",
    )
