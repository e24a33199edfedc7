"""How the user zone's shippers treat the guard's answers to a batch of records.

The kernel hooks and the server extension's witness both deliver execution
records to ``POST api/v1/executions``; one definition of which answers mean
"this batch is wrong" and of the retry back-off keeps the two witnesses alike.
"""

from __future__ import annotations

import random

#: The guard refused the batch itself (malformed, a conflict, too large, wrong
#: type): sending it again cannot help. Shippers split it down to the one record
#: refused and set that aside, so it cannot block the records after it.
REFUSED_STATUSES = frozenset({400, 409, 413, 415, 422})


def backoff_seconds(failures: int, *, initial: float, maximum: float) -> float:
    """Seconds to wait after ``failures`` failed tries in a row: doubling from
    ``initial``, capped at ``maximum``, the upper half of it random (jitter, so that
    many servers do not retry in step)."""
    step = min(maximum, initial * 2.0 ** min(max(failures, 1) - 1, 30))
    return step / 2 + random.uniform(0, step / 2)  # noqa: S311 (jitter, not secrecy)
