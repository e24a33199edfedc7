"""The kernel's client of the guard service: requests with the server's token, errors in words.

Every request carries ``Authorization: token $JUPYTERHUB_API_TOKEN`` (the server's
own token, which kernels inherit) and, inside a recorded cell, ``X-NBGuard-Cell``
naming that cell. The guard decides and records; this client only carries the
request and turns refusals into errors a notebook user can act on:

- a policy denial is :class:`GuardPermissionError` (a ``PermissionError``) whose
  message says what would allow the access and where to get it (the elevation
  page, or the step-up page when a fresh second factor would do);
- an unreachable guard is :class:`GuardUnavailable` (a ``ConnectionError``),
  with no traceback of the HTTP library in it: governed access fails closed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

from nbguard.kernel_hooks import current
from nbguard.kernel_hooks.errors import (
    GuardClientError,
    GuardNotConfigured,
    GuardPermissionError,
    GuardRequestError,
    GuardUnavailable,
)
from nbguard.kernel_hooks.identity import ServerEnvironment

if TYPE_CHECKING:
    import requests

#: Header naming the cell that made a request (docs/user-zone.md, "Cell attribution").
CELL_HEADER = "X-NBGuard-Cell"
USER_AGENT = "nbguard-kernel/1"
NOT_CONFIGURED = (
    "nbguard:// is not available here: this process was not started by a JupyterHub "
    "server with nbguard (NBGUARD_GUARD_URL and JUPYTERHUB_API_TOKEN are not both set)."
)


class GuardClient:
    """Calls the guard service's API on behalf of this server's user."""

    def __init__(self, environment: ServerEnvironment, *, timeout: float = 30.0) -> None:
        self.environment = environment
        self.base = environment.guard_url
        self.timeout = timeout
        self._session: requests.Session | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_environ(cls, *, timeout: float = 30.0) -> GuardClient:
        """The client of a server spawned by an nbguard hub; GuardNotConfigured elsewhere."""
        environment = ServerEnvironment.from_environ()
        if environment is None:
            raise GuardNotConfigured(NOT_CONFIGURED)
        return cls(environment, timeout=timeout)

    @property
    def session(self) -> requests.Session:
        """One keep-alive session (made on first use; requests is imported only then)."""
        with self._lock:
            if self._session is None:
                import requests

                session = requests.Session()
                session.headers["Authorization"] = f"token {self.environment.token}"
                session.headers["User-Agent"] = USER_AGENT
                # No proxy or .netrc between a kernel and its guard (the token must not
                # go elsewhere), but the CA bundle an admin points to still counts.
                session.trust_env = False
                session.verify = (
                    os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE") or True
                )
                self._session = session
            return self._session

    def url(self, path: str) -> str:
        """The absolute URL of an API path (``api/v1/me``)."""
        return self.base + path

    def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        resource: str | None = None,
        expected: Iterable[int] = (200,),
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send one request; the response if its status is ``expected``, else an error.

        ``what`` says in words what the caller was doing (``reading
        nbguard://sales/a.csv``), for the error message; ``resource`` is the governed
        resource the request touches, reported to the running cell's record.
        """
        import requests

        if resource is not None:
            current.touch(resource)
        sent = dict(headers or {})
        cell = current.cell_header()
        if cell is not None:
            sent[CELL_HEADER] = cell
        kwargs.setdefault("timeout", self.timeout)
        kwargs.setdefault("allow_redirects", False)  # the token goes to the guard only
        try:
            response = self.session.request(method, self.url(path), headers=sent, **kwargs)
        except requests.Timeout:
            raise GuardUnavailable(
                f"nbguard: the guard service did not answer within {self.timeout:g} s while "
                f"{what}; nothing was read or written. Try again in a moment."
            ) from None
        except requests.RequestException as error:
            raise GuardUnavailable(
                f"nbguard: the guard service at {self._where()} cannot be reached "
                f"({_reason(error)}) while {what}; governed data is unavailable until it "
                "is back. Try again in a moment, or tell your hub admin if it persists."
            ) from None
        if response.status_code in tuple(expected):
            return response
        try:
            raise self.error_for(response, what)
        finally:
            response.close()

    def get_json(self, path: str, *, what: str, **kwargs: Any) -> Any:
        """GET ``path`` and return its JSON answer."""
        response = self.request("GET", path, what=what, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise GuardUnavailable(
                f"nbguard: the guard service sent an answer that is not JSON while {what}."
            ) from None

    def me(self) -> dict[str, Any]:
        """``GET api/v1/me``: who this server's user is to the guard, with roles and grants."""
        value = self.get_json("api/v1/me", what="asking the guard who you are")
        return value if isinstance(value, dict) else {}

    def error_for(self, response: requests.Response, what: str) -> Exception:
        """The error for a refused request, with the guard's own words."""
        error = _error_body(response)
        status = response.status_code
        message = str(error.get("message") or response.reason or f"HTTP {status}")
        if status == 403 and error.get("code") == "access_denied":
            return self.denial(error, what)
        if status in (401, 403):
            return GuardPermissionError(
                f"nbguard: the guard service refused this server's token while {what}: {message}",
                status=status,
            )
        if status == 404:
            return FileNotFoundError(f"nbguard: not found while {what}: {message}")
        if status in (400, 409, 413, 415, 416, 422):
            return GuardRequestError(f"nbguard: the guard refused {what}: {message}")
        if status in (502, 503, 504):
            return GuardUnavailable(
                f"nbguard: the guard service cannot decide now ({message}) while {what}; "
                "nothing was read or written. Try again in a moment."
            )
        return GuardClientError(f"nbguard: the guard service failed while {what}: {message}")

    def denial(self, error: Mapping[str, Any], what: str) -> GuardPermissionError:
        """A policy denial as an error saying what would allow the access, and where."""
        found = error.get("decision")
        decision: dict[str, Any] = found if isinstance(found, dict) else {}
        step_up = error.get("step_up_url")
        step_up = step_up if isinstance(step_up, str) and step_up else None
        lines = [f"nbguard denied {what}.", str(error.get("message") or "Access denied.")]
        kinds = {
            requirement.get("kind")
            for remedy in decision.get("remedies") or []
            if isinstance(remedy, dict)
            for requirement in remedy.get("requirements") or []
            if isinstance(requirement, dict)
        }
        if decision.get("locked"):
            lines.append("Your hub administrator can lift the lock.")
        if kinds & {"role", "grant"}:
            page = self.elevation_page()
            action, resource = decision.get("action"), decision.get("resource")
            if "grant" in kinds and isinstance(action, str) and isinstance(resource, str):
                # The ask form opens filled in with what was refused.
                page += "?" + urlencode({"action": action, "resource": resource})
            lines.append(
                f"Ask for an elevation (a role or a grant, for a time, with a reason) at "
                f"{page}; an approver must agree before it counts."
            )
        if step_up is not None:
            lines.append(
                f"Confirm it is you with a fresh second factor at {step_up}, then run the "
                "cell again."
            )
        correlation = decision.get("correlation_id")
        if isinstance(correlation, str) and correlation:
            lines.append(f"(Decision {correlation}: quote it if you ask your hub admin.)")
        return GuardPermissionError(
            "\n".join(lines), decision=decision, step_up_url=step_up, status=403
        )

    def elevation_page(self) -> str:
        """Where a browser asks for elevation: the guard service's requests page on the hub."""
        name = [part for part in urlsplit(self.base).path.split("/") if part][-1:] or ["nbguard"]
        base = self.environment.hub_base_url.rstrip("/") + "/"
        return f"{base}services/{quote(name[0])}/requests"

    def _where(self) -> str:
        parts = urlsplit(self.base)
        return f"{parts.scheme}://{parts.netloc}"

    def close(self) -> None:
        """Close the keep-alive connections."""
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()


def _error_body(response: requests.Response) -> dict[str, Any]:
    """The ``error`` object of a guard error answer ({} if it is not one)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _reason(error: Exception) -> str:
    """A few words for a connection failure, without the library's nested reprs."""
    text = repr(error)
    for needle, words in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "unknown host"),
        ("nodename nor servname", "unknown host"),
        ("Temporary failure in name resolution", "name resolution failed"),
        ("timed out", "timed out"),
        ("Connection reset", "connection reset"),
        ("RemoteDisconnected", "the connection was closed"),
        ("SSLError", "TLS handshake failed"),
    ):
        if needle in text:
            return words
    return "connection failed"
