"""Two guard-service replicas on one PostgreSQL database and one PostgreSQL ledger.

One real hub (MockHub with its configurable-http-proxy) and two ``GuardService``
instances in this process, each listening on its own loopback port with the
same hub API token, sharing one PostgreSQL database (elevation and catalog) and
one PostgreSQL ledger, which the hub writes too. The hub registers one service
URL (replica A's); that is all the hub needs, since it only checks tokens and
never calls the service. Tests call each replica directly at its own URL with
real hub tokens, as a load balancer in front of the replicas would. Both
replicas start at the same moment on the empty databases, as a rolling
deployment would start them.

Races are real: the calls of one race run in threads released together by a
barrier, and each race is repeated for several rounds so that an interleaving
that breaks an invariant is likely to show.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import pytest
import pytest_asyncio

from ..conftest import export_lines
from .conftest import (
    CATALOG,
    SERVICE,
    Client,
    Guard,
    guard_hub_config,
    new_service,
    running_hub,
    user_client,
)
from .replica_calls import (
    FEATURES,
    acall,
    arace,
    ask,
    call,
    dataset_names,
    decide_call,
    drop_connections,
    elevation_bodies,
    elevation_events,
    grants_for,
    may_read,
    recorded_once,
    statuses,
)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.postgres]

#: How often each race is run.
ROUNDS = 10
#: Requests created at once through the two replicas.
CONCURRENT_REQUESTS = 40
#: Decisions asked at once through the two replicas (each one ledger record).
CONCURRENT_DECISIONS = 40

RULES = [
    {"match": {"kind": "role", "role": "data-engineer"}, "approvals": 2},
    {"match": {"sensitivity": "restricted"}, "approvals": 2},
]
DEFAULT_RULE = {"approvals": 1, "max_duration_seconds": 14400}
TWO_APPROVALS = {"role": "data-engineer"}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def guard(
    tmp_path_factory: pytest.TempPathFactory, postgres_cluster: Any
) -> AsyncIterator[Guard]:
    """A MockHub and two guard-service replicas (A is ``service``, B ``replicas[0]``)."""
    from jupyterhub.tests.utils import public_url
    from jupyterhub.utils import random_port

    tmp = tmp_path_factory.mktemp("replicas")
    urls = [f"http://127.0.0.1:{random_port()}" for _ in range(2)]
    token = secrets.token_hex(32)
    config = guard_hub_config(
        tmp, url=urls[0], token=token, db_url=str(postgres_cluster.create_database())
    )
    config.Ledger.url = str(postgres_cluster.create_database())
    config.GuardService.approval_rules = RULES
    config.GuardService.default_approval_rule = DEFAULT_RULE
    async with running_hub(config) as app:
        services = [new_service(config, app, tmp, url=url, token=token) for url in urls]
        try:
            await asyncio.gather(*(asyncio.to_thread(s.init_components) for s in services))
            for service in services:
                service.listen()
            base = public_url(app) + f"services/{SERVICE}/"
            yield Guard(app, services[0], base, tmp, replicas=services[1:])
        finally:
            for service in services:
                if hasattr(service, "notifier"):
                    await service.notifier.drain()
                service.close()


@pytest.fixture(scope="module")
def replicas(guard: Guard) -> tuple[Any, Any]:
    """Replicas A and B."""
    return guard.service, guard.replicas[0]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def people(guard: Guard) -> dict[str, Client]:
    """A requester (team risk: features needs a grant), three reviewers and an admin."""
    names = ("alice", "bob", "carol", "dave", "admin")
    roles = (("data-scientist",), ("reviewer",), ("reviewer",), ("reviewer",), ("admin",))
    clients = [await user_client(guard, *r, teams=("risk",)) for r in roles]
    return dict(zip(names, clients, strict=True))


async def test_both_replicas_started_together_on_one_catalog(
    replicas: tuple[Any, Any], people: dict[str, Client]
) -> None:
    """Started at once on empty databases, both replicas list the catalog once, identically."""
    listings = [
        (await acall(service, people["admin"], "GET", "api/v1/datasets"))["datasets"]
        for service in replicas
    ]
    names = [[d["name"] for d in listing] for listing in listings]
    assert names[0] == names[1] == sorted(CATALOG["datasets"])
    assert replicas[0].catalog.generation() == replicas[1].catalog.generation()


async def test_concurrent_requests_through_both_replicas_are_all_kept(
    guard: Guard, replicas: tuple[Any, Any]
) -> None:
    """Requests created at once through both replicas: each kept once, unique ids, listed by both."""
    client = await user_client(guard, teams=("risk",))
    payload = {**FEATURES, "duration_seconds": 600, "reason": "many at once"}
    answers = await arace(
        [
            partial(call, replicas[n % 2], client, "POST", "api/v1/requests", json=payload)
            for n in range(CONCURRENT_REQUESTS)
        ]
    )
    assert statuses(answers) == [201] * CONCURRENT_REQUESTS
    created = [answer.json()["id"] for answer in answers]
    assert len(set(created)) == CONCURRENT_REQUESTS
    for service in replicas:
        listed = (await acall(service, client, "GET", "api/v1/requests"))["requests"]
        assert sorted(r["id"] for r in listed) == sorted(created)
        assert {r["status"] for r in listed} == {"pending"}
    # Each replica reads what the other one created.
    for n, request_id in enumerate(created[:4]):
        other = replicas[(n + 1) % 2]
        fetched = await acall(other, client, "GET", f"api/v1/requests/{request_id}")
        assert fetched["id"] == request_id
    counted = elevation_events(replicas[1], set(created))
    assert counted == Counter({(request_id, "request"): 1 for request_id in created})


async def test_one_needed_approval_raced_on_both_replicas(
    replicas: tuple[Any, Any], people: dict[str, Client]
) -> None:
    """Two approvers at once on two replicas, one approval needed: one 200, one 409, one grant."""
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    winners: dict[str, str] = {}
    for round_ in range(ROUNDS):
        request = await ask(replicas[round_ % 2], alice)
        answers = await arace(
            [
                decide_call(replicas[0], bob, request["id"]),
                decide_call(replicas[1], carol, request["id"]),
            ]
        )
        assert statuses(answers) == [200, 409]
        won = next(a.json() for a in answers if a.status_code == 200)
        assert won["status"] == "approved"
        for service in replicas:
            final = await acall(service, alice, "GET", f"api/v1/requests/{request['id']}")
            assert final["status"] == "approved"
            assert [a["approver"] for a in final["approvals"]] == [
                a["approver"] for a in won["approvals"]
            ]
            assert len(final["approvals"]) == 1
            grants = await grants_for(service, alice, request["id"])
            assert [g["id"] for g in grants] == [final["grant_id"]]
        winners[request["id"]] = won["approvals"][0]["approver"]
    assert elevation_events(replicas[0], set(winners)) == recorded_once(
        dict.fromkeys(winners, "approve")
    )
    # The approval recorded is the winner's, never the loser's.
    approvals = elevation_bodies(replicas[1], set(winners))
    assert {b["request_id"]: b["approver"] for b in approvals if b["event"] == "approve"} == winners


async def test_two_needed_approvals_raced_by_three_approvers(
    replicas: tuple[Any, Any], people: dict[str, Client]
) -> None:
    """Three approvers racing on two replicas for two approvals: two count, one grant, no third."""
    alice = people["alice"]
    approvers = [people["bob"], people["carol"], people["dave"]]
    for round_ in range(ROUNDS):
        request = await ask(replicas[round_ % 2], alice, **TWO_APPROVALS)
        assert request["required_approvals"] == 2
        answers = await arace(
            [
                decide_call(replicas[n % 2], approver, request["id"])
                for n, approver in enumerate(approvers)
            ]
        )
        assert statuses(answers) == [200, 200, 409]
        accepted = {
            approver.name: answer.json()
            for approver, answer in zip(approvers, answers, strict=True)
            if answer.status_code == 200
        }
        # One of the two accepted approvals left it pending, the other approved it.
        assert sorted(a["status"] for a in accepted.values()) == ["approved", "pending"]
        final = await acall(
            replicas[(round_ + 1) % 2], alice, "GET", f"api/v1/requests/{request['id']}"
        )
        assert final["status"] == "approved"
        assert sorted(a["approver"] for a in final["approvals"]) == sorted(accepted)
        grants = await grants_for(replicas[round_ % 2], alice, request["id"])
        assert [g["id"] for g in grants] == [final["grant_id"]]


async def test_one_approver_on_both_replicas_counts_once(
    replicas: tuple[Any, Any], people: dict[str, Client]
) -> None:
    """The same approver approving, or approving and denying, on both replicas at once counts once."""
    alice, bob = people["alice"], people["bob"]
    for round_ in range(ROUNDS):
        request = await ask(replicas[0], alice, **TWO_APPROVALS)
        # Odd rounds: approve on A and deny on B, which must not both stand.
        second = "deny" if round_ % 2 else "approve"
        answers = await arace(
            [
                decide_call(replicas[0], bob, request["id"]),
                decide_call(replicas[1], bob, request["id"], second),
            ]
        )
        assert statuses(answers) == [200, 409]
        final = await acall(replicas[1], alice, "GET", f"api/v1/requests/{request['id']}")
        assert [a["approver"] for a in final["approvals"]] == [bob.name]
        verdict = final["approvals"][0]["verdict"]
        assert final["status"] == {"approve": "pending", "deny": "denied"}[verdict]
        assert final["grant_id"] is None
        assert await grants_for(replicas[0], alice, request["id"]) == []


async def test_approve_cancel_and_deny_racing_end_in_one_state(
    replicas: tuple[Any, Any], people: dict[str, Client]
) -> None:
    """Approve, cancel and deny racing on two replicas: one wins, and the grant follows it."""
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    outcomes: dict[str, str] = {}
    for round_ in range(ROUNDS):
        request = await ask(replicas[round_ % 2], alice)
        path = f"api/v1/requests/{request['id']}"
        calls = [
            decide_call(replicas[0], bob, request["id"]),
            partial(call, replicas[1], alice, "POST", f"{path}/cancel"),
            decide_call(replicas[1], carol, request["id"], "deny"),
        ]
        # Alternate who is released first in the thread list.
        if round_ % 2:
            calls.reverse()
        answers = await arace(calls)
        assert statuses(answers) == [200, 409, 409]
        winner = next(a.json() for a in answers if a.status_code == 200)
        for service in replicas:
            final = await acall(service, alice, "GET", path)
            assert final["status"] == winner["status"]
            assert final["status"] in ("approved", "cancelled", "denied")
            grants = await grants_for(service, alice, request["id"])
            if final["status"] == "approved":
                assert [g["id"] for g in grants] == [final["grant_id"]]
            else:
                assert grants == []
                assert final["grant_id"] is None
        outcomes[request["id"]] = winner["status"]
    # The ledger has the winning change of each request, and nothing of the losers.
    event = {"approved": "approve", "cancelled": "cancel", "denied": "deny"}
    assert elevation_events(replicas[1], set(outcomes)) == recorded_once(
        {request_id: event[status] for request_id, status in outcomes.items()}
    )


async def approved_grant(replicas: tuple[Any, Any], alice: Client, bob: Client) -> dict[str, Any]:
    """A request for reading dataset:features made on A and approved on B; the approved request."""
    request = await ask(replicas[0], alice)
    approved = await acall(
        replicas[1],
        bob,
        "POST",
        f"api/v1/requests/{request['id']}/decision",
        json={"verdict": "approve", "comment": "ok"},
    )
    assert approved["status"] == "approved"
    return dict(approved)


async def test_a_revocation_raced_on_both_replicas_holds_on_both(
    guard: Guard, replicas: tuple[Any, Any], people: dict[str, Client]
) -> None:
    """Revocations racing on both replicas: one counts, and B refuses the grant at once."""
    alice = await user_client(guard, teams=("risk",))
    name = f"r-{secrets.token_hex(4)}.bin"
    folder = guard.tmp / "data" / "features"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(b"features")
    read = f"api/v1/datasets/features/objects/{name}"
    approved = await approved_grant(replicas, alice, people["bob"])
    for service in replicas:
        assert await may_read(service, alice)
        answer = await asyncio.to_thread(call, service, alice, "GET", read)
        assert answer.status_code == 200, answer.text
        assert answer.content == b"features"
    # An admin on A and the holder on B revoke it at the same moment: one revocation.
    revoke = f"api/v1/grants/{approved['grant_id']}/revoke"
    answers = await arace(
        [
            partial(
                call, replicas[0], people["admin"], "POST", revoke, json={"reason": "incident"}
            ),
            partial(call, replicas[1], alice, "POST", revoke, json={"reason": "done"}),
        ]
    )
    assert statuses(answers) == [200, 409]
    won = next(a.json() for a in answers if a.status_code == 200)
    assert not await may_read(replicas[1], alice)
    answer = await asyncio.to_thread(call, replicas[1], alice, "GET", read)
    assert answer.status_code == 403, answer.text
    assert not await may_read(replicas[0], alice)
    for service in replicas:
        (grant,) = await grants_for(service, alice, approved["id"])
        assert (grant["revoked_by"], grant["revoke_reason"]) == (
            won["revoked_by"],
            won["revoke_reason"],
        )


async def test_lock_on_one_replica_refuses_on_the_other(
    guard: Guard, replicas: tuple[Any, Any], people: dict[str, Client]
) -> None:
    """A lock made on B refuses the user on A at the next request; lifting it on A restores B."""
    alice = await user_client(guard)
    for service in replicas:
        assert await may_read(service, alice, "dataset:sales")
    lock = await acall(
        replicas[1],
        people["admin"],
        "POST",
        "api/v1/locks",
        json={"kind": "user", "value": alice.name, "reason": "phished"},
    )
    refused = await asyncio.to_thread(
        call,
        replicas[0],
        alice,
        "POST",
        "api/v1/decisions",
        json={"action": "dataset.read", "resource": "dataset:sales"},
    )
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["decision"]["lock_id"] == lock["id"]
    listing = await asyncio.to_thread(call, replicas[0], alice, "GET", "api/v1/requests")
    assert listing.status_code == 403
    await acall(replicas[0], people["admin"], "DELETE", f"api/v1/locks/{lock['id']}")
    assert await may_read(replicas[1], alice, "dataset:sales")
    lifted = await asyncio.to_thread(
        call, replicas[1], people["admin"], "DELETE", f"api/v1/locks/{lock['id']}"
    )
    assert lifted.status_code == 409


async def test_catalog_changes_on_one_replica_reach_the_other(
    replicas: tuple[Any, Any], people: dict[str, Client]
) -> None:
    """A dataset created, replaced and deleted on one replica is seen so by the other's listing."""
    admin = people["admin"]
    path = "api/v1/datasets/scratch-r"
    fields = {"team": "analytics", "sensitivity": "internal", "environment": "dev"}
    assert "scratch-r" not in dataset_names(
        await acall(replicas[1], admin, "GET", "api/v1/datasets")
    )
    await acall(replicas[0], admin, "PUT", path, json=fields)
    assert "scratch-r" in dataset_names(await acall(replicas[1], admin, "GET", "api/v1/datasets"))
    await acall(replicas[1], admin, "PUT", path, json={**fields, "description": "from B"})
    assert (await acall(replicas[0], admin, "GET", path))["description"] == "from B"
    await acall(replicas[0], admin, "DELETE", path)
    assert "scratch-r" not in dataset_names(
        await acall(replicas[1], admin, "GET", "api/v1/datasets")
    )
    for method in ("GET", "DELETE"):
        answer = await asyncio.to_thread(call, replicas[1], admin, method, path)
        assert answer.status_code == 404, answer.text


async def test_a_decision_on_b_uses_the_catalog_as_changed_on_a(
    replicas: tuple[Any, Any], people: dict[str, Client]
) -> None:
    """B decides on the sensitivity A just set, and not at all on a dataset A deleted."""
    admin, alice = people["admin"], people["alice"]
    path = "api/v1/datasets/scratch-d"
    fields = {"team": "analytics", "sensitivity": "internal", "environment": "dev"}
    await acall(replicas[0], admin, "PUT", path, json=fields)
    assert await may_read(replicas[1], alice, "dataset:scratch-d")
    await acall(replicas[0], admin, "PUT", path, json={**fields, "sensitivity": "restricted"})
    assert not await may_read(replicas[1], alice, "dataset:scratch-d")
    await acall(replicas[0], admin, "PUT", path, json=fields)
    assert await may_read(replicas[1], alice, "dataset:scratch-d")
    await acall(replicas[0], admin, "DELETE", path)
    assert not await may_read(replicas[1], alice, "dataset:scratch-d")


async def test_an_ask_on_b_uses_the_catalog_as_changed_on_a(
    replicas: tuple[Any, Any], people: dict[str, Client]
) -> None:
    """An ask on B takes the sensitivity A just set (the stricter rule), and a deletion on A."""
    admin, alice = people["admin"], people["alice"]
    path = "api/v1/datasets/scratch-s"
    fields = {"team": "analytics", "sensitivity": "internal", "environment": "dev"}
    await acall(replicas[0], admin, "PUT", path, json=fields)
    # B loads the catalog as it is now.
    assert "scratch-s" in dataset_names(await acall(replicas[1], admin, "GET", "api/v1/datasets"))
    await acall(replicas[0], admin, "PUT", path, json={**fields, "sensitivity": "restricted"})
    request = await ask(replicas[1], alice, action="dataset.read", resource="dataset:scratch-s")
    assert request["sensitivity"] == "restricted"
    assert request["required_approvals"] == 2
    await acall(replicas[0], admin, "DELETE", path)
    payload = {"action": "dataset.read", "resource": "dataset:scratch-s"}
    body = {**payload, "duration_seconds": 600, "reason": "gone"}
    answer = await asyncio.to_thread(call, replicas[1], alice, "POST", "api/v1/requests", json=body)
    assert answer.status_code == 400, answer.text
    assert "Unknown resource" in answer.json()["error"]["message"]


async def test_dropped_database_connections_cost_no_request(
    replicas: tuple[Any, Any], people: dict[str, Client], postgres_cluster: Any
) -> None:
    """After PostgreSQL drops every connection, the next requests on both replicas succeed."""
    alice, admin = people["alice"], people["admin"]
    decision = {"action": "dataset.read", "resource": "dataset:sales"}
    for service in replicas:  # every store and the ledger have pooled connections
        await acall(service, alice, "POST", "api/v1/decisions", json=decision)
        await acall(service, admin, "GET", "api/v1/datasets")
    assert drop_connections(postgres_cluster, replicas[0].db_url, replicas[0].ledger.url) > 0
    for service in replicas:
        for method, path, client, body in (
            ("POST", "api/v1/decisions", alice, decision),
            ("GET", "api/v1/requests", alice, None),
            ("GET", "api/v1/datasets", admin, None),
        ):
            answer = await asyncio.to_thread(call, service, client, method, path, json=body)
            assert answer.status_code == 200, (method, path, answer.text)


async def test_the_shared_ledger_is_one_chain(
    guard: Guard, replicas: tuple[Any, Any], people: dict[str, Client]
) -> None:
    """Decisions recorded at once by both replicas: each once, in one gapless, verified chain."""
    client = await user_client(guard)
    body = {"action": "dataset.read", "resource": "dataset:sales"}
    answers = await arace(
        [
            partial(call, replicas[n % 2], client, "POST", "api/v1/decisions", json=body)
            for n in range(CONCURRENT_DECISIONS)
        ]
    )
    assert statuses(answers) == [200] * CONCURRENT_DECISIONS
    correlations = {answer.json()["correlation_id"] for answer in answers}
    assert len(correlations) == CONCURRENT_DECISIONS

    replicas[0].ledger.checkpoint()
    report = replicas[1].ledger.verify()
    assert report.unsigned_tail == 0
    records = [line for line in export_lines(replicas[1].ledger) if line.get("type") == "record"]
    assert [line["seq"] for line in records] == list(range(1, len(records) + 1))
    for before, after in itertools.pairwise(records):
        assert after["prev"] == before["hash"]
    assert records[report.records - 1]["hash"] == report.head
    accesses = [
        line["record"]["body"]
        for line in records
        if line["record"]["kind"] == "access" and line["record"].get("actor") == client.name
    ]
    assert len(accesses) == CONCURRENT_DECISIONS
    # The hub's own records (logins, second factors) are in the same chain.
    kinds = {line["record"]["kind"] for line in records}
    assert {"login", "access", "elevation", "lock"} <= kinds
