"""Callers from the hub's token models, and reusing them only while HubAuth reuses the model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nbguard.hub_plugin.guard.identity import CallerCache, caller_from_model, token_hash

SERVER_SCOPES = ["access:servers!server=alice/", "access:services!service=nbguard-guard"]


def model(scopes: list[str] | None = None) -> dict[str, Any]:
    """A hub ``/user`` model of one of alice's tokens."""
    return {"kind": "user", "name": "alice", "scopes": scopes or SERVER_SCOPES, "session_id": "s1"}


class ScopeCheck:
    """Stands in for HubAuth.check_scopes; counts its calls."""

    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.calls = 0

    def __call__(self, _model: Mapping[str, Any]) -> bool:
        self.calls += 1
        return self.answer


def test_cache_gives_what_caller_from_model_gives() -> None:
    """A cached Caller is the one caller_from_model builds: server claim, hash, session."""
    hub_model = model()
    caller, scoped = CallerCache().caller(hub_model, "tok-1", ScopeCheck())
    assert scoped
    assert caller == caller_from_model(hub_model, "tok-1")
    assert (caller.server, caller.token_hash) == ("", token_hash("tok-1"))


def test_same_model_object_reuses_the_caller_and_scope_check() -> None:
    """While HubAuth hands out the very same model, neither Caller nor scope check is redone."""
    cache, check, hub_model = CallerCache(), ScopeCheck(), model()
    first, _ = cache.caller(hub_model, "tok-1", check)
    again, _ = cache.caller(hub_model, "tok-1", check)
    assert again is first
    assert check.calls == 1


def test_a_new_model_for_the_token_is_looked_at_afresh() -> None:
    """Once HubAuth asks the hub again (a new model object), scopes and claims are read anew."""
    cache = CallerCache()
    first, scoped = cache.caller(model(), "tok-1", ScopeCheck())
    assert scoped
    assert first.server == ""
    narrowed = model(["read:users!user=alice"])
    second, scoped = cache.caller(narrowed, "tok-1", ScopeCheck(answer=False))
    assert not scoped
    assert second.server is None
    assert second.scopes == frozenset(narrowed["scopes"])


def test_equal_models_of_other_tokens_do_not_share_a_caller() -> None:
    """Each token has its own entry: its own hash, never another token's Caller."""
    cache, hub_model = CallerCache(), model()
    one, _ = cache.caller(hub_model, "tok-1", ScopeCheck())
    two, _ = cache.caller(hub_model, "tok-2", ScopeCheck())
    assert (one.token_hash, two.token_hash) == (token_hash("tok-1"), token_hash("tok-2"))


def test_a_full_cache_starts_over_and_keeps_no_token() -> None:
    """At its size the cache restarts; it is keyed by token hashes, never by tokens."""
    cache = CallerCache(size=2)
    models = [model() for _ in range(3)]
    for number, hub_model in enumerate(models):
        cache.caller(hub_model, f"tok-{number}", ScopeCheck())
    assert set(cache._entries) == {token_hash("tok-2")}
    assert not any(key.startswith("tok-") for key in cache._entries)
