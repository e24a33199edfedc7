"""The shippers' shared rules: which answers refuse a batch, and the retry back-off."""

from __future__ import annotations

import pytest

from nbguard.delivery import REFUSED_STATUSES, backoff_seconds


@pytest.mark.parametrize(
    ("failures", "low", "high"),
    [(0, 0.25, 0.5), (1, 0.25, 0.5), (2, 0.5, 1.0), (4, 2.0, 4.0), (9, 5.0, 10.0), (99, 5.0, 10.0)],
    ids=["none-yet", "first", "second", "fourth", "capped", "huge-count"],
)
def test_backoff_doubles_up_to_the_cap_with_jitter(failures: int, low: float, high: float) -> None:
    """Each wait lies in the upper half of a step that doubles from 0.5 s up to 10 s."""
    waits = [backoff_seconds(failures, initial=0.5, maximum=10.0) for _ in range(200)]
    assert all(low <= wait <= high for wait in waits)
    assert len(set(waits)) > 1  # jittered, not one fixed value


def test_refused_statuses_are_the_batchs_fault_only() -> None:
    """Answers that a later try could change (auth, outages, throttling) are not refusals."""
    assert {400, 413, 415, 422} <= REFUSED_STATUSES
    assert not {401, 403, 404, 408, 429, 500, 502, 503} & REFUSED_STATUSES
