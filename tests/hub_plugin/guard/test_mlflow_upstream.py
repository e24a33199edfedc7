"""The gateway's link to the tracking server: the service's own credentials, and failures as 503.

A small HTTP server on loopback stands in for the tracking server here, to see
exactly which headers arrive (the real MLflow server is in test_mlflow_gateway.py).
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from nbguard.errors import ConfigError
from nbguard.hub_plugin.guard.mlflow.upstream import (
    MLflowUpstream,
    UpstreamUnavailable,
    read_credentials,
)


class Recorder(BaseHTTPRequestHandler):
    """Answers every GET with JSON and keeps the headers it saw."""

    seen: ClassVar[list[dict[str, str]]] = []
    status: ClassVar[int] = 200

    def do_GET(self) -> None:
        """Record the headers; answer with the status the test chose."""
        Recorder.seen.append(dict(self.headers))
        body = json.dumps({"ok": True}).encode()
        self.send_response(Recorder.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def tracking() -> Iterator[str]:
    """A recording HTTP server's URL."""
    Recorder.seen, Recorder.status = [], 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("token", "basic", "expected"),
    [
        pytest.param("s3cret\n", "", "Bearer s3cret", id="token-file"),
        pytest.param(
            "", "svc:pw", "Basic " + base64.b64encode(b"svc:pw").decode(), id="basic-auth"
        ),
        pytest.param("", "", "", id="none"),
    ],
)
def test_credentials_come_from_the_admins_files(
    tmp_path: Path, token: str, basic: str, expected: str
) -> None:
    """A token file gives a bearer header, a basic-auth file user:password, none nothing."""
    paths = []
    for name, text in (("token", token), ("basic", basic)):
        path = tmp_path / name
        if text:
            path.write_text(text)
        paths.append(str(path) if text else "")
    assert read_credentials(*paths) == expected


@pytest.mark.parametrize(
    ("files", "message"),
    [
        pytest.param({"token": "a", "basic": "u:p"}, "not both", id="both"),
        pytest.param({"token": " \n"}, "is empty", id="empty"),
        pytest.param({"basic": "no-colon"}, "user:password", id="basic-without-colon"),
        pytest.param({"missing": ""}, "cannot read", id="missing-file"),
    ],
)
def test_bad_credential_files_stop_the_service(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    """Misconfigured credentials are a ConfigError at start, not a silent anonymous call."""
    token = basic = ""
    for name, text in files.items():
        path = tmp_path / name
        if name != "missing":
            path.write_text(text)
        if name in ("token", "missing"):
            token = str(path)
        else:
            basic = str(path)
    with pytest.raises(ConfigError, match=message):
        read_credentials(token, basic)


@pytest.mark.asyncio
async def test_only_the_services_credentials_reach_the_tracking_server(tracking: str) -> None:
    """The upstream call carries the service's Authorization and nothing from a caller."""
    upstream = MLflowUpstream(tracking, authorization="Bearer service-token", timeout=5)
    try:
        answer = await upstream.call("GET", "api/2.0/mlflow/registered-models/search")
    finally:
        await upstream.aclose()
    assert answer.ok
    assert answer.body == {"ok": True}
    assert [h.get("Authorization") for h in Recorder.seen] == ["Bearer service-token"]
    assert not any(k.lower().startswith("x-nbguard") for k in Recorder.seen[0])


@pytest.mark.parametrize("status", [500, 502, 503])
@pytest.mark.asyncio
async def test_a_failing_tracking_server_is_unavailable(tracking: str, status: int) -> None:
    """A 5xx from the tracking server is UpstreamUnavailable (the gateway's 503), not passed on."""
    Recorder.status = status
    upstream = MLflowUpstream(tracking, timeout=5)
    try:
        with pytest.raises(UpstreamUnavailable):
            await upstream.call("GET", "api/2.0/mlflow/registered-models/search")
    finally:
        await upstream.aclose()


@pytest.mark.asyncio
async def test_a_call_after_close_opens_no_new_pool(tracking: str) -> None:
    """A request that outlives the service's shutdown fails as the upstream being down and
    leaves no connection pool behind to leak (an unclosed aiohttp session)."""
    upstream = MLflowUpstream(tracking, timeout=5)
    assert (await upstream.call("GET", "api/2.0/mlflow/registered-models/search")).ok
    await upstream.aclose()
    with pytest.raises(UpstreamUnavailable, match="shutting down"):
        await upstream.call("GET", "api/2.0/mlflow/registered-models/search")
    assert upstream._session is None
    assert len(Recorder.seen) == 1
