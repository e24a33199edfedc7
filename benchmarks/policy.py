"""Policy decision speed: PolicyEngine.decide against raw cedarpy on the same inputs.

Builds a realistic policy set (the shipped example policies plus per-team rules,
about 50 in all) over about 1,000 entities, then measures in one run, on the
same request stream:

* raw: ``cedarpy.is_authorized`` with pre-parsed policies, entities and schema
  and a pre-built request (the floor any wrapper can reach);
* decide, uncached: ``PolicyEngine.decide`` with the cache off, denial
  explanations off (the pure decision path);
* decide, uncached, explained: the same with remedy search for denials on;
* decide, cached: a warm cache.

Prints p50/p99 latency and throughput per figure, then ratios; the last line is
one JSON object. Targets (issue 2): uncached p50 <= 1.2x raw; cached p50 < 10 us.

    python benchmarks/policy.py [--quick] [--seed N]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cedarpy

from nbguard.policy import DEFAULT_POLICY_DIR, EntityRef, PolicyEngine, RequestContext
from nbguard.policy import entities as build
from nbguard.policy.refs import action_uid

TEAMS = [f"team-{i}" for i in range(15)]
ROLES = ["data-scientist", "ml-engineer", "reviewer", "admin", "data-engineer"]
SENSITIVITIES = ["public", "internal", "confidential", "restricted"]
ENVIRONMENTS = ["dev", "train", "test", "prod"]
ACTIONS = ["dataset.read", "dataset.list", "dataset.write", "model.read", "model.export"]


def team_policies() -> str:
    """Per-team rules an admin might add: team leads read their team's restricted data."""
    rules = []
    for team in TEAMS:
        rules.append(
            f'@id("{team}.leads.read-restricted")\n'
            f'permit (principal in nbguard::Group::"{team}-leads", '
            f'action == nbguard::Action::"dataset.read", resource)\n'
            f'when {{ resource.team == nbguard::Team::"{team}" && context.hour >= 7 '
            f"&& context.hour <= 20 }};\n"
        )
    return "\n".join(rules)


def entity_set(rng: random.Random) -> list[dict[str, Any]]:
    """About 1,000 entities: users, teams, groups, datasets, models and versions."""
    items: list[dict[str, Any]] = [build.entity(EntityRef("Role", r), {}) for r in ROLES]
    items += [build.entity(EntityRef("Team", t), {}) for t in TEAMS]
    items += [build.entity(EntityRef("Group", f"{t}-leads"), {}) for t in TEAMS]
    for i in range(600):
        team = rng.choice(TEAMS)
        groups = [f"{team}-leads"] if i % 20 == 0 else []
        items.append(build.user(f"user{i}", roles=[rng.choice(ROLES)], teams=[team], groups=groups))
    for i in range(250):
        items.append(
            build.dataset(
                f"ds{i}",
                sensitivity=rng.choice(SENSITIVITIES),
                environment=rng.choice(ENVIRONMENTS),
                team=rng.choice(TEAMS),
            )
        )
    for i in range(50):
        team = rng.choice(TEAMS)
        sensitivity = rng.choice(SENSITIVITIES)
        items.append(build.model(f"m{i}", sensitivity=sensitivity, environment="train", team=team))
        items.append(
            build.model_version(
                f"m{i}",
                "1",
                sensitivity=sensitivity,
                environment=rng.choice(ENVIRONMENTS),
                team=team,
                registered_by=f"user{rng.randrange(600)}",
            )
        )
    return items


def request_stream(
    rng: random.Random, count: int
) -> list[tuple[EntityRef, str, EntityRef, RequestContext]]:
    """A mixed stream of realistic requests with varied contexts."""
    stream = []
    for _ in range(count):
        action = rng.choice(ACTIONS)
        if action.startswith("model"):
            resource = EntityRef("Model", f"m{rng.randrange(50)}")
        else:
            resource = EntityRef("Dataset", f"ds{rng.randrange(250)}")
        ctx = RequestContext(
            network_zone=rng.choice(["corporate", "corporate", "home"]),
            device_trusted=rng.random() < 0.8,
            mfa_method="totp",
            mfa_age_seconds=rng.randrange(0, 3600),
            hour=rng.randrange(24),
            weekday=rng.randrange(7),
            environment=rng.choice(ENVIRONMENTS),
        )
        stream.append((EntityRef("User", f"user{rng.randrange(600)}"), action, resource, ctx))
    return stream


def measure_interleaved(
    calls: dict[str, tuple[Callable[[Any], object], list[Any]]],
) -> dict[str, list[float]]:
    """Per-call latency (microseconds) of several variants, timed request by request.

    For each request index every variant runs once, in an order that rotates,
    so that the noise of a shared machine (frequency changes, neighbours) lands
    on all variants alike; timing whole blocks one after another does not.
    """
    timer = time.perf_counter_ns
    names = list(calls)
    samples: dict[str, list[float]] = {name: [] for name in names}
    count = min(len(items) for _, items in calls.values())
    gc.disable()
    try:
        for index in range(count):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                call, items = calls[name]
                item = items[index]
                start = timer()
                call(item)
                samples[name].append((timer() - start) / 1000)
    finally:
        gc.enable()
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    """p50, p99 (microseconds) and throughput (decisions per second)."""
    ordered = sorted(samples)
    return {
        "p50_us": round(ordered[len(ordered) // 2], 2),
        "p99_us": round(ordered[int(len(ordered) * 0.99)], 2),
        "per_second": round(len(ordered) / (sum(ordered) / 1e6)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (under 30 s)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    count = 3000 if args.quick else 30000
    rounds = 3 if args.quick else 5
    rng = random.Random(args.seed)

    workdir = Path(tempfile.mkdtemp(prefix="nbguard-bench-"))
    try:
        policy_dir = workdir / "policies"
        shutil.copytree(DEFAULT_POLICY_DIR, policy_dir, ignore=shutil.ignore_patterns("*.yaml"))
        (policy_dir / "teams.cedar").write_text(team_policies())
        (policy_dir / "entities.json").write_text(json.dumps(entity_set(rng)))
        stream = request_stream(rng, count)

        uncached = PolicyEngine(policy_dir=str(policy_dir), cache_size=0, explain_denials=False)
        explained = PolicyEngine(policy_dir=str(policy_dir), cache_size=0)
        cached = PolicyEngine(policy_dir=str(policy_dir))
        policies = len(uncached.sources)
        entities = len(uncached.entities)

        # The raw baseline gets the same parsed handles and pre-built requests.
        schema = uncached._schema
        policy_set = uncached._snapshot.policies
        handle = uncached.entities.handle
        raw_requests = [
            {
                "principal": p.to_cedar(),
                "action": action_uid(a),
                "resource": r.to_cedar(),
                "context": ctx.to_cedar(),
            }
            for p, a, r, ctx in stream
        ]
        allowed = sum(
            cedarpy.is_authorized(req, policy_set, handle, schema).allowed for req in raw_requests
        )

        def raw(req: dict[str, Any]) -> object:
            return cedarpy.is_authorized(req, policy_set, handle, schema)

        def decide_with(engine: PolicyEngine) -> Callable[[Any], object]:
            return lambda item: engine.decide(*item)

        for item in stream:  # warm the cache: every later cached call is a hit
            cached.decide(*item)

        figures: dict[str, list[float]] = {}
        for _ in range(rounds):
            measured = measure_interleaved(
                {
                    "raw": (raw, raw_requests),
                    "uncached": (decide_with(uncached), stream),
                    "cached": (decide_with(cached), stream),
                }
            )
            for name, samples in measured.items():
                figures.setdefault(name, []).extend(samples)
        # Remedy search is costly by design; one pass shows what a denial-heavy load pays.
        figures.update(
            measure_interleaved({"uncached_explained": (decide_with(explained), stream)})
        )

        results = {name: summary(samples) for name, samples in figures.items()}
        ratios = {
            "uncached_p50_over_raw_p50": round(
                results["uncached"]["p50_us"] / results["raw"]["p50_us"], 3
            ),
            "uncached_throughput_over_raw": round(
                results["uncached"]["per_second"] / results["raw"]["per_second"], 3
            ),
            "cached_p50_over_raw_p50": round(
                results["cached"]["p50_us"] / results["raw"]["p50_us"], 3
            ),
        }
        print(f"policies: {policies}, entities: {entities}, requests: {count} x {rounds} rounds")
        print(f"allowed share: {allowed / count:.0%}")
        for name, result in results.items():
            print(
                f"{name:>20}: p50 {result['p50_us']:8.2f} us  p99 {result['p99_us']:9.2f} us  "
                f"{result['per_second']:>9} /s"
            )
        print(
            f"uncached p50 / raw p50 = {ratios['uncached_p50_over_raw_p50']} (target <= 1.2); "
            f"cached p50 = {results['cached']['p50_us']} us (target < 10)"
        )
        print(
            json.dumps(
                {
                    "benchmark": "policy",
                    "quick": args.quick,
                    "policies": policies,
                    "entities": entities,
                    "requests": count,
                    "allowed_share": round(allowed / count, 3),
                    "median_mfa_age": statistics.median(c.mfa_age_seconds for *_, c in stream),
                    **{f"{name}_{k}": v for name, r in results.items() for k, v in r.items()},
                    **ratios,
                    "targets_met": {
                        "uncached_p50_le_1_2x_raw": ratios["uncached_p50_over_raw_p50"] <= 1.2,
                        "cached_p50_lt_10us": results["cached"]["p50_us"] < 10,
                    },
                }
            )
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
