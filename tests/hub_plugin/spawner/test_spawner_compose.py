"""The mixin composes with spawner classes: KubeSpawner's pod, names, settings, secrets."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from jupyterhub.spawner import LocalProcessSpawner, SimpleLocalProcessSpawner
from traitlets import TraitError
from traitlets.config import Config

from nbguard.errors import ConfigError
from nbguard.hub_plugin.spawner import PolicySpawnerMixin, guarded_spawner
from nbguard.hub_plugin.spawner_refusal import SpawnRefused

from .conftest import GRANTS, granting, logged_in, spawn_form, stop_server, wait_for

#: The hub is shared by the module, so its tests share one event loop.
on_hub_loop = pytest.mark.asyncio(loop_scope="module")

PROFILES = [
    {"display_name": "Development", "slug": "dev", "default": True},
    {
        "display_name": "Production",
        "slug": "prod",
        "kubespawner_override": {"image": "registry.example/prod:1"},
    },
]


#: A kubeconfig naming a cluster that is not there: KubeSpawner reads one when it
#: is created, and building a pod manifest never connects to it.
NO_CLUSTER = """apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: none, user: {token: not-a-cluster}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


@pytest_asyncio.fixture(loop_scope="module")
async def no_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """The Kubernetes client's configuration is :data:`NO_CLUSTER`; its clients are closed after."""
    from kubernetes_asyncio.config import kube_config
    from kubespawner import clients

    path = tmp_path / "kubeconfig"
    path.write_text(NO_CLUSTER)
    # The client reads $KUBECONFIG once, at import: point its default at our file.
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    yield
    for key, client in list(clients._client_cache.items()):
        await client.api_client.close()
        del clients._client_cache[key]


def kube_spawner(app: Any, name: str, **traits: Any) -> Any:
    """A guarded KubeSpawner for ``name`` on the test hub, with no cluster behind it."""
    from kubespawner import KubeSpawner

    cls = granting(KubeSpawner)
    user = app.users[name]
    return cls(
        _mock=True,
        user=user,
        hub=app.hub,
        authenticator=app.authenticator,
        api_token="server-token-of-" + name,
        oauth_client_id=f"jupyterhub-user-{name}",
        namespace="jhub",
        profile_list=PROFILES,
        config=app.config,
        **traits,
    )


def container_env(manifest: Any) -> dict[str, str]:
    """The notebook container's environment in a pod manifest."""
    container = manifest.spec.containers[0]
    return {item.name: item.value for item in container.env if item.value is not None}


@pytest.mark.parametrize(
    ("name", "base"),
    [
        pytest.param("simple", SimpleLocalProcessSpawner, id="simple"),
        pytest.param("localprocess", LocalProcessSpawner, id="localprocess"),
        pytest.param(LocalProcessSpawner, LocalProcessSpawner, id="class"),
    ],
)
def test_guarded_spawner_resolves_names_and_classes(name: Any, base: type) -> None:
    """Entry-point names and classes give NBGuard<Base> with the mixin first, once per base."""
    cls = guarded_spawner(name)
    assert cls.__name__ == f"NBGuard{base.__name__}"
    assert cls.__mro__[1:3] == (PolicySpawnerMixin, base)
    assert guarded_spawner(name) is cls
    assert guarded_spawner(cls) is cls


def test_kubespawner_composes_by_name() -> None:
    """KubeSpawner (which registers no entry point) composes by its import path."""
    from kubespawner import KubeSpawner

    assert issubclass(guarded_spawner("kubespawner.KubeSpawner"), KubeSpawner)


@pytest.mark.parametrize(
    "base",
    [pytest.param("no-such-spawner", id="unknown-name"), pytest.param(dict, id="not-spawner")],
)
def test_guarded_spawner_refuses_what_is_not_a_spawner(base: Any) -> None:
    """An unknown entry-point name or a non-Spawner class is a ConfigError."""
    with pytest.raises(ConfigError):
        guarded_spawner(base)


@pytest.mark.parametrize(
    ("trait", "value", "message"),
    [
        pytest.param("default_profile", "prod x", "PolicySpawnerMixin.default_profile", id="slug"),
        pytest.param("max_lifetime", 0, "PolicySpawnerMixin.max_lifetime", id="zero"),
        pytest.param(
            "profile_max_lifetime", {"prod": -5}, "profile_max_lifetime['prod']", id="negative"
        ),
        pytest.param("profile_max_lifetime", {"a b": 60}, "not a profile slug", id="bad-slug"),
        pytest.param("env_names", {"token": "X"}, "unknown key(s) token", id="unknown-key"),
        pytest.param("env_names", {"profile": "A-B"}, "not a variable name", id="bad-name"),
        pytest.param(
            "env_names", {"profile": "JUPYTERHUB_API_TOKEN"}, "not a variable name", id="hub-name"
        ),
        pytest.param(
            "env_names", {"profile": "NBGUARD_GUARD_URL"}, "share one name", id="duplicate"
        ),
    ],
)
def test_settings_are_checked_with_the_setting_named(trait: str, value: Any, message: str) -> None:
    """Bad settings are refused at configuration time, naming Class.trait."""
    config = Config()
    setattr(config.PolicySpawnerMixin, trait, value)
    with pytest.raises(TraitError, match=re.escape(message)):
        guarded_spawner(SimpleLocalProcessSpawner)(config=config)


def test_env_names_merge_with_defaults() -> None:
    """Renaming one variable keeps the others' defaults; an empty name leaves it unset."""
    config = Config()
    config.PolicySpawnerMixin.env_names = {"profile": "MY_PROFILE", "deadline": ""}
    spawner = guarded_spawner(SimpleLocalProcessSpawner)(config=config)
    assert spawner.env_names == {
        "guard_url": "NBGUARD_GUARD_URL",
        "session_id": "NBGUARD_SESSION_ID",
        "profile": "MY_PROFILE",
        "deadline": "",
        "mlflow_uri": "MLFLOW_TRACKING_URI",
        "mlflow_token": "MLFLOW_TRACKING_TOKEN",
    }


@on_hub_loop
async def test_without_nbguard_authenticator_spawns_fail_closed(spawn_hub: Any) -> None:
    """A spawner whose authenticator has no nbguard refuses with a clean message."""
    from jupyterhub.auth import DummyAuthenticator

    name, _ = await logged_in(spawn_hub)
    cls = guarded_spawner(SimpleLocalProcessSpawner)
    spawner = cls(user=spawn_hub.users[name], hub=spawn_hub.hub, authenticator=DummyAuthenticator())
    with pytest.raises(SpawnRefused) as refused:
        await spawner.run_pre_spawn_hook()
    assert refused.value.jupyterhub_message == (
        "Your server was not started: access control for servers is not available right now. "
        "Please try again in a minute, and contact your hub administrator if this persists."
    )
    assert "guarded_authenticator" in refused.value.log_message
    with pytest.raises(SpawnRefused):
        spawner.get_env()


@on_hub_loop
async def test_kubespawner_pod_carries_nbguard_env_and_no_secret(
    spawn_hub: Any, no_cluster: None
) -> None:
    """A guarded KubeSpawner's pod (no cluster) has nbguard's variables and none of its secrets."""
    name, _ = await logged_in(spawn_hub)
    guard = spawn_hub.authenticator.nbguard
    secret_key = guard.secret_keys[0]
    spawner = kube_spawner(
        spawn_hub,
        name,
        environment={"LEAK_KEY": secret_key, "LEAK_PATH": guard.ledger.signing_key_file},
    )
    manifest = await allowed_pod(spawner)
    assert spawner.user_options["profile"] == "dev"  # KubeSpawner's default profile, pinned
    env = container_env(manifest)
    lease = spawner._nbguard_lease
    assert env["NBGUARD_PROFILE"] == "dev"
    assert env["NBGUARD_SESSION_ID"] == lease.session_id
    assert env["NBGUARD_SERVER_DEADLINE"] == lease.deadline_text
    assert "LEAK_KEY" not in env
    assert "LEAK_PATH" not in env
    text = repr(manifest.to_dict())
    for secret in (*guard.secret_keys, guard.ledger.signing_key_file, guard.ledger.url):
        assert secret not in text
    assert env["JUPYTERHUB_API_TOKEN"] == spawner.api_token  # the server's own, set by JupyterHub


@on_hub_loop
async def test_kubespawner_prod_profile_is_decided_and_loaded(
    spawn_hub: Any, no_cluster: None
) -> None:
    """A prod profile chosen in KubeSpawner's form is decided, then loaded with its overrides."""
    name, browser = await logged_in(spawn_hub, device=True)
    GRANTS[name] = {("server.spawn", "profile:prod")}
    spawner = kube_spawner(spawn_hub, name)
    spawner.handler = type("Handler", (), {"request": browser_request(browser)})()
    spawner.user_options = {"profile": "prod"}
    await spawner.run_pre_spawn_hook()
    await spawner.load_user_options()
    manifest = await spawner.get_pod_manifest()
    assert manifest.spec.containers[0].image == "registry.example/prod:1"
    assert container_env(manifest)["NBGUARD_PROFILE"] == "prod"


def browser_request(browser: Any) -> Any:
    """A Tornado request carrying the browser's device assertion, as the spawn handler has.

    Spawning through KubeSpawner needs a cluster, so this test calls the spawner's
    stages itself and hands them the request a spawn page would have received.
    """
    from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

    headers = HTTPHeaders({**browser.session.headers, "Host": "127.0.0.1"})
    return HTTPServerRequest(
        start_line=RequestStartLine("POST", "/hub/spawn", "HTTP/1.1"), headers=headers
    )


@on_hub_loop
async def test_running_server_environment_has_no_hub_secret(
    spawn_hub: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real server process's environment has nbguard's variables and none of the hub's secrets."""
    guard = spawn_hub.authenticator.nbguard
    monkeypatch.setenv("NBGUARD_SECRET_KEYS", ";".join(guard.secret_keys))
    monkeypatch.setenv("CONFIGPROXY_AUTH_TOKEN", "proxy-token-0123456789")
    name, browser = await logged_in(spawn_hub)
    spawner = spawn_hub.users[name].spawner
    spawner.env_keep = [*spawner.env_keep, "NBGUARD_SECRET_KEYS", "CONFIGPROXY_AUTH_TOKEN"]
    spawner.environment = {"LEDGER": guard.ledger.url, "MFA_DB": guard.mfa_db_url}
    await spawn_form(browser, name, "dev")
    await wait_for(lambda: spawner.ready)
    raw = Path(f"/proc/{spawner.pid}/environ").read_bytes().split(b"\0")
    env = dict(item.decode().split("=", 1) for item in raw if b"=" in item)
    await stop_server(spawn_hub, name)
    assert env["NBGUARD_PROFILE"] == "dev"
    assert env["NBGUARD_SESSION_ID"]
    for banned in ("NBGUARD_SECRET_KEYS", "CONFIGPROXY_AUTH_TOKEN", "LEDGER", "MFA_DB"):
        assert banned not in env
    values = "\n".join(env.values())
    for secret in (*guard.secret_keys, guard.ledger.signing_key_file, "proxy-token-0123456789"):
        assert secret not in values
    tokens = {k for k, v in env.items() if v == env["JUPYTERHUB_API_TOKEN"]}
    assert tokens <= {"JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN"}


@on_hub_loop
async def test_servers_get_the_mlflow_gateway_and_their_own_token(
    spawn_hub: Any, no_cluster: None
) -> None:
    """MLFLOW_TRACKING_URI is the guard's gateway and MLFLOW_TRACKING_TOKEN the server's token."""
    name, _ = await logged_in(spawn_hub)
    guard = spawn_hub.authenticator.nbguard
    saved = guard.guard_service_url
    guard.guard_service_url = "http://hub.internal:10101/services/nbguard-guard/"
    try:
        spawner = kube_spawner(spawn_hub, name)
        env = container_env(await allowed_pod(spawner))
    finally:
        guard.guard_service_url = saved
    assert env["MLFLOW_TRACKING_URI"] == "http://hub.internal:10101/services/nbguard-guard/mlflow"
    assert env["MLFLOW_TRACKING_TOKEN"] == spawner.api_token == env["JUPYTERHUB_API_TOKEN"]


async def allowed_pod(spawner: Any) -> Any:
    """The pod manifest of a KubeSpawner once its spawn was decided (no cluster needed)."""
    await spawner.run_pre_spawn_hook()
    await spawner.load_user_options()
    return await spawner.get_pod_manifest()
