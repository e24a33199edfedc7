"""Reads decided early, beside the registry call, on the gateway's guess of the entity.

A read is decided on what the registry returns. With attributes cached
(``GuardService.mlflow_cache_seconds``), the gateway starts the decision on the
entity it last decided for that model or version while the registry answers; the
early decision stands only when the answer shows the same entity. The attacker's
angle: tags changed in MLflow behind the gateway's back (by an admin's pipeline,
say) must count at once, whatever was guessed.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import requests

from .conftest import Guard
from .mlflow_fixtures import gateway_guard, mlflow_server, person
from .mlflow_server import MLflowServer
from .witnesses import ledger_bodies

__all__ = ["mlflow_server"]

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cached_guard(
    tmp_path_factory: pytest.TempPathFactory, mlflow_server: MLflowServer
) -> AsyncIterator[Guard]:
    """The guard in front of the session's MLflow server, attributes cached a minute."""
    async with gateway_guard(tmp_path_factory, mlflow_server, cache_seconds=60.0) as env:
        yield env


def direct(server: MLflowServer, path: str, body: dict[str, Any]) -> None:
    """A registry call straight to MLflow, behind the gateway's back."""
    answer = requests.post(f"{server.url}/api/2.0/mlflow/{path}", json=body, timeout=60)
    answer.raise_for_status()


def analytics_model(server: MLflowServer) -> str:
    """A confidential model of team analytics with one version, made directly in MLflow."""
    name = f"early-{secrets.token_hex(4)}"
    tags = {"team": "analytics", "sensitivity": "confidential", "environment": "train"}
    direct(
        server,
        "registered-models/create",
        {"name": name, "tags": [{"key": f"nbguard.{k}", "value": v} for k, v in tags.items()]},
    )
    logged = requests.post(
        f"{server.url}/api/2.0/mlflow/logged-models",
        json={"experiment_id": "0", "name": name},
        timeout=60,
    )
    logged.raise_for_status()
    model_id = logged.json()["model"]["info"]["model_id"]
    direct(
        server,
        "model-versions/create",
        {"name": name, "source": f"models:/{model_id}", "model_id": model_id},
    )
    return name


def set_sensitivity(server: MLflowServer, name: str, value: str) -> None:
    """Change a model's sensitivity in MLflow directly."""
    direct(
        server,
        "registered-models/set-tag",
        {"name": name, "key": "nbguard.sensitivity", "value": value},
    )


def reads(guard: Guard, user: str) -> list[bool]:
    """The outcomes of ``user``'s recorded ``model.read`` decisions, oldest first."""
    return [
        r["allowed"] for r in ledger_bodies(guard, "access", user) if r["action"] == "model.read"
    ]


async def test_a_guess_that_holds_gives_one_record_per_read(
    cached_guard: Guard, mlflow_server: MLflowServer
) -> None:
    """Repeated reads of a model and of a version: each is answered and recorded once."""
    alice = await person(cached_guard, "data-scientist", "analytics")
    name = analytics_model(mlflow_server)
    for path in (
        f"registered-models/get?name={name}",
        f"model-versions/get?name={name}&version=1",
    ):
        for _ in range(3):
            answer = await alice.call("GET", f"api/2.0/mlflow/{path}")
            assert answer.status_code == 200, answer.text
    assert reads(cached_guard, alice.name) == [True] * 6


async def test_tags_changed_behind_the_gateway_count_at_once(
    cached_guard: Guard, mlflow_server: MLflowServer
) -> None:
    """A model made restricted in MLflow directly is refused on the very next read, though
    the guess allowed it; made confidential again, it is readable again at once, though the
    guess refused it. Each changed read records the guess's decision and the one that counts."""
    alice = await person(cached_guard, "data-scientist", "analytics")
    name = analytics_model(mlflow_server)
    path = f"api/2.0/mlflow/registered-models/get?name={name}"
    assert (await alice.call("GET", path)).status_code == 200
    set_sensitivity(mlflow_server, name, "restricted")
    refused = await alice.call("GET", path)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error_code"] == "PERMISSION_DENIED"
    assert "registered_model" not in refused.json()  # nothing of the answer is sent on
    assert (await alice.call("GET", path)).status_code == 403
    set_sensitivity(mlflow_server, name, "confidential")
    again = await alice.call("GET", path)
    assert again.status_code == 200, again.text
    assert again.json()["registered_model"]["name"] == name
    assert reads(cached_guard, alice.name) == [True, True, False, False, False, True]


async def test_a_read_of_a_missing_model_is_404_after_an_early_decision(
    cached_guard: Guard, mlflow_server: MLflowServer
) -> None:
    """A model deleted behind the gateway: the guess was allowed, the answer is MLflow's 404."""
    alice = await person(cached_guard, "data-scientist", "analytics")
    name = analytics_model(mlflow_server)
    path = f"api/2.0/mlflow/registered-models/get?name={name}"
    assert (await alice.call("GET", path)).status_code == 200
    api = f"{mlflow_server.url}/api/2.0/mlflow"
    requests.delete(
        f"{api}/registered-models/delete", json={"name": name}, timeout=60
    ).raise_for_status()
    gone = await alice.call("GET", path)
    assert gone.status_code == 404, gone.text
    assert gone.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
