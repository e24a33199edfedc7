"""``GuardClient``: the server's asynchronous client to the guard service.

Every call carries the server's own hub token (``JUPYTERHUB_API_TOKEN``), never
the browser's credentials: the guard recognises the server by that token and
decides from hub-zone facts only. Errors come back as :class:`GuardAnswerError`,
a tornado ``HTTPError`` that keeps the guard's status and JSON body, so a
handler can pass a denial (with its ``decision`` and remedies) to the browser
unchanged. A guard that cannot be reached is a 503 with the same error shape.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse

#: Header naming the browser request a call is made for (information only).
BROWSER_HEADER = "X-NBGuard-Browser"


class GuardAnswerError(web.HTTPError):
    """A guard error (or a guard outage) as an HTTP error with its JSON ``body``.

    ``body`` is always ``{"error": {"status", "code", "message", ...}}``.
    """

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        error = body.get("error", {})
        message = str(error.get("message", "")) if isinstance(error, dict) else ""
        # ``log_message`` is %-formatted by tornado: keep the guard's text out of it.
        super().__init__(status, "%s", message)
        self.body = body


def error_body(status: int, code: str, message: str) -> dict[str, Any]:
    """The guard's error shape, for errors the server makes itself."""
    return {"error": {"status": status, "code": code, "message": message}}


def unavailable(detail: str) -> GuardAnswerError:
    """503: the guard service cannot be reached, so governed actions are refused."""
    return GuardAnswerError(
        503,
        error_body(
            503,
            "guard_unavailable",
            "The nbguard guard service cannot be reached right now, so governed data "
            f"and elevation are unavailable; try again shortly ({detail}).",
        ),
    )


class GuardClient:
    """Calls the guard service at ``base_url`` (ending in ``/``) with ``token``."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url
        self.token = token
        self.timeout = timeout

    def url(self, path: str, params: dict[str, str] | None = None) -> str:
        """The absolute URL of ``path`` (``api/v1/me``), with a query if ``params``."""
        query = f"?{urlencode(params)}" if params else ""
        return f"{self.base_url}{path}{query}"

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """``(status, parsed JSON)`` of a successful call; raises :class:`GuardAnswerError`.

        A 4xx or 5xx answer with the guard's JSON error keeps its status and body;
        a refused connection, a timeout, or a 5xx that is not the guard's JSON (a
        proxy's page) is a 503; any other answer that is not JSON is a 502.
        """
        request = HTTPRequest(
            self.url(path, params),
            method=method,
            headers={
                "Authorization": f"token {self.token}",
                "Accept": "application/json",
                **({"Content-Type": "application/json"} if body is not None else {}),
                **(headers or {}),
            },
            body=None if body is None else json.dumps(body),
            request_timeout=self.timeout,
            connect_timeout=self.timeout,
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as error:
            if error.response is None:  # 599: timeout or connection closed
                raise unavailable(str(error)) from error
            raise guard_error(error.response) from error
        except OSError as error:
            raise unavailable(str(error)) from error
        return response.code, parsed(response)


def parsed(response: HTTPResponse) -> Any:
    """The JSON body of a successful guard answer; 502 if it is not JSON."""
    if response.code == 204 or not response.body:
        return None
    try:
        return json.loads(response.body)
    except ValueError:
        raise GuardAnswerError(
            502, error_body(502, "bad_gateway", "The guard service's answer was not JSON.")
        ) from None


def guard_error(response: HTTPResponse) -> GuardAnswerError:
    """A guard error answer as a :class:`GuardAnswerError` with the same status and body."""
    try:
        body = json.loads(response.body or b"")
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return GuardAnswerError(response.code, body)
    if response.code >= 500:
        return unavailable(f"HTTP {response.code} without the guard's JSON error")
    return GuardAnswerError(
        502,
        error_body(
            502, "bad_gateway", f"The guard service answered HTTP {response.code} without JSON."
        ),
    )
