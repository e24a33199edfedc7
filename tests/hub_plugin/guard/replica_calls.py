"""Calling two guard-service replicas, racing them, and reading what they recorded.

Used by ``test_replicas.py``: each call goes to one replica at its own address
with a client's hub token; a race runs its calls in threads released together
by a barrier.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

import requests

from ..conftest import export_lines
from .conftest import Client

#: What ``ask`` asks for by default: reading a confidential dataset of another team.
FEATURES = {"action": "dataset.read", "resource": "dataset:features"}


def call(service: Any, client: Client, method: str, path: str, **kw: Any) -> requests.Response:
    """Call ``path`` on one replica, at its own address, with the client's token."""
    headers = {"Authorization": f"token {client.token}", **kw.pop("headers", {})}
    url = service.service_url + service.service_prefix + path
    return requests.request(method, url, headers=headers, timeout=60, **kw)


async def acall(service: Any, client: Client, method: str, path: str, **kw: Any) -> Any:
    """``call`` from the event loop (the replicas answer on this loop); the JSON body."""
    response = await asyncio.to_thread(call, service, client, method, path, **kw)
    assert response.status_code < 300, response.text
    return response.json() if response.content else None


def race(calls: list[Callable[[], requests.Response]]) -> list[requests.Response]:
    """Run every call in its own thread, all released at once; the answers in call order."""
    barrier = threading.Barrier(len(calls))
    answers: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        try:
            answers[index] = calls[index]()
        except BaseException as error:  # re-raised below, not lost in a thread
            answers[index] = error

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
    return answers


async def arace(calls: list[Callable[[], requests.Response]]) -> list[requests.Response]:
    """``race`` without blocking the event loop the replicas serve on."""
    return await asyncio.to_thread(race, calls)


def statuses(answers: list[requests.Response]) -> list[int]:
    """The HTTP statuses, sorted; 409s must be JSON conflicts, never 500s."""
    for answer in answers:
        assert answer.status_code in (200, 201, 409), answer.text
        if answer.status_code == 409:
            assert answer.json()["error"]["code"] == "conflict", answer.text
    return sorted(answer.status_code for answer in answers)


def decide_call(
    service: Any, client: Client, request_id: str, verdict: str = "approve"
) -> Callable[[], requests.Response]:
    """A decision on a request through one replica, ready to race."""
    body = {"verdict": verdict, "comment": "checked"}
    return partial(
        call, service, client, "POST", f"api/v1/requests/{request_id}/decision", json=body
    )


async def ask(service: Any, client: Client, **body: Any) -> dict[str, Any]:
    """A new pending request through one replica (default: reading dataset:features)."""
    payload = {**(body or FEATURES), "duration_seconds": 3600, "reason": "replica test"}
    response = await asyncio.to_thread(
        call, service, client, "POST", "api/v1/requests", json=payload
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def grants_for(service: Any, client: Client, request_id: str) -> list[dict[str, Any]]:
    """The grants (active or not) the client holds from one request, as a replica lists them."""
    grants = (await acall(service, client, "GET", "api/v1/grants?active=0"))["grants"]
    return [g for g in grants if g["request_id"] == request_id]


def elevation_bodies(service: Any, request_ids: set[str]) -> list[dict[str, Any]]:
    """The bodies of the ``elevation`` ledger records about ``request_ids``, in order."""
    return [
        line["record"]["body"]
        for line in export_lines(service.ledger)
        if line.get("type") == "record"
        and line["record"]["kind"] == "elevation"
        and line["record"]["body"]["request_id"] in request_ids
    ]


def elevation_events(service: Any, request_ids: set[str]) -> Counter[tuple[str, str]]:
    """How many ``elevation`` ledger records each (request id, event) pair has."""
    return Counter((b["request_id"], b["event"]) for b in elevation_bodies(service, request_ids))


def recorded_once(events: dict[str, str]) -> Counter[tuple[str, str]]:
    """What ``elevation_events`` must be when each request has one ``request`` record and one
    record of the event given for it."""
    return Counter(
        {
            key: 1
            for request_id, event in events.items()
            for key in ((request_id, "request"), (request_id, event))
        }
    )


async def may_read(service: Any, client: Client, resource: str = "dataset:features") -> bool:
    """The decision of one replica on the client reading ``resource``."""
    decision = await asyncio.to_thread(
        call,
        service,
        client,
        "POST",
        "api/v1/decisions",
        json={"action": "dataset.read", "resource": resource},
    )
    assert decision.status_code in (200, 403), decision.text
    return decision.status_code == 200 and bool(decision.json()["allowed"])


def dataset_names(listing: dict[str, Any]) -> set[str]:
    """The names in a catalog listing."""
    return {d["name"] for d in listing["datasets"]}


def drop_connections(cluster: Any, *urls: str) -> int:
    """Terminate every server process connected to the databases of ``urls``, as a
    PostgreSQL restart or failover would; return how many there were."""
    import psycopg
    from sqlalchemy.engine import make_url

    names = [make_url(url).database for url in urls]
    with psycopg.connect(
        host="127.0.0.1", port=cluster.port, user=cluster.user, dbname="postgres", autocommit=True
    ) as connection:
        killed = connection.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = ANY(%s) AND pid <> pg_backend_pid()",
            (names,),
        ).fetchone()
    return int(killed[0]) if killed else 0
