"""Entitlements: what the guard says this user may do in this server, signed and cached.

The guard service issues a short-lived EdDSA-signed JWT (``GET
api/v1/entitlements``, audience ``nbguard-server``) listing Jupyter permissions
(``jupyter.terminal``, ``jupyter.contents_write``, ``jupyter.kernel_execute``),
and publishes its public key (``GET api/v1/entitlements/key``). The
:class:`EntitlementCache` fetches both with the server's token, verifies the
token (signature, audience, expiry, ``jti``, and that ``sub`` is this server's
user), keeps it until ``refresh_margin`` seconds before it expires, and then
fetches a new one. It answers ``None`` when it has no valid entitlement, and
the authorizer then fails closed.

The token is checked here because the answer crosses the network; the guard
stays the one that decides.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from nbguard.server_extension.guard_client import GuardAnswerError, GuardClient

#: The audience the guard issues entitlement tokens for.
AUDIENCE = "nbguard-server"
#: Seconds to wait after a failed fetch before asking the guard again.
RETRY_AFTER_FAILURE = 5.0


class EntitlementError(Exception):
    """An entitlement token that does not verify (or a key that cannot be read)."""


@dataclass(frozen=True)
class Entitlement:
    """A verified entitlement: the user's Jupyter permissions in this server until ``expires``."""

    user: str
    server: str
    permissions: frozenset[str]
    expires: float
    token_id: str


def public_key(answer: Any) -> Any:
    """The guard's public key from its ``entitlements/key`` answer (PEM or JWK)."""
    import jwt
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    if isinstance(answer, dict):
        for name in ("public_key", "key", "pem"):
            value = answer.get(name)
            if isinstance(value, str) and "BEGIN PUBLIC KEY" in value:
                return load_pem_public_key(value.encode())
        jwk = answer["keys"][0] if isinstance(answer.get("keys"), list) else answer
        if isinstance(jwk, dict) and jwk.get("kty") == "OKP":
            return jwt.PyJWK(jwk).key
    raise EntitlementError("the guard's entitlement key is neither PEM nor an Ed25519 JWK")


def verify_entitlement_token(token: str, key: Any, *, user: str) -> Entitlement:
    """Verify an entitlement JWT with the guard's Ed25519 ``key``; raise :class:`EntitlementError`.

    EdDSA only; audience ``nbguard-server``; ``exp``, ``sub``, ``jti`` required;
    ``sub`` must be ``user`` when ``user`` is known.
    """
    import jwt

    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=["EdDSA"],
            audience=AUDIENCE,
            options={"require": ["exp", "sub", "jti", "aud"]},
        )
    except jwt.PyJWTError as error:
        raise EntitlementError(f"entitlement token refused: {error}") from error
    if user and claims["sub"] != user:
        raise EntitlementError(f"entitlement token is for {claims['sub']!r}, not {user!r}")
    permissions = claims.get("permissions", [])
    if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
        raise EntitlementError("entitlement token's permissions are not a list of names")
    return Entitlement(
        user=str(claims["sub"]),
        server=str(claims.get("server", "")),
        permissions=frozenset(permissions),
        expires=float(claims["exp"]),
        token_id=str(claims["jti"]),
    )


def token_from(answer: Any) -> str:
    """The JWT in the guard's ``entitlements`` answer."""
    if isinstance(answer, dict):
        for name in ("token", "entitlement"):
            if isinstance(answer.get(name), str):
                return str(answer[name])
    raise EntitlementError("the guard's entitlements answer holds no token")


class EntitlementCache:
    """The current verified entitlement, fetched from the guard and refreshed before expiry."""

    def __init__(
        self,
        guard: GuardClient,
        *,
        user: str,
        refresh_margin: float = 30.0,
        log: logging.Logger | None = None,
    ) -> None:
        self.guard = guard
        self.user = user
        self.refresh_margin = refresh_margin
        self.log = log or logging.getLogger(__name__)
        self._entitlement: Entitlement | None = None
        self._key: Any = None
        self._failed_at: float | None = None
        self._lock = asyncio.Lock()

    def fresh(self, now: float) -> Entitlement | None:
        """The cached entitlement if it need not be refreshed yet."""
        held = self._entitlement
        if held is not None and now < held.expires - self.refresh_margin:
            return held
        return None

    def valid(self, now: float) -> Entitlement | None:
        """The cached entitlement if it has not expired."""
        held = self._entitlement
        return held if held is not None and now < held.expires else None

    async def current(self) -> Entitlement | None:
        """The entitlement to authorize with now, or None (fail closed)."""
        now = time.time()
        held = self.fresh(now)
        if held is not None:
            return held
        async with self._lock:
            now = time.time()
            held = self.fresh(now)
            if held is not None:
                return held
            if self._failed_at is not None and now - self._failed_at < RETRY_AFTER_FAILURE:
                return self.valid(now)
            try:
                self._entitlement = await self.fetch()
            except (GuardAnswerError, EntitlementError) as error:
                self._failed_at = now
                self.log.warning(
                    "nbguard | no entitlement from the guard (%s); terminals, writes and "
                    "execution are refused until there is one",
                    getattr(error, "body", None) or error,
                )
                return self.valid(time.time())
            self._failed_at = None
            return self._entitlement

    async def fetch(self) -> Entitlement:
        """Fetch and verify a new token (and the key, when unknown or rotated)."""
        _, answer = await self.guard.call("GET", "api/v1/entitlements")
        token = token_from(answer)
        if self._key is not None:
            try:
                return verify_entitlement_token(token, self._key, user=self.user)
            except EntitlementError:
                pass  # perhaps a new key: fetch it and try once more
        _, key_answer = await self.guard.call("GET", "api/v1/entitlements/key")
        self._key = public_key(key_answer)
        return verify_entitlement_token(token, self._key, user=self.user)
