"""Elevation requests as policy entities, held only while decisions need them.

Deciding ``elevation.request`` or ``elevation.approve`` needs the request as a
``ElevationRequest`` entity in the policy engine. Every such entity can be built
again from the stored request (or, for an ask not yet stored, from the ask), so
the engine need not keep them: they would otherwise pile up for the service's
lifetime, one per request and per distinct ask. An entity is held while a
decision uses it (across the decision's awaits, so a concurrent request never
loses it mid-decision) and dropped with the other idle ones once more than
``keep`` are held; a batch at a time, because every removal makes the engine
parse its entities again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from nbguard.policy import EntityRef
from nbguard.policy.engine import PolicyEngine
from nbguard.policy.entities import Entity, ref_of

#: Idle request entities kept before they are dropped (a decision rebuilds its own).
KEEP = 256


class RequestEntities:
    """The ``ElevationRequest`` entities of one engine, held while in use."""

    def __init__(self, engine: PolicyEngine, *, keep: int = KEEP) -> None:
        self.engine = engine
        self.keep = keep
        self._in_use: Counter[EntityRef] = Counter()
        self._held: set[EntityRef] = set()

    @property
    def held(self) -> int:
        """How many request entities the engine holds for this service now."""
        return len(self._held)

    @contextmanager
    def using(self, item: Entity) -> Iterator[EntityRef]:
        """Put ``item`` in the engine (if it differs) for the ``with`` block; its reference."""
        ref = ref_of(item)
        if self.engine.entities.get(ref) != item:
            self.engine.upsert_entities([item])
        self._held.add(ref)
        self._in_use[ref] += 1
        try:
            yield ref
        finally:
            self._in_use[ref] -= 1
            if self._in_use[ref] <= 0:
                del self._in_use[ref]
            if len(self._held) > self.keep:
                idle = [held for held in self._held if held not in self._in_use]
                self.engine.remove_entities(idle)
                self._held.difference_update(idle)
