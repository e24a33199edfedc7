"""The extension in a server: active with a guard, idle without one, 503 when the guard is down."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from tornado.httpclient import HTTPClientError
from traitlets import TraitError

from nbguard.server_extension.app import NBGuardExtension
from nbguard.server_extension.authorizer import NBGuardAuthorizer
from nbguard.server_extension.witness import WitnessConnection

from .conftest import GuardProcess

Fetch = Any


async def error_of(jp_fetch: Fetch, *parts: str) -> tuple[int, dict[str, Any]]:
    """The status and JSON error body of a call that must fail."""
    with pytest.raises(HTTPClientError) as caught:
        await jp_fetch(*parts)
    response = caught.value.response
    assert response is not None
    assert response.headers["Content-Type"].startswith("application/json")
    return caught.value.code, json.loads(response.body)


async def test_active_extension_sets_authorizer_and_witness(jp_serverapp: Any) -> None:
    """With a guard URL and token the server uses nbguard's authorizer and websocket witness."""
    assert isinstance(jp_serverapp.authorizer, NBGuardAuthorizer)
    assert jp_serverapp.kernel_websocket_connection_class is WitnessConnection
    extension = jp_serverapp.web_app.settings["nbguard"]
    assert isinstance(extension, NBGuardExtension)
    assert extension.active
    assert extension.shipper is not None


async def test_guard_down_is_503_json(
    jp_fetch: Fetch, jp_serverapp: Any, guard_process: GuardProcess
) -> None:
    """While the guard refuses connections the panel answers 503 in the guard's error shape."""
    guard_process.down()
    try:
        status, body = await error_of(jp_fetch, "nbguard", "api", "context")
    finally:
        guard_process.up()
    assert status == 503
    assert body["error"]["status"] == 503
    assert body["error"]["code"] == "guard_unavailable"
    assert "cannot be reached" in body["error"]["message"]
    again = await jp_fetch("nbguard", "api", "context")
    assert again.code == 200


@pytest.mark.parametrize(
    ("url", "value"),
    [
        pytest.param(
            "http://guard:10101/services/nbguard-guard",
            "http://guard:10101/services/nbguard-guard/",
            id="adds-slash",
        ),
        pytest.param("https://guard/x/", "https://guard/x/", id="kept"),
        pytest.param("", "", id="empty-is-idle"),
    ],
)
def test_guard_url_is_normalised(url: str, value: str) -> None:
    """NBGuardExtension.guard_url ends in a slash (or stays empty)."""
    assert NBGuardExtension(guard_url=url).guard_url == value


@pytest.mark.parametrize(
    ("trait", "value"),
    [
        pytest.param("guard_url", "ftp://guard/", id="not-http"),
        pytest.param("guard_url", "/services/nbguard-guard/", id="relative"),
        pytest.param("witness_batch_size", 501, id="batch-too-big"),
        pytest.param("witness_batch_size", 0, id="batch-empty"),
        pytest.param("witness_retry_min", 0, id="no-back-off"),
        pytest.param("request_timeout", -1, id="negative-timeout"),
    ],
)
def test_bad_settings_are_refused_by_name(trait: str, value: Any) -> None:
    """A bad setting raises a TraitError naming NBGuardExtension.<trait>."""
    with pytest.raises(TraitError, match=f"NBGuardExtension.{trait}"):
        NBGuardExtension(**{trait: value})


def test_settings_default_to_the_spawners_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """guard_url and api_token come from NBGUARD_GUARD_URL and JUPYTERHUB_API_TOKEN."""
    monkeypatch.setenv("NBGUARD_GUARD_URL", "http://127.0.0.1:10101/services/nbguard-guard")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "a-server-token")
    extension = NBGuardExtension()
    assert extension.guard_url == "http://127.0.0.1:10101/services/nbguard-guard/"
    assert extension.api_token == "a-server-token"  # noqa: S105 (a test value)
    assert extension.active


class TestIdle:
    """A server not spawned by an nbguard hub."""

    @pytest.fixture
    def jp_server_config(self, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
        """The extension enabled, with neither NBGUARD_GUARD_URL nor JUPYTERHUB_API_TOKEN."""
        monkeypatch.delenv("NBGUARD_GUARD_URL", raising=False)
        monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)
        return {"ServerApp": {"jpserver_extensions": {"nbguard.server_extension": True}}}

    async def test_idle_extension_has_no_routes(self, jp_fetch: Fetch) -> None:
        """Without a guard the panel routes do not exist (404), rather than pretend."""
        with pytest.raises(HTTPClientError) as caught:
            await jp_fetch("nbguard", "api", "context")
        assert caught.value.code == 404

    async def test_idle_extension_keeps_jupyters_defaults(self, jp_serverapp: Any) -> None:
        """Without a guard the server keeps Jupyter's authorizer and websocket connection."""
        assert not isinstance(jp_serverapp.authorizer, NBGuardAuthorizer)
        assert jp_serverapp.kernel_websocket_connection_class is ZMQChannelsWebsocketConnection
        assert jp_serverapp.web_app.settings["nbguard"].shipper is None

    async def test_idle_extension_says_so_once(
        self,
        jp_configurable_serverapp: Any,
        jp_server_config: dict[str, Any],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Idle is one warning in the server's log naming both missing variables."""
        jp_configurable_serverapp(config=jp_server_config)
        idle = [line for line in capsys.readouterr().err.splitlines() if "nbguard | idle" in line]
        assert len(idle) == 1
        assert "NBGUARD_GUARD_URL and JUPYTERHUB_API_TOKEN not set" in idle[0]


class TestGateway:
    """A server whose kernels run behind a kernel gateway."""

    @pytest.fixture
    def jp_server_config(self, jp_server_config: dict[str, Any]) -> dict[str, Any]:
        """nbguard enabled, and kernels through a gateway (never reached by these tests)."""
        return {**jp_server_config, "GatewayClient": {"url": "http://127.0.0.1:9"}}

    async def test_gateway_keeps_its_connection_and_gets_the_authorizer(
        self, jp_serverapp: Any
    ) -> None:
        """The server's own choice of websocket connection stays (no witness); the authorizer is set."""
        assert jp_serverapp.kernel_websocket_connection_class is not WitnessConnection
        assert isinstance(jp_serverapp.authorizer, NBGuardAuthorizer)


def test_loading_the_extension_point_imports_only_the_app() -> None:
    """Finding the extension imports its ExtensionApp, not the witness, authorizer or handlers."""
    code = (
        "import sys, nbguard.server_extension as s; s._jupyter_server_extension_points(); "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('nbguard.server_extension'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.split() == ["nbguard.server_extension", "nbguard.server_extension.app"]
