"""RequestEntities: elevation requests held in the policy engine only while decisions use them."""

from __future__ import annotations

import pytest

from nbguard.errors import EntityError
from nbguard.hub_plugin.guard.request_entities import RequestEntities
from nbguard.policy import EntityRef, PolicyEngine
from nbguard.policy.engine import DEFAULT_POLICY_DIR
from nbguard.policy.entities import Entity, elevation_request


def request(request_id: str) -> Entity:
    """A role request's entity."""
    return elevation_request(
        request_id, requester="alice", role="ml-engineer", action="", target="",
        environment="train", sensitivity="internal", break_glass=False,
    )  # fmt: skip


def held_ids(engine: PolicyEngine, ids: list[str]) -> list[str]:
    """Which of ``ids`` the engine holds as ElevationRequest entities."""
    return [i for i in ids if EntityRef.of("ElevationRequest", i) in engine.entities]


def test_idle_entities_are_dropped_past_keep_but_never_one_in_use() -> None:
    """With keep=1, a request held by an outer decision survives every inner one's pruning;
    once everything is idle, at most ``keep`` stay."""
    engine = PolicyEngine(policy_dir=str(DEFAULT_POLICY_DIR))
    held = RequestEntities(engine, keep=1)
    with held.using(request("outer")) as outer:
        for name in ("a", "b", "c"):
            with held.using(request(name)) as ref:
                assert ref in engine.entities
        assert outer in engine.entities  # in use: never dropped
        assert held_ids(engine, ["a", "b", "c"]) == []
    assert held.held <= 1
    assert len(held_ids(engine, ["outer", "a", "b", "c"])) <= 1


def test_an_entity_the_policy_refuses_is_not_held() -> None:
    """A malformed request entity raises (the handler's 400) and leaves nothing behind."""
    engine = PolicyEngine(policy_dir=str(DEFAULT_POLICY_DIR))
    held = RequestEntities(engine)
    bad = {**request("bad"), "attrs": {**request("bad")["attrs"], "role": 7}}
    with pytest.raises(EntityError), held.using(bad):
        pass
    assert held.held == 0
    assert held_ids(engine, ["bad"]) == []
