"""Ed25519 keys for checkpoint signatures: generation, loading, and key ids.

Keys are PEM files the admin controls (PKCS#8 private keys, SubjectPublicKeyInfo
public keys). A key id is derived from the public key alone, so a verifier can
match a signature to a key without trusting anything stored beside it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from nbguard.errors import ConfigError

log = logging.getLogger(__name__)


def key_id(public_key: Ed25519PublicKey) -> str:
    """Return the key id: the first 16 bytes of SHA-256 of the raw public key, in hex."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:32]


@dataclass(frozen=True)
class SigningKey:
    """A private signing key and the id of its public half."""

    private_key: Ed25519PrivateKey = field(repr=False)
    key_id: str

    def sign(self, message: bytes) -> bytes:
        """Return the Ed25519 signature of ``message``."""
        return self.private_key.sign(message)


def verify_signature(public_key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    """Return whether ``signature`` is a valid Ed25519 signature of ``message``."""
    try:
        public_key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read {what} {path}: {error.strerror}") from None


def load_signing_key(path: str | Path) -> SigningKey:
    """Load an unencrypted Ed25519 private key from a PEM file; ConfigError if it is not one."""
    data = _read(path, "signing key")
    try:
        private_key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{path}: not an unencrypted PEM private key ({error})") from None
    if not isinstance(private_key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: the ledger signing key must be Ed25519")
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("signing key %s is readable by other users (mode %o)", path, mode & 0o777)
    return SigningKey(private_key, key_id(private_key.public_key()))


def load_public_keys(paths: Iterable[str | Path]) -> dict[str, Ed25519PublicKey]:
    """Load Ed25519 public keys (or the public halves of private keys) keyed by key id.

    Give every key that ever signed, so checkpoints made before a rotation still verify.
    """
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        data = _read(path, "public key")
        try:
            if b"PRIVATE KEY" in data:
                private_key = serialization.load_pem_private_key(data, password=None)
                loaded: object = private_key.public_key()
            else:
                loaded = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as error:
            raise ConfigError(f"{path}: not a PEM key ({error})") from None
        if not isinstance(loaded, Ed25519PublicKey):
            raise ConfigError(f"{path}: ledger keys must be Ed25519")
        keys[key_id(loaded)] = loaded
    return keys


def generate_key_pair(private_path: str | Path, public_path: str | Path) -> str:
    """Write a new Ed25519 key pair as PEM files with mode 0600; return its key id.

    Missing parent directories are created with mode 0700. Refuses (ConfigError)
    to overwrite an existing file.
    """
    private_key = Ed25519PrivateKey.generate()
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for path in (private_path, public_path):
        if Path(path).exists():
            raise ConfigError(f"{path} already exists; not overwriting a key")
    for path in (private_path, public_path):
        _make_private_parents(Path(path).parent)
    _write_private(private_path, private_pem)
    _write_private(public_path, public_pem)
    return key_id(private_key.public_key())


def _make_private_parents(folder: Path) -> None:
    """Create ``folder`` and its missing ancestors, mode 0700; existing ones are left alone."""
    missing: list[Path] = []
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:  # pragma: no cover - the root always exists
            break
        folder = folder.parent
    for created in reversed(missing):
        try:
            created.mkdir(mode=0o700)
            os.chmod(created, 0o700)  # whatever the umask
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs, not ours to change
        except OSError as error:
            raise ConfigError(f"cannot create directory {created}: {error.strerror}") from None


def _write_private(path: str | Path, data: bytes) -> None:
    # O_EXCL: never follow a planted symlink or clobber a file created meanwhile.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as error:
        raise ConfigError(f"cannot create {path}: {error.strerror}") from None
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)  # exactly 0600, whatever the umask
        handle.write(data)
