"""PolicyEngine: loading, fail-closed decisions, the cache, incremental entities."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from nbguard.errors import AccessDenied, ConfigError, PolicyLoadError, RequestError
from nbguard.policy import DEFAULT_POLICY_DIR, EntityRef, Grant, PolicyEngine, RequestContext
from nbguard.policy import entities as build
from nbguard.policy.cases import load_cases, run_cases

from .conftest import good_context

RESTRICTED_GRANT = Grant("dataset.read", "dataset:customers")


def write_policies(directory: Path, text: str, entities: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "main.cedar").write_text(text)
    if entities:
        (directory / "entities.yaml").write_text(entities)
    return directory


ENTITIES = """
roles: [data-scientist]
teams: [t]
users:
  alice: {roles: [data-scientist], teams: [t]}
datasets:
  d: {sensitivity: internal, environment: dev, team: t}
"""


def test_shipped_cases_all_pass(default_engine: PolicyEngine) -> None:
    """Every expected decision shipped with the example policies holds."""
    cases = load_cases(DEFAULT_POLICY_DIR / "cases.yaml")
    failures = [r.case.id for r in run_cases(default_engine, cases) if not r.passed]
    assert len(cases) >= 40
    assert failures == []


def test_allowed_decision_names_deciding_policy(default_engine: PolicyEngine) -> None:
    """An allow carries the permit that decided it and a correlation id."""
    decision = default_engine.decide("user:alice", "dataset.read", "dataset:sales", good_context())
    assert decision.allowed
    assert decision.policy_ids == ("data-scientist.datasets.read",)
    assert decision.correlation_id
    assert decision.require() is decision


def test_correlation_ids_are_unique_even_when_cached(default_engine: PolicyEngine) -> None:
    """Each decision, cached or not, gets its own correlation id."""
    ctx = good_context()
    ids = {
        default_engine.decide("user:alice", "dataset.read", "dataset:sales", ctx).correlation_id
        for _ in range(50)
    }
    assert len(ids) == 50


def test_denial_raises_with_machine_readable_details(default_engine: PolicyEngine) -> None:
    """require() on a denial raises AccessDenied whose details say what would allow it."""
    decision = default_engine.decide(
        "user:alice", "dataset.read", "dataset:customers", good_context()
    )
    with pytest.raises(AccessDenied) as raised:
        decision.require()
    details = raised.value.details
    assert details["allowed"] is False
    assert details["remedies"] == [
        {
            "requirements": [{"kind": "grant", "value": "dataset.read"}],
            "message": "an approved elevation grant for dataset.read on this resource",
        }
    ]
    assert "dataset.read" in raised.value.user_message


def test_remedy_names_the_mfa_age_the_policy_needs(default_engine: PolicyEngine) -> None:
    """A stale second factor is reported with the exact age limit the policy sets."""
    ctx = good_context(
        mfa_age_seconds=5000, grants=[{"action": "dataset.read", "resource": "dataset:customers"}]
    )
    decision = default_engine.decide("user:alice", "dataset.read", "dataset:customers", ctx)
    assert not decision.allowed
    assert decision.policy_ids == ("context.restricted-data",)
    kinds = [[(r.kind, r.value) for r in remedy.requirements] for remedy in decision.remedies]
    assert kinds == [[("fresh_mfa", 900)]]
    assert "within the last 15 minutes" in decision.explain()


def test_remedies_combine_every_missing_condition(default_engine: PolicyEngine) -> None:
    """From home on an unmanaged laptop, the remedy lists all four missing conditions."""
    ctx = good_context(network_zone="home", device_trusted=False, mfa_age_seconds=4000)
    decision = default_engine.decide("user:alice", "dataset.read", "dataset:customers", ctx)
    (remedy,) = decision.remedies
    assert {(r.kind, r.value) for r in remedy.requirements} == {
        ("grant", "dataset.read"),
        ("fresh_mfa", 900),
        ("trusted_device", ""),
        ("network_zone", "corporate"),
    }


def test_role_remedy_for_missing_role(default_engine: PolicyEngine) -> None:
    """A reviewer denied a dataset is told which role would allow it."""
    decision = default_engine.decide("user:carol", "dataset.read", "dataset:sales", good_context())
    roles = {r.requirements[0].value for r in decision.remedies if r.requirements[0].kind == "role"}
    assert roles == {"data-scientist", "ml-engineer", "admin"}


def test_forbid_without_remedy_says_so(default_engine: PolicyEngine) -> None:
    """Self-promotion has no remedy, and the explanation says nothing would allow it."""
    ctx = good_context(grants=[{"action": "model.promote", "resource": "modelversion:fraud/1"}])
    decision = default_engine.decide("user:bob", "model.promote", "modelversion:fraud/1", ctx)
    assert decision.remedies == ()
    assert "sod.no-self-promotion" in decision.policy_ids
    assert "No single role or grant" in decision.explain()


def test_unknown_principal_and_resource_are_denied(default_engine: PolicyEngine) -> None:
    """Requests naming entities that do not exist are denials with an error, not exceptions."""
    decision = default_engine.decide("user:mallory", "dataset.read", "dataset:ghost")
    assert not decision.allowed
    assert decision.errors == ("unknown entity user:mallory", "unknown entity dataset:ghost")


@pytest.mark.parametrize(
    ("principal", "action", "resource"),
    [
        pytest.param("mallory", "dataset.read", "dataset:sales", id="principal-without-type"),
        pytest.param("robot:r2", "dataset.read", "dataset:sales", id="unknown-type"),
        pytest.param("user:alice", "dataset.drop", "dataset:sales", id="unknown-action"),
        pytest.param("user:alice", "DROP TABLE", "dataset:sales", id="garbage-action"),
        pytest.param("user:alice", "dataset.read", 'other::Dataset::"x"', id="foreign-namespace"),
        pytest.param("user:", "dataset.read", "dataset:sales", id="empty-id"),
        pytest.param("user:a\x00b", "dataset.read", "dataset:sales", id="control-char-id"),
        pytest.param("user:alice", "dataset.read", "dataset:sales ", id="trailing-space-id"),
        pytest.param(" user:alice", "dataset.read", "dataset:sales", id="leading-space"),
    ],
)
def test_malformed_requests_raise_request_error(
    default_engine: PolicyEngine, principal: str, action: str, resource: str
) -> None:
    """Malformed requests get a clear RequestError, never a decision or a crash."""
    with pytest.raises(RequestError):
        default_engine.decide(principal, action, resource)


def test_evaluation_error_in_a_forbid_denies(tmp_path: Path) -> None:
    """A forbid that errors at run time (overflow) denies; Cedar alone would skip it and allow."""
    directory = write_policies(
        tmp_path / "p",
        """
        @id("allow-reads") permit (principal, action == nbguard::Action::"dataset.read", resource);
        @id("broken-forbid") forbid (principal, action == nbguard::Action::"dataset.read", resource)
          when { context.mfa_age_seconds * 9223372036854775807 > 0 };
        """,
        ENTITIES,
    )
    engine = PolicyEngine(policy_dir=str(directory))
    decision = engine.decide("user:alice", "dataset.read", "dataset:d", RequestContext())
    assert not decision.allowed
    assert decision.errors
    assert "broken-forbid" in decision.errors[0]


def test_engine_refuses_to_start_on_invalid_policy(tmp_path: Path) -> None:
    """A policy naming an unknown attribute stops the engine, naming file and line."""
    directory = write_policies(
        tmp_path / "p",
        "// header\n\npermit (principal, action, resource)\n  when { resource.nope == 1 };\n",
    )
    with pytest.raises(PolicyLoadError) as raised:
        PolicyEngine(policy_dir=str(directory))
    problems = raised.value.problems
    assert problems
    assert {(Path(p.path).name, p.line) for p in problems} == {("main.cedar", 3)}
    assert all("nope" in p.message for p in problems)


def test_engine_requires_policy_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a policy directory the engine refuses to start and says how to get one."""
    monkeypatch.delenv("NBGUARD_POLICY_DIR", raising=False)
    with pytest.raises(ConfigError, match=r"PolicyEngine\.policy_dir"):
        PolicyEngine()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param({"mfa_max": 10}, "unknown key", id="unknown-key"),
        pytest.param({"prod_mfa_max_age_seconds": -1}, "whole number", id="negative"),
        pytest.param({"prod_mfa_max_age_seconds": "900"}, "whole number", id="string"),
        pytest.param({"prod_mfa_max_age_seconds": True}, "whole number", id="bool"),
    ],
)
def test_bad_settings_name_the_trait(settings: dict[str, object], message: str) -> None:
    """Invalid settings are refused with an error naming PolicyEngine.settings."""
    with pytest.raises(ConfigError, match=rf"PolicyEngine\.settings.*{message}"):
        PolicyEngine(policy_dir=str(DEFAULT_POLICY_DIR), settings=settings)


def test_settings_change_the_mfa_limit(engine_copy: Callable[..., PolicyEngine]) -> None:
    """PolicyEngine.settings reaches the policies: a 5-minute limit denies a 10-minute-old MFA."""
    engine = engine_copy(settings={"restricted_mfa_max_age_seconds": 300})
    ctx = good_context(
        mfa_age_seconds=600, grants=[{"action": "dataset.read", "resource": "dataset:customers"}]
    )
    decision = engine.decide("user:alice", "dataset.read", "dataset:customers", ctx)
    assert not decision.allowed
    assert [(r.kind, r.value) for r in decision.remedies[0].requirements] == [("fresh_mfa", 300)]


def test_cache_hit_returns_same_verdict(default_engine: PolicyEngine) -> None:
    """A repeated request is served from the cache with the same verdict."""
    ctx = good_context(hour=11)
    first = default_engine.decide("user:alice", "dataset.read", "dataset:features", ctx)
    second = default_engine.decide("user:alice", "dataset.read", "dataset:features", ctx)
    assert second.cached
    assert second.verdict == first.verdict


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(
            {"mfa_age_seconds": 900}, {"mfa_age_seconds": 901}, id="mfa-age-crosses-limit"
        ),
        pytest.param({"device_trusted": True}, {"device_trusted": False}, id="device-untrusted"),
        pytest.param({"network_zone": "corporate"}, {"network_zone": "home"}, id="zone-changes"),
        pytest.param(
            {"grants": [{"action": "dataset.read", "resource": "dataset:customers"}]},
            {"grants": []},
            id="grant-expires",
        ),
    ],
)
def test_cache_never_serves_a_stale_allow(
    default_engine: PolicyEngine, first: dict[str, object], second: dict[str, object]
) -> None:
    """An allow cached under one context is not reused when a deciding context field changes."""
    base = {"grants": [{"action": "dataset.read", "resource": "dataset:customers"}]}
    allowed = default_engine.decide(
        "user:alice", "dataset.read", "dataset:customers", good_context(**{**base, **first})
    )
    denied = default_engine.decide(
        "user:alice", "dataset.read", "dataset:customers", good_context(**{**base, **second})
    )
    assert allowed.allowed
    assert not denied.allowed


def test_bucketed_cache_agrees_with_uncached_engine(
    engine_copy: Callable[..., PolicyEngine],
) -> None:
    """Across MFA ages, hours and risks, cached decisions equal fresh evaluations."""
    cached = engine_copy()
    uncached = engine_copy(cache_size=0)
    grants = [{"action": "dataset.read", "resource": "dataset:customers"}]
    requests = [
        ("user:alice", "dataset.read", "dataset:customers"),
        ("user:alice", "dataset.read", "dataset:sales"),
        ("user:bob", "server.spawn", "profile:prod"),
    ]
    for age in (0, 1, 299, 300, 301, 899, 900, 901, 10_000, 2**31 - 1):
        for hour in (0, 9, 23):
            for risk in ("low", "high"):
                ctx = good_context(mfa_age_seconds=age, hour=hour, risk=risk, grants=grants)
                for request in requests:
                    want = uncached.decide(*request, ctx)
                    got = cached.decide(*request, ctx)
                    assert (got.allowed, got.policy_ids) == (want.allowed, want.policy_ids), (
                        request,
                        age,
                        hour,
                        risk,
                    )
    assert len(cached._snapshot.cache) < len(requests) * 10 * 3 * 2


def test_new_entities_are_added_without_rebuilding(
    engine_copy: Callable[..., PolicyEngine],
) -> None:
    """Adding an entity extends the parsed handle instead of re-parsing all entities."""
    engine = engine_copy()
    store = engine.entities
    before = store.handle
    engine.upsert_entities(
        [build.dataset("new", sensitivity="internal", environment="train", team="analytics")]
    )
    assert store._handle is not None
    assert store._handle is not before
    decision = engine.decide("user:alice", "dataset.read", "dataset:new", good_context())
    assert decision.allowed


def test_changed_entity_invalidates_cached_decisions(
    engine_copy: Callable[..., PolicyEngine],
) -> None:
    """Reclassifying a dataset as restricted takes effect on the very next decision."""
    engine = engine_copy()
    ctx = good_context()
    assert engine.decide("user:alice", "dataset.read", "dataset:sales", ctx).allowed
    engine.upsert_entities(
        [build.dataset("sales", sensitivity="restricted", environment="train", team="analytics")]
    )
    assert not engine.decide("user:alice", "dataset.read", "dataset:sales", ctx).allowed


def test_removed_user_loses_access(engine_copy: Callable[..., PolicyEngine]) -> None:
    """Removing a user (offboarding) denies their next request despite a cached allow."""
    engine = engine_copy()
    ctx = good_context()
    assert engine.decide("user:alice", "dataset.read", "dataset:sales", ctx).allowed
    engine.remove_entities([EntityRef("User", "alice")])
    decision = engine.decide("user:alice", "dataset.read", "dataset:sales", ctx)
    assert not decision.allowed
    assert decision.errors == ("unknown entity user:alice",)


def test_invalid_entity_batch_changes_nothing(engine_copy: Callable[..., PolicyEngine]) -> None:
    """A batch with one invalid entity is refused whole; earlier entities are untouched."""
    engine = engine_copy()
    count = len(engine.entities)
    bad = {"uid": {"type": "nbguard::Dataset", "id": "bad"}, "attrs": {"key": 1}, "parents": []}
    good = build.dataset("fine", sensitivity="public", environment="dev", team="analytics")
    from nbguard.errors import EntityError

    with pytest.raises(EntityError):
        engine.upsert_entities([good, bad])
    assert len(engine.entities) == count
    assert not engine.decide("user:alice", "dataset.read", "dataset:fine").allowed


def test_reload_failure_keeps_current_policies(
    engine_copy: Callable[..., PolicyEngine], tmp_path: Path
) -> None:
    """A broken edit followed by reload() keeps deciding with the last good policies."""
    engine = engine_copy()
    (tmp_path / "policies" / "broken.cedar").write_text("permit (principal, action, resource")
    with pytest.raises(PolicyLoadError):
        engine.reload()
    assert engine.decide("user:alice", "dataset.read", "dataset:sales", good_context()).allowed


def test_empty_policy_set_is_reported_as_lockout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With no permit policies, start-up logs an error saying every request is denied."""
    directory = write_policies(tmp_path / "p", "// nothing yet\n", ENTITIES)
    with caplog.at_level(logging.INFO):
        engine = PolicyEngine(policy_dir=str(directory))
    assert "every request will be denied" in caplog.text
    assert not engine.decide("user:alice", "dataset.read", "dataset:d").allowed


def test_permit_all_is_reported_loudly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An unconditional permit-everything policy is reported as a warning at start-up."""
    directory = write_policies(
        tmp_path / "p", '@id("open") permit (principal, action, resource);', ENTITIES
    )
    with caplog.at_level(logging.WARNING):
        PolicyEngine(policy_dir=str(directory))
    assert "policy open" in caplog.text
    assert "unconditionally" in caplog.text


def test_context_defaults_are_least_trusted() -> None:
    """A context built with no values has no MFA, no trusted device and an unknown zone."""
    ctx = RequestContext()
    assert (ctx.mfa_method, ctx.device_trusted, ctx.network_zone) == ("none", False, "unknown")
    assert ctx.mfa_age_seconds == 2**31 - 1


@pytest.mark.parametrize(
    "resource",
    [
        pytest.param('dataset:sales" || true || "', id="quote-injection"),
        pytest.param('dataset:sales"};permit(principal,action,resource);//', id="policy-injection"),
        pytest.param("dataset:../customers", id="path-like"),
        pytest.param("dataset:SALES", id="case-variant"),
    ],
)
def test_crafted_ids_are_just_unknown_entities(default_engine: PolicyEngine, resource: str) -> None:
    """Ids that look like Cedar syntax or other names are unknown entities, never an allow."""
    decision = default_engine.decide("user:alice", "dataset.read", resource, good_context())
    assert not decision.allowed
    assert decision.errors[0].startswith("unknown entity")


def test_forged_grant_for_other_user_is_not_a_grant(default_engine: PolicyEngine) -> None:
    """A grant names an action and a resource key only; it cannot smuggle a role or a principal."""
    ctx = good_context(grants=[{"action": "elevated_roles", "resource": "admin"}])
    decision = default_engine.decide("user:alice", "dataset.read", "dataset:customers", ctx)
    assert not decision.allowed


def test_direct_store_change_also_invalidates_cache(
    engine_copy: Callable[..., PolicyEngine],
) -> None:
    """Changing entities through engine.entities (not the engine's methods) cannot leave a stale allow."""
    engine = engine_copy()
    ctx = good_context()
    assert engine.decide("user:alice", "dataset.read", "dataset:sales", ctx).allowed
    engine.entities.upsert(
        [build.dataset("sales", sensitivity="restricted", environment="train", team="analytics")]
    )
    decision = engine.decide("user:alice", "dataset.read", "dataset:sales", ctx)
    assert not decision.allowed
    assert not decision.cached
