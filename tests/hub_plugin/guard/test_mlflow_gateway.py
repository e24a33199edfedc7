"""The model-registry gateway with the real MLflow client against a real tracking server.

Every call goes through the hub's proxy to the guard service, is decided by the
default policies as one of the demo roles (data-scientist, ml-engineer, reviewer,
admin) and, if allowed, forwarded to ``mlflow server`` with the service's own
credentials.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from .conftest import Client, Guard, age_mfa, server_client
from .mlflow_fixtures import Person, mlflow_guard, mlflow_server, person
from .witnesses import ledger_bodies

__all__ = ["mlflow_guard", "mlflow_server"]

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    # MLflow's own schema inference warns about its internal types when pyfunc loads.
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning"),
    # Stages are deprecated in MLflow 3 but still served; the gateway decides them.
    pytest.mark.filterwarnings("ignore:.*transition_model_version_stage.*:FutureWarning"),
]


def tiny_model() -> Any:
    """A python-function model small enough to log in a test."""
    import mlflow

    class Lengths(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
        def predict(self, model_input: list[str]) -> list[int]:
            return [len(str(x)) for x in model_input]

    return Lengths()


def log_and_register(name: str) -> Any:
    """Log the tiny model and register it as a new version of ``name`` (client code)."""
    import mlflow

    info = mlflow.pyfunc.log_model(name="tiny", python_model=tiny_model(), pip_requirements=[])
    return mlflow.register_model(info.model_uri, name)


def rest_error(work: Any) -> Any:
    """Run client code that must fail; return the RestException it raised."""
    from mlflow.exceptions import RestException

    try:
        work()
    except RestException as error:
        return error
    raise AssertionError("the call was not refused")


def model_name() -> str:
    """A fresh registered-model name."""
    return f"m-{secrets.token_hex(4)}"


async def test_an_ml_engineer_logs_registers_and_loads_a_model(mlflow_guard: Guard) -> None:
    """bob (ml-engineer) logs, registers and loads a model with the unmodified client."""
    import mlflow

    bob = await person(mlflow_guard, "ml-engineer", "ml-platform")
    name = model_name()
    version = await bob.run(lambda: log_and_register(name))
    assert version.version == "1"
    model = await bob.run(lambda: mlflow.pyfunc.load_model(f"models:/{name}/1"))
    assert list(model.predict(["ab", "abc"])) == [2, 3]
    records = ledger_bodies(mlflow_guard, "access", bob.name)
    actions = {(r["action"], r["allowed"]) for r in records}
    assert ("model.register", True) in actions
    assert ("model.export", True) in actions


async def team(guard: Guard) -> dict[str, Person]:
    """The demo's roles as fresh users: two ml-engineers, a data scientist, a reviewer, an admin."""
    return {
        "bob": await person(guard, "ml-engineer", "ml-platform"),
        "frank": await person(guard, "ml-engineer", "ml-platform"),
        "alice": await person(guard, "data-scientist", "analytics"),
        "carol": await person(guard, "reviewer", "risk"),
        "dave": await person(guard, "admin", "ml-platform"),
    }


def client() -> Any:
    """An MlflowClient on the current tracking URI (the gateway)."""
    from mlflow import MlflowClient

    return MlflowClient()


async def test_a_data_scientist_registers_but_needs_export_to_load(mlflow_guard: Guard) -> None:
    """alice registers in her team; loading needs model.export, and the denial says how."""
    import mlflow

    alice = await person(mlflow_guard, "data-scientist", "analytics")
    name = model_name()
    await alice.run(lambda: log_and_register(name))
    found = await alice.run(lambda: client().get_registered_model(name))
    tags = found.tags
    assert tags["nbguard.team"] == "analytics"
    assert tags["nbguard.owner"] == alice.name
    error = await alice.run(
        lambda: rest_error(lambda: mlflow.pyfunc.load_model(f"models:/{name}/1"))
    )
    assert error.error_code == "PERMISSION_DENIED"
    assert "model.export" in error.message
    assert "would be allowed with" in error.message
    version = await alice.run(lambda: client().get_model_version(name, "1"))
    assert version.tags["nbguard.registered_by"] == alice.name


@pytest.mark.parametrize("role", ["reviewer", "admin"])
async def test_reviewers_and_admins_see_models_but_do_not_change_or_load_them(
    mlflow_guard: Guard, role: str
) -> None:
    """A reviewer or admin reads and lists a model; creating, promoting and loading are denied."""
    import mlflow

    bob = await person(mlflow_guard, "ml-engineer", "ml-platform")
    other = await person(mlflow_guard, role, "risk")
    name = model_name()
    await bob.run(lambda: log_and_register(name))
    assert (await other.run(lambda: client().get_registered_model(name))).name == name
    listed = await other.run(lambda: client().search_registered_models(f"name = '{name}'"))
    assert [m.name for m in listed] == [name]
    denied = [
        lambda: client().create_registered_model(model_name()),
        lambda: client().set_registered_model_alias(name, "challenger", "1"),
        lambda: client().update_registered_model(name, description="mine now"),
        lambda: client().delete_registered_model(name),
        lambda: mlflow.pyfunc.load_model(f"models:/{name}/1"),
    ]
    for work in denied:
        error = await other.run(lambda work=work: rest_error(work))
        assert error.error_code == "PERMISSION_DENIED", error.message


async def test_promotion_follows_the_policy(mlflow_guard: Guard) -> None:
    """Staging by another ml-engineer only; champion (prod) needs an approved grant; never self."""
    people = await team(mlflow_guard)
    bob, frank, alice, carol = (people[n] for n in ("bob", "frank", "alice", "carol"))
    name = model_name()
    await bob.run(lambda: log_and_register(name))

    async def stage(who: Person, to: str) -> Any:
        return await who.run(
            lambda: rest_error(lambda: client().transition_model_version_stage(name, "1", to))
        )

    error = await stage(bob, "Staging")
    assert "sod.no-self-promotion" in error.message
    assert (await stage(alice, "Staging")).error_code == "PERMISSION_DENIED"
    moved = await frank.run(lambda: client().transition_model_version_stage(name, "1", "Staging"))
    assert moved.current_stage == "Staging"

    def champion() -> Any:
        return client().set_registered_model_alias(name, "champion", "1")

    error = await frank.run(lambda: rest_error(champion))
    assert "grant" in error.message, error.message
    # frank asks for the grant the denial named; carol (reviewer) approves it.
    asked = await Client(mlflow_guard, frank.token, frank.name).call(
        "POST",
        "api/v1/requests",
        json={
            "action": "model.promote",
            "resource": f"modelversion:{name}/1",
            "duration_seconds": 3600,
            "reason": "release",
        },
    )
    assert asked.status_code == 201, asked.text
    approved = await Client(mlflow_guard, carol.token, carol.name).call(
        "POST", f"api/v1/requests/{asked.json()['id']}/decision", json={"verdict": "approve"}
    )
    assert approved.status_code == 200, approved.text
    # Prod also wants a fresh second factor: an hour-old one is refused, with the step-up page.
    await age_mfa(mlflow_guard, frank.name, 3600)
    stale = await frank.call(
        "POST",
        "api/2.0/mlflow/registered-models/alias",
        json={"name": name, "alias": "champion", "version": "1"},
    )
    assert stale.status_code == 403, stale.text
    assert "context.prod-fresh-mfa" in stale.json()["message"]
    assert "second factor within" in stale.json()["message"]
    assert stale.json()["step_up_url"].endswith("nbguard/mfa/step-up")
    await age_mfa(mlflow_guard, frank.name, 0)
    await frank.run(champion)
    assert (
        await frank.run(lambda: client().get_model_version_by_alias(name, "champion"))
    ).version == "1"
    # The registrant may not promote, even with the same grant.
    assert "sod.no-self-promotion" in (await bob.run(lambda: rest_error(champion))).message


async def test_reserved_tags_are_set_by_admins_only(mlflow_guard: Guard) -> None:
    """A registrant cannot lower a model's sensitivity with nbguard.* tags; an admin can raise it,
    and the model then disappears from a data scientist's searches."""
    alice = await person(mlflow_guard, "data-scientist", "analytics")
    dave = await person(mlflow_guard, "admin", "ml-platform")
    name = model_name()
    await alice.run(lambda: log_and_register(name))
    forged = [
        lambda: client().create_registered_model(
            model_name(), tags={"nbguard.sensitivity": "public"}
        ),
        lambda: client().set_registered_model_tag(name, "nbguard.sensitivity", "public"),
        lambda: client().set_registered_model_tag(name, "NBGuard.Team", "risk"),
        lambda: client().delete_registered_model_tag(name, "nbguard.team"),
        lambda: client().set_model_version_tag(name, "1", "nbguard.registered_by", "someone"),
    ]
    for work in forged:
        error = await alice.run(lambda work=work: rest_error(work))
        assert error.error_code == "PERMISSION_DENIED", error.message
    tags = (await alice.run(lambda: client().get_registered_model(name))).tags
    assert tags["nbguard.sensitivity"] == "confidential"
    await alice.run(lambda: client().set_registered_model_tag(name, "purpose", "churn"))

    await dave.run(
        lambda: client().set_registered_model_tag(name, "nbguard.sensitivity", "restricted")
    )
    error = await alice.run(lambda: rest_error(lambda: client().get_registered_model(name)))
    assert "context.restricted-data" in error.message or "no policy permits" in error.message
    listed = await alice.run(lambda: client().search_registered_models(f"name = '{name}'"))
    assert list(listed) == []
    versions = await alice.run(lambda: client().search_model_versions(f"name = '{name}'"))
    assert list(versions) == []


async def test_another_users_uploads_are_neither_readable_nor_registrable(
    mlflow_guard: Guard,
) -> None:
    """Only a logged model's author reads, changes or registers it until it is a version."""
    import mlflow

    alice = await person(mlflow_guard, "data-scientist", "analytics")
    bob = await person(mlflow_guard, "ml-engineer", "ml-platform")
    info = await alice.run(
        lambda: mlflow.pyfunc.log_model(name="tiny", python_model=tiny_model(), pip_requirements=[])
    )
    files = f"api/2.0/mlflow-artifacts/artifacts/0/models/{info.model_id}/artifacts"
    assert (await alice.call("GET", f"{files}/MLmodel")).status_code == 200
    for method, path in [
        ("GET", f"api/2.0/mlflow/logged-models/{info.model_id}"),
        ("GET", f"{files}/MLmodel"),
        ("PUT", f"{files}/MLmodel"),
    ]:
        response = await bob.call(method, path, data=b"x")
        assert response.status_code == 403, (path, response.text)
        assert response.json()["error_code"] == "PERMISSION_DENIED"
    error = await bob.run(
        lambda: rest_error(lambda: mlflow.register_model(info.model_uri, model_name()))
    )
    assert error.error_code == "PERMISSION_DENIED"
    finished = await alice.call("PUT", f"{files}/MLmodel", data=b"swapped")
    assert finished.status_code == 403, finished.text
    assert "finished" in finished.json()["message"]


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        pytest.param(
            "GET", "api/2.0/mlflow/experiments/search", 404, "ENDPOINT_NOT_FOUND", id="experiments"
        ),
        pytest.param("POST", "api/2.0/mlflow/runs/create", 404, "ENDPOINT_NOT_FOUND", id="runs"),
        pytest.param("GET", "api/2.0/mlflow/traces", 404, "ENDPOINT_NOT_FOUND", id="traces"),
        pytest.param(
            "GET",
            "ajax-api/2.0/mlflow/registered-models/search",
            404,
            "ENDPOINT_NOT_FOUND",
            id="ajax-api",
        ),
        pytest.param(
            "DELETE",
            "api/2.0/mlflow/registered-models/get",
            404,
            "ENDPOINT_NOT_FOUND",
            id="wrong-method",
        ),
        pytest.param(
            "POST", "api/2.0/mlflow/registered-models/rename", 403, "PERMISSION_DENIED", id="rename"
        ),
        pytest.param(
            "GET",
            "api/2.0/mlflow/registered-models/get?name=a%2Fb",
            400,
            "INVALID_PARAMETER_VALUE",
            id="slash-in-name",
        ),
        pytest.param(
            "GET",
            "api/2.0/mlflow/model-versions/get?name=a&version=-1",
            400,
            "INVALID_PARAMETER_VALUE",
            id="bad-version",
        ),
        pytest.param(
            "GET",
            "api/2.0/mlflow-artifacts/artifacts/0/runs/r1/artifacts/model.pkl",
            403,
            "PERMISSION_DENIED",
            id="run-artifact",
        ),
        pytest.param(
            "GET",
            "api/2.0/mlflow-artifacts/artifacts/0/models/m-0a/artifacts/%2e%2e/%2e%2e/x",
            400,
            "INVALID_PARAMETER_VALUE",
            id="dot-dot",
        ),
        pytest.param(
            "GET",
            "api/2.0/mlflow-artifacts/artifacts?path=..%2F..%2Fetc",
            400,
            "INVALID_PARAMETER_VALUE",
            id="dot-dot-listing",
        ),
        pytest.param(
            "PATCH",
            "api/2.0/mlflow/logged-models/m-0a/params",
            404,
            "ENDPOINT_NOT_FOUND",
            id="logged-model-params",
        ),
    ],
)
async def test_unknown_unsupported_and_malformed_calls_are_refused(
    mlflow_guard: Guard, method: str, path: str, status: int, code: str
) -> None:
    """Anything the gateway does not serve is refused in MLflow's error form, never forwarded."""
    bob = await person(mlflow_guard, "ml-engineer", "ml-platform")
    response = await bob.call(method, path, json={"name": "x", "new_name": "y"})
    assert response.status_code == status, response.text
    assert response.json()["error_code"] == code
    assert response.json()["message"]


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-token"),
        pytest.param({"Authorization": "Bearer not-a-token"}, id="forged-token"),
        pytest.param({"Authorization": "Basic YWxpY2U6YWxpY2U="}, id="basic-auth"),
    ],
)
async def test_calls_without_a_hub_token_are_unauthenticated(
    mlflow_guard: Guard, headers: dict[str, str]
) -> None:
    """No valid hub token: 401 UNAUTHENTICATED, before anything reaches the registry."""
    import asyncio

    import requests

    url = mlflow_guard.url("mlflow/api/2.0/mlflow/registered-models/search")
    response = await asyncio.to_thread(requests.get, url, headers=headers, timeout=30)
    assert response.status_code == 401, response.text
    assert response.json()["error_code"] == "UNAUTHENTICATED"


async def test_a_registry_that_is_down_is_503_not_500(mlflow_guard: Guard) -> None:
    """The tracking server unreachable: TEMPORARILY_UNAVAILABLE (503) in MLflow's form."""
    from .mlflow_server import free_port

    bob = await person(mlflow_guard, "ml-engineer", "ml-platform")
    upstream = mlflow_guard.service.mlflow.upstream
    saved, upstream.uri = upstream.uri, f"http://127.0.0.1:{free_port()}"
    try:
        for path in [
            "api/2.0/mlflow/registered-models/search",
            "api/2.0/mlflow/registered-models/get?name=fraud",
            "api/2.0/mlflow-artifacts/artifacts/0/models/m-0a/artifacts/MLmodel",
        ]:
            response = await bob.call("GET", path)
            assert response.status_code == 503, response.text
            assert response.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    finally:
        upstream.uri = saved


async def test_each_call_is_recorded_with_its_cell(mlflow_guard: Guard) -> None:
    """Allowed and denied calls are access records naming the cell that made them."""
    import json

    bob = await person(mlflow_guard, "ml-engineer", "ml-platform")
    carol = await person(mlflow_guard, "reviewer", "risk")
    name = model_name()
    await bob.run(lambda: log_and_register(name))
    cell = {"kernel_id": "k-mlflow", "cell_id": "c1", "seq": 3}
    headers = {"X-NBGuard-Cell": json.dumps(cell)}
    read = await carol.call(
        "GET", f"api/2.0/mlflow/registered-models/get?name={name}", headers=headers
    )
    assert read.status_code == 200, read.text
    uri = f"api/2.0/mlflow/model-versions/get-download-uri?name={name}&version=1"
    assert (await carol.call("GET", uri, headers=headers)).status_code == 403
    listed = await carol.call("GET", "api/2.0/mlflow/registered-models/search", headers=headers)
    assert listed.status_code == 200
    records = [r for r in ledger_bodies(mlflow_guard, "access", carol.name) if "cell" in r]
    assert [(r["action"], r["allowed"]) for r in records] == [
        ("model.read", True),
        ("model.export", False),
        ("model.list", True),
    ]
    assert records[0]["resource"] == f"model:{name}"
    assert records[1]["resource"] == f"modelversion:{name}/1"
    assert all(r["cell"]["kernel_id"] == "k-mlflow" for r in records)


async def test_an_ml_engineer_deletes_what_a_data_scientist_may_not(mlflow_guard: Guard) -> None:
    """Deleting a version or a model is model.delete: bob's team may, alice may not."""
    bob = await person(mlflow_guard, "ml-engineer", "ml-platform")
    alice = await person(mlflow_guard, "data-scientist", "analytics")
    name = model_name()
    await bob.run(lambda: log_and_register(name))
    await bob.run(lambda: log_and_register(name))
    for work in (
        lambda: client().delete_model_version(name, "2"),
        lambda: client().delete_registered_model(name),
    ):
        assert (
            await alice.run(lambda work=work: rest_error(work))
        ).error_code == "PERMISSION_DENIED"
    await bob.run(lambda: client().delete_model_version(name, "2"))
    await bob.run(lambda: client().delete_registered_model(name))
    error = await bob.run(lambda: rest_error(lambda: client().get_registered_model(name)))
    assert error.error_code == "RESOURCE_DOES_NOT_EXIST"


async def test_search_pages_hide_models_but_keep_the_page_token(mlflow_guard: Guard) -> None:
    """Paging a search one model at a time: the restricted one's page comes back empty, with
    the token, so a data scientist reaches every model they may list and no other."""
    alice = await person(mlflow_guard, "data-scientist", "analytics")
    dave = await person(mlflow_guard, "admin", "ml-platform")
    prefix = model_name()
    names = [f"{prefix}-a", f"{prefix}-b", f"{prefix}-c"]
    for name in names:
        await alice.run(lambda name=name: client().create_registered_model(name))
    hidden = names[1]
    await dave.run(
        lambda: client().set_registered_model_tag(hidden, "nbguard.sensitivity", "restricted")
    )
    pages: list[list[str]] = []
    token = ""
    while True:
        query = f"filter=name LIKE '{prefix}%'&max_results=1&order_by=name ASC"
        query += f"&page_token={token}" if token else ""
        answer = await alice.call("GET", f"api/2.0/mlflow/registered-models/search?{query}")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        pages.append([m["name"] for m in body["registered_models"]])
        token = body.get("next_page_token", "")
        if not token:
            break
    assert pages[:3] == [[names[0]], [], [names[2]]]
    assert [n for page in pages for n in page] == [names[0], names[2]]


async def test_files_are_served_only_from_the_logged_models_own_location(
    mlflow_guard: Guard,
) -> None:
    """A path naming the caller's model under another experiment, or a version whose model_id
    disagrees with its source, is refused."""
    import mlflow

    alice = await person(mlflow_guard, "data-scientist", "analytics")
    mine = await alice.run(
        lambda: mlflow.pyfunc.log_model(name="tiny", python_model=tiny_model(), pip_requirements=[])
    )
    other = await alice.run(
        lambda: mlflow.pyfunc.log_model(name="tiny", python_model=tiny_model(), pip_requirements=[])
    )
    elsewhere = f"api/2.0/mlflow-artifacts/artifacts/7/models/{mine.model_id}/artifacts/MLmodel"
    response = await alice.call("GET", elsewhere)
    assert response.status_code == 403, response.text
    name = model_name()
    await alice.run(lambda: client().create_registered_model(name))
    mixed = {"name": name, "source": f"models:/{mine.model_id}", "model_id": other.model_id}
    response = await alice.call("POST", "api/2.0/mlflow/model-versions/create", json=mixed)
    assert response.status_code == 403, response.text
    assert response.json()["error_code"] == "PERMISSION_DENIED"


async def test_the_model_catalog_lists_what_each_role_may_see_and_do(mlflow_guard: Guard) -> None:
    """GET /api/v1/models: listable models only, each with the actions allowed now."""
    alice = await person(mlflow_guard, "data-scientist", "analytics")
    bob = await person(mlflow_guard, "ml-engineer", "ml-platform")
    frank = await person(mlflow_guard, "ml-engineer", "ml-platform")
    dave = await person(mlflow_guard, "admin", "ml-platform")
    mine, theirs = model_name(), model_name()
    await alice.run(lambda: client().create_registered_model(mine))
    await bob.run(lambda: log_and_register(theirs))
    await frank.run(lambda: client().set_registered_model_alias(theirs, "challenger", "1"))
    await dave.run(
        lambda: client().set_registered_model_tag(theirs, "nbguard.sensitivity", "restricted")
    )

    async def catalog(who: Person) -> dict[str, Any]:
        found: dict[str, Any] = {}
        token = ""
        while True:
            query = f"?max_results=1000&page_token={token}" if token else "?max_results=1000"
            answer = await Client(mlflow_guard, who.token, who.name).call(
                "GET", f"api/v1/models{query}"
            )
            assert answer.status_code == 200, answer.text
            found |= {m["name"]: m for m in answer.json()["models"]}
            token = answer.json().get("next_page_token", "")
            if not token:
                return found

    seen_by_alice = await catalog(alice)
    assert theirs not in seen_by_alice  # restricted: data scientists do not list it
    assert seen_by_alice[mine]["actions"] == ["model.read", "model.register"]
    assert seen_by_alice[mine]["team"] == "analytics"
    seen_by_bob = await catalog(bob)
    assert seen_by_bob[theirs]["aliases"] == {"challenger": "1"}
    assert seen_by_bob[theirs]["sensitivity"] == "restricted"
    # Restricted models are read and exported only from a trusted device on the
    # corporate network (context.restricted-data); bob may still register versions.
    assert seen_by_bob[theirs]["actions"] == ["model.register", "model.delete"]
    bad = await Client(mlflow_guard, bob.token, bob.name).call("GET", "api/v1/models?max_results=0")
    assert bad.status_code == 400


async def test_a_servers_environment_is_all_the_client_needs(mlflow_guard: Guard) -> None:
    """With only the MLFLOW_* variables a spawned server got, the client logs, registers and
    loads through the gateway, acting from the server's environment."""
    import mlflow

    server = await server_client(mlflow_guard, "ml-engineer", teams=("ml-platform",))
    env = mlflow_guard.hub.users[server.name].spawner.get_env()
    assert env["MLFLOW_TRACKING_TOKEN"] == server.token
    assert env["MLFLOW_TRACKING_URI"] == mlflow_guard.service.service_url + (
        mlflow_guard.service.service_prefix + "mlflow"
    )
    notebook = Person(
        mlflow_guard, server.name, env["MLFLOW_TRACKING_TOKEN"], env["MLFLOW_TRACKING_URI"]
    )
    name = model_name()
    await notebook.run(lambda: log_and_register(name))
    model = await notebook.run(lambda: mlflow.pyfunc.load_model(f"models:/{name}/1"))
    assert list(model.predict(["abcd"])) == [4]
    me = await server.call("GET", "api/v1/me")
    assert me.json()["environment"] == "train"
