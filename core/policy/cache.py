"""The decision cache and its key.

The key holds the principal, action, resource and every context field the
policies read (whole numbers compared only with constants are reduced to their
position among those constants; see nbguard.policy.analysis). The engine drops
the whole cache whenever policies, entities or settings change, so an entry
can never outlive the inputs it was computed from.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Hashable
from contextlib import suppress
from operator import attrgetter
from typing import Any

from nbguard.policy.analysis import ContextUsage
from nbguard.policy.context import RequestContext
from nbguard.policy.decision import Verdict

ContextKey = Callable[[RequestContext], Hashable]


def context_key_function(usage: ContextUsage) -> ContextKey:
    """Build the function that reduces a context to its cache-key part."""
    # attrgetter of two or more names returns a tuple in one C call; of one name, the value.
    names = usage.exact * 2 if len(usage.exact) == 1 else usage.exact
    exact: Callable[[RequestContext], tuple[Any, ...]] = (
        attrgetter(*names) if names else (lambda _ctx: ())
    )
    buckets = tuple((attrgetter(name), limits) for name, limits in usage.thresholds.items())

    def key(ctx: RequestContext) -> Hashable:
        parts = exact(ctx)
        if not buckets:
            return parts
        positions = []
        for get, limits in buckets:
            value = get(ctx)
            index = bisect_left(limits, value)
            positions.append(2 * index + (index < len(limits) and limits[index] == value))
        return (parts, tuple(positions))

    return key


class DecisionCache:
    """A bounded map from request keys to verdicts; the oldest entry goes first when full.

    Safe for concurrent use from threads: each operation is a single dict
    operation under the GIL, and a lost insert only costs a re-evaluation.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._entries: dict[Hashable, Verdict] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> Verdict | None:
        """The cached verdict, or None."""
        return self._entries.get(key)

    def put(self, key: Hashable, verdict: Verdict) -> None:
        """Store a verdict, evicting the oldest entry when the cache is full."""
        if self.max_size <= 0:
            return
        entries = self._entries
        if len(entries) >= self.max_size:
            # Another thread may empty or resize it meanwhile: then nothing to evict.
            with suppress(StopIteration, KeyError, RuntimeError):
                del entries[next(iter(entries))]
        entries[key] = verdict
