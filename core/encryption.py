"""Secrets at rest (TOTP secrets, tokens), sealed with keys the admin supplies.

Sealing uses Fernet from ``cryptography`` (AES-128-CBC with HMAC-SHA256,
authenticated and timestamped). Several keys can be configured: the first seals,
all open, so keys rotate by putting a new key first, re-sealing stored values
with :meth:`SecretBox.rotate`, then removing the old key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from nbguard.errors import ConfigError, SecretError


@dataclass(frozen=True, slots=True)
class Unsealed:
    """An opened value, and whether it should be re-sealed under the first key."""

    plaintext: bytes
    #: True when a key other than the first sealed it (see :meth:`SecretBox.rotate`).
    stale: bool


class SecretBox:
    """Seal and open small secrets with a list of keys (first seals, all open)."""

    def __init__(self, keys: Sequence[str | bytes], *, setting: str = "secret_keys") -> None:
        if not keys:
            raise ConfigError(
                f"{setting} is empty: generate a key with `nbguard secret-key` and configure it"
            )
        fernets = []
        for index, key in enumerate(keys):
            try:
                fernets.append(Fernet(key))
            except (ValueError, TypeError) as error:
                raise ConfigError(
                    f"{setting}[{index}] is not a Fernet key (32 url-safe base64 bytes)"
                ) from error
        self._box = MultiFernet(fernets)
        # Each key on its own as well, so that unseal() can tell which one opened a value.
        self._newest = fernets[0]
        self._older = MultiFernet(fernets[1:]) if len(fernets) > 1 else None

    @staticmethod
    def generate_key() -> str:
        """A new random key, as text to put in the configuration."""
        return Fernet.generate_key().decode("ascii")

    def seal(self, plaintext: bytes) -> str:
        """Encrypt and authenticate ``plaintext`` with the first key."""
        return self._box.encrypt(plaintext).decode("ascii")

    def open(self, sealed: str) -> bytes:
        """Decrypt a sealed value with any configured key; SecretError if none opens it."""
        try:
            return self._box.decrypt(sealed.encode("ascii"))
        except (InvalidToken, UnicodeEncodeError, AttributeError) as error:
            raise SecretError("sealed secret cannot be opened with the configured keys") from error

    def unseal(self, sealed: str) -> Unsealed:
        """:meth:`open`, and whether the value is sealed under an older key.

        Costs what :meth:`open` costs (Fernet tokens name no key, so the keys are
        tried in order either way); a caller that would re-seal on every read can
        call :meth:`rotate` only when ``stale`` is true.
        """
        try:
            token = sealed.encode("ascii")
            try:
                return Unsealed(self._newest.decrypt(token), stale=False)
            except InvalidToken:
                if self._older is None:
                    raise
                return Unsealed(self._older.decrypt(token), stale=True)
        except (InvalidToken, UnicodeEncodeError, AttributeError) as error:
            raise SecretError("sealed secret cannot be opened with the configured keys") from error

    def rotate(self, sealed: str) -> str:
        """Re-seal a value under the first key (after adding a new key in front)."""
        try:
            return self._box.rotate(sealed.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeEncodeError, AttributeError) as error:
            raise SecretError("sealed secret cannot be opened with the configured keys") from error
