"""A minimal OpenID Connect provider on loopback, standing in for an IdP that cannot run here.

It implements just the authorization-code flow OAuthenticator speaks:
``/authorize`` consents at once and redirects back with a one-time code,
``/token`` exchanges a code once (a second exchange is ``invalid_grant``, as a
real IdP does), ``/userinfo`` answers for the access token. The ID token is
signed with a throwaway key; ``amr`` and ``acr`` are whatever the test sets.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets


@dataclass
class Login:
    """Who the next consent logs in, and what MFA the IdP claims."""

    username: str = "alice"
    amr: list[str] = field(default_factory=lambda: ["pwd"])
    acr: str = ""


class FakeIdP:
    """The provider's state: pending codes and issued tokens."""

    def __init__(self) -> None:
        self.next = Login()
        self.codes: dict[str, Login] = {}
        self.tokens: dict[str, Login] = {}
        self.key = secrets.token_hex(32)
        self.server: HTTPServer | None = None
        self.url = ""

    def start(self) -> None:
        """Listen on a free loopback port in the running event loop."""
        app = web.Application(
            [
                (r"/authorize", _Authorize, {"idp": self}),
                (r"/token", _Token, {"idp": self}),
                (r"/userinfo", _UserInfo, {"idp": self}),
            ]
        )
        sockets = bind_sockets(0, "127.0.0.1")
        self.server = HTTPServer(app)
        self.server.add_sockets(sockets)
        self.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"

    def stop(self) -> None:
        """Stop listening."""
        if self.server is not None:
            self.server.stop()

    def id_token(self, login: Login) -> str:
        """An ID token for ``login``."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.url,
            "sub": login.username,
            "aud": "nbguard-hub",
            "iat": now,
            "exp": now + 300,
            "preferred_username": login.username,
            "amr": login.amr,
        }
        if login.acr:
            claims["acr"] = login.acr
        return jwt.encode(claims, self.key, algorithm="HS256")


class _Handler(web.RequestHandler):
    def initialize(self, idp: FakeIdP) -> None:
        self.idp = idp

    def check_xsrf_cookie(self) -> None:
        """The token endpoint is called server to server."""


class _Authorize(_Handler):
    def get(self) -> None:
        code = secrets.token_urlsafe(16)
        self.idp.codes[code] = self.idp.next
        query = urlencode({"code": code, "state": self.get_argument("state")})
        self.redirect(f"{self.get_argument('redirect_uri')}?{query}")


class _Token(_Handler):
    def post(self) -> None:
        login = self.idp.codes.pop(self.get_body_argument("code", ""), None)
        if login is None:
            self.set_status(400)
            self.write({"error": "invalid_grant"})
            return
        token = secrets.token_urlsafe(16)
        self.idp.tokens[token] = login
        self.write(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": 300,
                "scope": "openid profile",
                "id_token": self.idp.id_token(login),
            }
        )


class _UserInfo(_Handler):
    def get(self) -> None:
        token = self.request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        login = self.idp.tokens.get(token)
        if login is None:
            self.set_status(401)
            return
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps({"sub": login.username, "preferred_username": login.username}))
