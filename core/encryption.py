"""Secrets at rest (TOTP secrets, tokens), sealed with keys the admin supplies.

Sealing uses Fernet from ``cryptography`` (AES-128-CBC with HMAC-SHA256,
authenticated and timestamped). Several keys can be configured: the first seals,
all open, so keys rotate by putting a new key first, re-sealing stored values
with :meth:`SecretBox.rotate`, then removing the old key.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from nbguard.errors import ConfigError, SecretError


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

    def rotate(self, sealed: str) -> str:
        """Re-seal a value under the first key (after adding a new key in front)."""
        try:
            return self._box.rotate(sealed.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeEncodeError, AttributeError) as error:
            raise SecretError("sealed secret cannot be opened with the configured keys") from error
