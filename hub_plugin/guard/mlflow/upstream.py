"""The admin's MLflow tracking server, called with the guard service's own credentials.

The credentials (a bearer token or ``user:password`` for basic auth, each read
from a file only the service's OS user can read) are added here and nowhere
else; they never reach the user zone. A server that cannot be reached, or that
fails (5xx), is :class:`UpstreamUnavailable`: the gateway answers 503, never 500.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.httputil import HTTPHeaders

from nbguard.errors import ConfigError, NBGuardError

#: Largest JSON answer read whole from the tracking server (artifacts are streamed).
_MAX_JSON_BYTES = 64 * 1024**2
#: Largest artifact streamed from the tracking server.
_MAX_STREAM_BYTES = 1024**4


class UpstreamUnavailable(NBGuardError):
    """The MLflow tracking server could not be reached or failed."""

    default_user_message = (
        "The model registry is unavailable right now (nbguard could not reach the MLflow "
        "tracking server). Try again in a moment."
    )


@dataclass(frozen=True, slots=True)
class UpstreamAnswer:
    """A JSON answer of the tracking server: its status and decoded body."""

    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        """A 2xx answer."""
        return 200 <= self.status < 300


def read_credentials(token_file: str, basic_auth_file: str) -> str:
    """The ``Authorization`` header value for the tracking server ("" for none)."""
    if token_file and basic_auth_file:
        raise ConfigError(
            "Set GuardService.mlflow_token_file or GuardService.mlflow_basic_auth_file, not both."
        )
    for path, kind in ((token_file, "token"), (basic_auth_file, "basic")):
        if not path:
            continue
        try:
            secret = Path(path).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ConfigError(f"cannot read the MLflow credentials file {path}: {error}") from None
        if not secret:
            raise ConfigError(f"the MLflow credentials file {path} is empty")
        if kind == "token":
            return f"Bearer {secret}"
        if ":" not in secret:
            raise ConfigError(f"the MLflow basic-auth file {path} must hold user:password")
        return "Basic " + base64.b64encode(secret.encode()).decode()
    return ""


class MLflowUpstream:
    """Calls to one tracking server (``GuardService.mlflow_tracking_uri``)."""

    def __init__(self, uri: str, *, authorization: str = "", timeout: float = 30.0) -> None:
        self.uri = uri.rstrip("/")
        self._authorization = authorization
        self.timeout = timeout
        self._client: AsyncHTTPClient | None = None

    def close(self) -> None:
        """Close the client's connections."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self._authorization:
            headers["Authorization"] = self._authorization
        return headers

    def url(self, path: str, query: Mapping[str, Any] | list[tuple[str, str]] | None = None) -> str:
        """The tracking server's URL of ``path`` (``api/2.0/mlflow/...``) with a query."""
        url = f"{self.uri}/{path}"
        return f"{url}?{urlencode(query, doseq=True)}" if query else url

    async def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | list[tuple[str, str]] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> UpstreamAnswer:
        """One JSON call; 4xx answers are returned, 5xx and network errors raised."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        request = HTTPRequest(
            self.url(path, query),
            method=method,
            headers=self._headers(headers),
            body=data,
            allow_nonstandard_methods=True,
            follow_redirects=False,
            request_timeout=self.timeout,
            connect_timeout=self.timeout,
        )
        response = await self._fetch(request)
        return UpstreamAnswer(response.code, _json_object(response))

    async def send_raw(
        self, method: str, path: str, *, body: bytes, content_type: str
    ) -> UpstreamAnswer:
        """Send bytes (an artifact upload); the JSON answer."""
        request = HTTPRequest(
            self.url(path),
            method=method,
            headers=self._headers({"Content-Type": content_type or "application/octet-stream"}),
            body=body,
            follow_redirects=False,
            request_timeout=max(self.timeout, 600.0),
            connect_timeout=self.timeout,
        )
        response = await self._fetch(request)
        return UpstreamAnswer(response.code, _json_object(response))

    async def stream(
        self,
        path: str,
        *,
        on_headers: Callable[[int, HTTPHeaders], None],
        on_chunk: Callable[[bytes], None],
    ) -> int:
        """GET ``path`` and hand over its status and headers, then each piece of the body.

        Returns the status. The body is never held whole in memory.
        """
        state: dict[str, Any] = {"status": 0, "headers": HTTPHeaders(), "sent": False}

        def header_line(line: str) -> None:
            if line.startswith("HTTP/"):
                parts = line.split()
                state["status"] = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
                state["headers"] = HTTPHeaders()
            elif line.strip():
                state["headers"].parse_line(line)

        def chunk(data: bytes) -> None:
            if not state["sent"]:
                state["sent"] = True
                on_headers(state["status"], state["headers"])
            on_chunk(data)

        request = HTTPRequest(
            self.url(path),
            method="GET",
            headers=self._headers(),
            follow_redirects=False,
            request_timeout=max(self.timeout, 3600.0),
            connect_timeout=self.timeout,
            header_callback=header_line,
            streaming_callback=chunk,
        )
        response = await self._fetch(request)
        if not state["sent"]:
            state["sent"] = True
            on_headers(response.code, state["headers"])
        return response.code

    async def _fetch(self, request: HTTPRequest) -> HTTPResponse:
        if self._client is None:
            # A client of its own, made in the service's event loop: the shared one
            # caps bodies at 100 MiB, streamed or not.
            self._client = AsyncHTTPClient(force_instance=True, max_body_size=_MAX_STREAM_BYTES)
        try:
            response = await self._client.fetch(request, raise_error=False)
        except (OSError, HTTPClientError) as error:
            raise UpstreamUnavailable(f"MLflow tracking server: {error!r}") from None
        if response.code == 599 or response.code >= 500:
            raise UpstreamUnavailable(
                f"MLflow tracking server answered {response.code} to {request.method} "
                f"{request.url.split('?')[0]}"
            )
        return response


def _json_object(response: HTTPResponse) -> dict[str, Any]:
    """The answer's body as a JSON object ({} when empty, too large or not an object)."""
    if not response.body or len(response.body) > _MAX_JSON_BYTES:
        return {}
    try:
        value = json.loads(response.body)
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}
