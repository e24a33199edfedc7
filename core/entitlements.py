"""Entitlements: what a user may do in their single-user server, signed by the guard.

The guard service decides, with the policy, whether the user may open
terminals, write files and run code in one server, and hands the server a
short-lived JWT saying so (PyJWT, EdDSA with an Ed25519 key only the guard
holds; audience ``nbguard-server``). The server extension's Authorizer checks
it with :func:`verify_entitlement` and the guard's public key, and trusts
nothing else: not an unsigned answer, not an expired token, not one for
another server. A failure raises :class:`EntitlementError` with a stable
reason; the extension then fails closed.

This module is pure: both the guard service (which signs) and the server
extension (which verifies) import it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import stat
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from nbguard.errors import ConfigError, NBGuardError

log = logging.getLogger(__name__)

#: The ``aud`` of every entitlement: only single-user servers accept them.
AUDIENCE = "nbguard-server"
ALGORITHM = "EdDSA"
#: The Jupyter actions an entitlement answers for (policy actions on the ``Server``).
ACTIONS = ("jupyter.terminal", "jupyter.contents_write", "jupyter.kernel_execute")
#: Claims every entitlement carries.
CLAIMS = ("iss", "aud", "sub", "server", "session", "iat", "exp", "jti", "permissions")
#: Larger tokens are refused before any parsing.
MAX_TOKEN_BYTES = 8192
#: The ``aud`` of a server order: an order is never taken for an entitlement, nor the reverse.
ORDER_AUDIENCE = "nbguard-server-order"
#: What the guard may order a server to do: ``interrupt`` its running kernels.
ORDERS = ("interrupt",)
#: Claims every order carries.
ORDER_CLAIMS = ("iss", "aud", "sub", "server", "iat", "exp", "jti", "order", "reason")
#: Seconds an order is good for: enough to cross the network, too few to be worth keeping.
ORDER_TTL = 60


class EntitlementError(NBGuardError):
    """An entitlement was refused; the server must act as if it had none.

    ``reason`` is a stable code: ``malformed``, ``algorithm``, ``unknown_key``,
    ``signature``, ``expired``, ``not_yet_valid``, ``audience``, ``issuer``,
    ``server``, ``claims``.
    """

    default_user_message = "This server's permissions could not be confirmed; it is read-only."

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Entitlement:
    """A verified entitlement: what ``user`` may do in ``server`` until ``expires``."""

    user: str
    #: JupyterHub's full name of the server (``alice``, ``alice/gpu``).
    server: str
    #: The nbguard login session the server was spawned in ("" when unknown).
    session: str
    #: The actions of :data:`ACTIONS` the policy allowed.
    allowed: frozenset[str]
    issuer: str
    issued: float
    expires: float
    token_id: str
    key_id: str

    def allows(self, action: str) -> bool:
        """Whether ``action`` (one of :data:`ACTIONS`) is allowed."""
        return action in self.allowed


@dataclass(frozen=True, slots=True)
class ServerOrder:
    """A verified order from the guard to one server (see :meth:`EntitlementSigner.order`)."""

    user: str
    server: str
    #: One of :data:`ORDERS`.
    order: str
    #: Why, in the guard's words (``lock 12``, ``grant 7 revoked``), for the server's log.
    reason: str
    expires: float
    token_id: str


@dataclass(frozen=True, slots=True)
class IssuedEntitlement:
    """A freshly signed entitlement, as the guard hands it out."""

    token: str
    expires_in: int
    token_id: str


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    """The key as a JWK (``OKP``/``Ed25519``) whose ``kid`` is its RFC 7638 thumbprint."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    members = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}
    thumbprint = hashlib.sha256(
        json.dumps(members, separators=(",", ":"), sort_keys=True).encode("ascii")
    ).digest()
    return {**members, "kid": _b64url(thumbprint), "alg": ALGORITHM, "use": "sig"}


def public_pem(public_key: Ed25519PublicKey) -> str:
    """The key as PEM (SubjectPublicKeyInfo)."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_or_create_key(path: str | Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in the PEM file ``path``, made (mode 0600) if it is missing.

    The new key is written to a private temporary file and linked into place,
    so two processes starting together end up with one key, never a half-written
    file. ConfigError if the file holds anything but an unencrypted Ed25519 key.
    """
    target = Path(path)
    if not target.exists():
        _create_key(target)
    try:
        data = target.read_bytes()
        key = serialization.load_pem_private_key(data, password=None)
    except OSError as error:
        raise ConfigError(f"cannot read the entitlement key {target}: {error.strerror}") from None
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{target}: not an unencrypted PEM private key ({error})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{target}: the entitlement key must be Ed25519")
    mode = target.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("entitlement key %s is readable by other users (mode %o)", target, mode & 0o777)
    return key


def _create_key(target: Path) -> None:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".entitlement-key-")
    except OSError as error:
        raise ConfigError(f"cannot create the entitlement key {target}: {error}") from None
    try:
        with os.fdopen(fd, "wb") as handle:  # mkstemp made it 0600
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, target)  # atomic, and never replaces a key made meanwhile
        except FileExistsError:
            pass
        except OSError as error:
            raise ConfigError(f"cannot create the entitlement key {target}: {error}") from None
    finally:
        os.unlink(temporary)


class EntitlementSigner:
    """Signs entitlements with the guard's key: ``issuer`` is the service, ``ttl`` seconds."""

    def __init__(self, private_key: Ed25519PrivateKey, *, issuer: str, ttl: int) -> None:
        if type(ttl) is not int or ttl < 1:
            raise ConfigError(
                f"the entitlement lifetime must be a whole number of seconds: {ttl!r}"
            )
        self._key = private_key
        self.issuer = issuer
        self.ttl = ttl
        self.public_key = private_key.public_key()
        self.jwk = public_jwk(self.public_key)
        self.key_id = self.jwk["kid"]

    def issue(
        self,
        *,
        user: str,
        server: str,
        session: str,
        permissions: Mapping[str, bool],
        now: float | None = None,
    ) -> IssuedEntitlement:
        """A signed token saying what ``user`` may do in ``server`` for ``ttl`` seconds."""
        if set(permissions) != set(ACTIONS):
            raise ValueError(f"permissions must answer exactly {', '.join(ACTIONS)}")
        issued = int(time.time() if now is None else now)
        token_id = secrets.token_urlsafe(18)
        claims = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": user,
            "server": server,
            "session": session,
            "iat": issued,
            "nbf": issued,
            "exp": issued + self.ttl,
            "jti": token_id,
            "permissions": {action: bool(permissions[action]) for action in ACTIONS},
        }
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.key_id})
        return IssuedEntitlement(token=token, expires_in=self.ttl, token_id=token_id)

    def order(
        self, *, user: str, server: str, order: str, reason: str, now: float | None = None
    ) -> str:
        """A signed order to ``server``, good for :data:`ORDER_TTL` seconds.

        Orders travel from the guard to a server (a lock or a revocation that
        interrupts kernels); their audience is :data:`ORDER_AUDIENCE`, so an
        entitlement cannot be replayed as one, nor one as an entitlement.
        """
        if order not in ORDERS:
            raise ValueError(f"unknown order {order!r}: one of {', '.join(ORDERS)}")
        issued = int(time.time() if now is None else now)
        claims = {
            "iss": self.issuer,
            "aud": ORDER_AUDIENCE,
            "sub": user,
            "server": server,
            "iat": issued,
            "nbf": issued,
            "exp": issued + ORDER_TTL,
            "jti": secrets.token_urlsafe(18),
            "order": order,
            "reason": reason[:200],
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.key_id})

    def key_document(self) -> dict[str, Any]:
        """What ``GET /api/v1/entitlements/key`` answers: the public key as PEM and as JWK."""
        pem = public_pem(self.public_key)
        return {"kid": self.key_id, "alg": ALGORITHM, "pem": pem, "jwk": dict(self.jwk)}


#: PyJWT's refusals and nbguard's reason codes, most specific first.
_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid"),
    (jwt.InvalidAudienceError, "audience"),
    (jwt.InvalidIssuerError, "issuer"),
    (jwt.MissingRequiredClaimError, "claims"),
    (jwt.InvalidSignatureError, "signature"),
    (jwt.InvalidAlgorithmError, "algorithm"),
)


def verify_entitlement(
    token: str,
    public_key: Ed25519PublicKey | str | bytes,
    *,
    server: str,
    audience: str = AUDIENCE,
    issuer: str | None = None,
    leeway: float = 30.0,
) -> Entitlement:
    """The entitlement in ``token`` if the guard's ``public_key`` (a key or its PEM) signed it
    for ``server`` and ``audience``, and it is in force (``leeway`` seconds of clock skew);
    also from ``issuer`` if given. EntitlementError otherwise.

    ``server`` is JupyterHub's full name of the server: ``alice`` for alice's
    default server, ``alice/gpu`` for a named one; so a token is good for one
    server of one user.
    """
    claims, key_id = _decode(token, public_key, audience, CLAIMS, issuer, leeway)
    return _entitlement(claims, server, key_id)


def verify_order(
    token: str, public_key: Ed25519PublicKey | str | bytes, *, server: str, leeway: float = 30.0
) -> ServerOrder:
    """The order in ``token`` if the guard's ``public_key`` signed it for ``server`` and it is
    in force; EntitlementError (with the same reasons as :func:`verify_entitlement`) if not.

    An order lives :data:`ORDER_TTL` seconds; the receiver keeps the ``jti`` of
    those it carried out until they expire, so a replay does nothing twice.
    """
    claims, _key_id = _decode(token, public_key, ORDER_AUDIENCE, ORDER_CLAIMS, None, leeway)
    if claims["server"] != server:
        raise EntitlementError(
            f"order is for server {claims['server']!r}, not {server!r}", reason="server"
        )
    texts = (claims["sub"], claims["jti"], claims["reason"], claims["order"])
    lifetime = claims["exp"] - claims["iat"]
    if (
        not all(isinstance(text, str) for text in texts)
        or claims["order"] not in ORDERS
        or not isinstance(lifetime, int)
        or not 0 < lifetime <= ORDER_TTL
    ):
        raise EntitlementError("order claims are malformed", reason="claims")
    return ServerOrder(
        user=claims["sub"],
        server=server,
        order=claims["order"],
        reason=claims["reason"],
        expires=float(claims["exp"]),
        token_id=claims["jti"],
    )


def _decode(
    token: str,
    public_key: Ed25519PublicKey | str | bytes,
    audience: str,
    required: tuple[str, ...],
    issuer: str | None,
    leeway: float,
) -> tuple[dict[str, Any], str]:
    """The claims of ``token`` checked by PyJWT (EdDSA only, ``audience``, ``required``,
    times with ``leeway``), and the ``kid`` of ``public_key``; EntitlementError if refused."""
    key = _public_key(public_key)
    key_id = public_jwk(key)["kid"]
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_BYTES:
        raise EntitlementError("token missing or too large", reason="malformed")
    try:
        # PyJWT refuses every algorithm but EdDSA (no "none", no HMAC with the key as secret).
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=issuer,
            leeway=leeway,
            options={"require": list(required)},
        )
    except jwt.PyJWTError as error:
        reason = next((code for kind, code in _REASONS if isinstance(error, kind)), "malformed")
        if reason == "signature" and _key_id_of(token) != key_id:
            # Signed by another key (a replica with its own, a rotation): fetch the key again.
            reason = "unknown_key"
        raise EntitlementError(f"token refused: {error}", reason=reason) from None
    return claims, key_id


def _key_id_of(token: str) -> Any:
    """The ``kid`` a token's header names (None if it names none)."""
    return jwt.get_unverified_header(token).get("kid")


def _public_key(value: Ed25519PublicKey | str | bytes) -> Ed25519PublicKey:
    if isinstance(value, Ed25519PublicKey):
        return value
    try:
        loaded = serialization.load_pem_public_key(
            value.encode("ascii") if isinstance(value, str) else value
        )
    except (ValueError, TypeError, UnicodeEncodeError) as error:
        raise ConfigError(f"not a PEM public key: {error}") from None
    if not isinstance(loaded, Ed25519PublicKey):
        raise ConfigError("the guard's entitlement key must be Ed25519")
    return loaded


def _entitlement(claims: Mapping[str, Any], server: str, key_id: str) -> Entitlement:
    if claims["server"] != server:
        raise EntitlementError(
            f"entitlement is for server {claims['server']!r}, not {server!r}", reason="server"
        )
    permissions = claims["permissions"]
    texts = (claims["sub"], claims["session"], claims["jti"], claims["iss"])
    if (
        not isinstance(permissions, dict)
        or set(permissions) != set(ACTIONS)
        or not all(type(v) is bool for v in permissions.values())
        or not all(isinstance(text, str) for text in texts)
        or not claims["sub"]
    ):
        raise EntitlementError("entitlement claims are malformed", reason="claims")
    return Entitlement(
        user=claims["sub"],
        server=server,
        session=claims["session"],
        allowed=frozenset(action for action, allowed in permissions.items() if allowed),
        issuer=claims["iss"],
        issued=float(claims["iat"]),
        expires=float(claims["exp"]),
        token_id=claims["jti"],
        key_id=key_id,
    )
