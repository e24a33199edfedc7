"""Device assertions: signed statements from a device-trust agent or MDM that a device is managed.

An assertion is a JWT signed by the MDM with an asymmetric key the admin
configures (Ed25519 ``EdDSA``, or ``ES256``/``RS256``); nbguard holds only public
keys. It must name the user (``sub``), the audience nbguard is configured with
(``aud``), the device (``device_id``), when it was issued and when it expires, and
be signed by a configured key. Symmetric algorithms (HS*) and ``none`` are never
accepted, which also defeats the trick of signing with a public key used as an
HMAC secret. Any failure raises :class:`DeviceAssertionError` with a stable
reason code; the device is then simply not trusted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from nbguard.errors import ConfigError, DeviceAssertionError

#: Asymmetric algorithms only; never "none" or HMAC.
ALLOWED_ALGORITHMS = ("EdDSA", "ES256", "RS256")
#: Larger tokens are refused before any parsing.
MAX_TOKEN_BYTES = 8192
REQUIRED_CLAIMS = ("sub", "aud", "iat", "exp", "device_id")


@dataclass(frozen=True, slots=True)
class DeviceAssertion:
    """A verified assertion: this user is on this managed device until ``expires``."""

    username: str
    device_id: str
    issuer: str
    key_id: str
    expires: datetime


class DeviceAssertionVerifier:
    """Verifies device assertions against the admin's public keys.

    ``keys`` maps a key id (the JWT ``kid`` header) to a PEM public key (text or
    a path to a file). A token without ``kid`` is accepted only when exactly one
    key is configured. ``issuers``, if given, lists the accepted ``iss`` values.
    ``max_lifetime`` bounds ``exp - iat``, so a stolen long-lived assertion is
    refused; ``leeway`` tolerates clock skew in seconds.
    """

    def __init__(
        self,
        keys: Mapping[str, str],
        *,
        audience: str = "nbguard",
        issuers: tuple[str, ...] = (),
        max_lifetime: int = 86400,
        leeway: int = 30,
        setting: str = "device_assertion_keys",
    ) -> None:
        self.audience = audience
        self.issuers = issuers
        self.max_lifetime = max_lifetime
        self.leeway = leeway
        self._keys = {kid: _load_key(kid, pem, setting) for kid, pem in keys.items()}

    def verify(self, token: str, username: str, *, now: datetime | None = None) -> DeviceAssertion:
        """The verified assertion for ``username``, or DeviceAssertionError."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_BYTES:
            raise DeviceAssertionError("device assertion missing or too large", reason="malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as error:
            raise DeviceAssertionError(f"device assertion: {error}", reason="malformed") from error
        algorithm = header.get("alg")
        if algorithm not in ALLOWED_ALGORITHMS:
            raise DeviceAssertionError(
                f"device assertion algorithm {algorithm!r} is not allowed", reason="algorithm"
            )
        kid, (key, key_algorithm) = self._key_for(header.get("kid"))
        # Each key signs with one algorithm; a header naming another is refused
        # before the key is used, so no key is ever read as the wrong kind.
        if algorithm != key_algorithm:
            raise DeviceAssertionError(
                f"device assertion algorithm {algorithm} does not match key {kid!r}",
                reason="algorithm",
            )
        moment = now or datetime.now(UTC)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audience,
                # Times are checked below against `moment`, with nbguard's reason codes.
                options={
                    "require": list(REQUIRED_CLAIMS),
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidAudienceError as error:
            raise DeviceAssertionError(f"device assertion: {error}", reason="audience") from error
        except jwt.MissingRequiredClaimError as error:
            raise DeviceAssertionError(
                f"device assertion: {error}", reason="missing_claim"
            ) from error
        except jwt.InvalidSignatureError as error:
            raise DeviceAssertionError(
                "device assertion signature is invalid", reason="signature"
            ) from error
        except (jwt.PyJWTError, ValueError, TypeError) as error:
            raise DeviceAssertionError(f"device assertion: {error}", reason="malformed") from error
        return self._check_claims(claims, username, kid, moment)

    def _key_for(self, kid: Any) -> tuple[str, tuple[Any, str]]:
        if kid is None:
            if len(self._keys) == 1:
                return next(iter(self._keys.items()))
            raise DeviceAssertionError("device assertion has no key id", reason="unknown_key")
        if not isinstance(kid, str) or kid not in self._keys:
            raise DeviceAssertionError(
                f"device assertion key id {kid!r} is unknown", reason="unknown_key"
            )
        return kid, self._keys[kid]

    def _check_claims(
        self, claims: Mapping[str, Any], username: str, kid: str, moment: datetime
    ) -> DeviceAssertion:
        now = moment.timestamp()
        issued, expires = claims["iat"], claims["exp"]
        not_before = claims.get("nbf", issued)
        times = (issued, expires, not_before)
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in times):
            raise DeviceAssertionError("device assertion times are not numbers", reason="malformed")
        if expires + self.leeway < now:
            raise DeviceAssertionError("device assertion has expired", reason="expired")
        if max(issued, not_before) - self.leeway > now:
            raise DeviceAssertionError("device assertion is not valid yet", reason="not_yet_valid")
        if expires - issued > self.max_lifetime:
            raise DeviceAssertionError(
                f"device assertion lives {int(expires - issued)} s, over {self.max_lifetime} s",
                reason="lifetime",
            )
        issuer = claims.get("iss", "")
        if self.issuers and issuer not in self.issuers:
            raise DeviceAssertionError(
                f"device assertion issuer {issuer!r} is not trusted", reason="issuer"
            )
        if claims["sub"] != username:
            raise DeviceAssertionError("device assertion is for another user", reason="wrong_user")
        device_id = claims["device_id"]
        if not isinstance(device_id, str) or not device_id or len(device_id) > 256:
            raise DeviceAssertionError("device assertion device_id is invalid", reason="malformed")
        return DeviceAssertion(
            username=username,
            device_id=device_id,
            issuer=str(issuer),
            key_id=kid,
            expires=datetime.fromtimestamp(expires, UTC),
        )


def _load_key(kid: str, pem: str, setting: str) -> tuple[Any, str]:
    """The public key and the one algorithm it verifies."""
    text = pem
    if "-----BEGIN" not in pem:
        try:
            text = Path(pem).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{setting}[{kid!r}]: cannot read key file {pem}: {error}") from error
    try:
        key = load_pem_public_key(text.encode("ascii"))
    except ValueError as error:
        raise ConfigError(f"{setting}[{kid!r}]: not a PEM public key") from error
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key, "EdDSA"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ES256"
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048:
        return key, "RS256"
    raise ConfigError(
        f"{setting}[{kid!r}]: use an Ed25519, P-256 or RSA (2048 bits or more) public key"
    )
