"""The admin's MLflow tracking server, called with the guard service's own credentials.

The credentials (a bearer token or ``user:password`` for basic auth, each read
from a file only the service's OS user can read) are added here and nowhere
else; they never reach the user zone. A server that cannot be reached, or that
fails (5xx), is :class:`UpstreamUnavailable`: the gateway answers 503, never 500.

Calls go over a pool of keep-alive connections (aiohttp, which JupyterHub already
depends on): a new TCP connection per call, with its address lookup in a worker
thread, cost about a millisecond of every metadata call. The pool never reads
proxy settings from the environment, and never follows redirects.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from nbguard.errors import ConfigError, NBGuardError

if TYPE_CHECKING:
    import aiohttp

#: Largest JSON answer read whole from the tracking server (artifacts are streamed).
_MAX_JSON_BYTES = 64 * 1024**2
#: Pieces in which an artifact is streamed on.
_CHUNK_BYTES = 1024**2
#: Keep-alive connections to the tracking server held open at most.
_POOL_SIZE = 32
#: Seconds an idle connection is kept: under uvicorn's 5 s, so the server is not the
#: one closing it as a request goes out (idempotent calls are retried if it did).
_IDLE_SECONDS = 4.0
#: Longest an artifact stream may take, from the request to its last byte.
_STREAM_SECONDS = 3600.0


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


@dataclass(frozen=True, slots=True)
class UpstreamStream:
    """An answer whose body is read piece by piece (an artifact download)."""

    status: int
    content_length: int | None
    _response: aiohttp.ClientResponse

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's pieces; a connection lost half-way is :class:`UpstreamUnavailable`."""
        import aiohttp

        try:
            async for chunk in self._response.content.iter_chunked(_CHUNK_BYTES):
                yield chunk
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            raise UpstreamUnavailable(f"MLflow tracking server: {error!r}") from None


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
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def aclose(self) -> None:
        """Close the pool's connections; later calls fail as the upstream being down."""
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self._authorization:
            headers["Authorization"] = self._authorization
        return headers

    def url(self, path: str, query: Mapping[str, Any] | list[tuple[str, str]] | None = None) -> str:
        """The tracking server's URL of ``path`` (``api/2.0/mlflow/...``) with a query."""
        url = f"{self.uri}/{path}"
        return f"{url}?{urlencode(query, doseq=True)}" if query else url

    def _pool(self) -> aiohttp.ClientSession:
        """The session, made on first use in the service's event loop."""
        import aiohttp

        if self._closed:
            # A request that outlived the service's shutdown: no new pool for it to leak.
            raise UpstreamUnavailable("the guard service is shutting down")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=_POOL_SIZE, keepalive_timeout=_IDLE_SECONDS),
                timeout=aiohttp.ClientTimeout(total=self.timeout, connect=self.timeout),
                trust_env=False,
                # The URL is built here with its query already encoded; keep it as is.
                requote_redirect_url=False,
            )
        return self._session

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
        return await self._json(method, self.url(path, query), self._headers(headers), data)

    async def send_raw(
        self, method: str, path: str, *, body: bytes, content_type: str
    ) -> UpstreamAnswer:
        """Send bytes (an artifact upload); the JSON answer."""
        headers = self._headers({"Content-Type": content_type or "application/octet-stream"})
        return await self._json(method, self.url(path), headers, body, max(self.timeout, 600.0))

    async def _json(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        data: bytes | None,
        total: float | None = None,
    ) -> UpstreamAnswer:
        async with self._request(method, url, headers, data, total) as response:
            status = response.status
            body = await self._read_json(method, url, response)
        return UpstreamAnswer(status, body)

    @asynccontextmanager
    async def stream(self, path: str) -> AsyncIterator[UpstreamStream]:
        """GET ``path`` for streaming: its status and length, then its pieces.

        The body is never held whole in memory: the caller takes each piece when it
        has sent the last one on.
        """
        # Bytes as stored, never re-encoded on the way: the length announced is theirs.
        headers = self._headers({"Accept-Encoding": "identity"})
        total = max(self.timeout, _STREAM_SECONDS)
        async with self._request("GET", self.url(path), headers, None, total) as response:
            yield UpstreamStream(response.status, response.content_length, response)

    @asynccontextmanager
    async def _request(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        data: bytes | None,
        total: float | None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        import aiohttp

        timeout = (
            None if total is None else aiohttp.ClientTimeout(total=total, connect=self.timeout)
        )
        session = self._pool()
        try:
            response = await session.request(
                method, url, headers=headers, data=data, allow_redirects=False, timeout=timeout
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            raise UpstreamUnavailable(f"MLflow tracking server: {error!r}") from None
        try:
            if response.status >= 500:
                raise UpstreamUnavailable(
                    f"MLflow tracking server answered {response.status} to {method} "
                    f"{url.split('?')[0]}"
                )
            yield response
        finally:
            response.release()

    @staticmethod
    async def _read_json(method: str, url: str, response: aiohttp.ClientResponse) -> dict[str, Any]:
        """The answer's body as a JSON object ({} when empty, too large or not an object)."""
        import aiohttp

        try:
            raw = await response.content.read(_MAX_JSON_BYTES + 1)
            while raw and len(raw) <= _MAX_JSON_BYTES and not response.content.at_eof():
                more = await response.content.read(_MAX_JSON_BYTES + 1 - len(raw))
                if not more:
                    break
                raw += more
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            raise UpstreamUnavailable(
                f"MLflow tracking server: {error!r} reading {method} {url.split('?')[0]}"
            ) from None
        if not raw or len(raw) > _MAX_JSON_BYTES:
            return {}
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return {}
        return value if isinstance(value, dict) else {}
