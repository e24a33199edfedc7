"""One-time recovery codes: shown once at enrolment, stored only as salted scrypt hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence

from nbguard.errors import MFAError

# An alphabet without look-alikes (0/o, 1/l/i), 10 characters of 5 bits = 50 bits.
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_PREFIX = "scrypt"


def generate_codes(count: int = 10) -> list[str]:
    """``count`` new codes like ``k7m2x-q9ptr``."""
    codes = []
    for _ in range(count):
        raw = "".join(secrets.choice(_ALPHABET) for _ in range(10))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    return codes


def _normalize(code: str) -> str:
    return "".join(ch for ch in code.lower() if ch.isalnum())


def hash_code(code: str) -> str:
    """A salted scrypt hash of a code, self-describing: ``scrypt$n$r$p$salt$hash``."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(_normalize(code).encode(), salt=salt, dklen=32, **_SCRYPT)
    return "$".join(
        [_PREFIX, *(str(_SCRYPT[k]) for k in ("n", "r", "p")), salt.hex(), digest.hex()]
    )


def _matches(code: str, stored: str) -> bool:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != _PREFIX:
        return False
    n, r, p = (int(x) for x in parts[1:4])
    digest = hashlib.scrypt(code.encode(), salt=bytes.fromhex(parts[4]), n=n, r=r, p=p, dklen=32)
    return hmac.compare_digest(digest.hex(), parts[5])


def match_code(code: str, stored: Sequence[str | None]) -> int:
    """The index of the unused stored hash that ``code`` matches; MFAError ``invalid`` if none.

    Used codes are ``None`` in ``stored``; the caller sets the returned index to
    ``None`` so that the code cannot be used again.
    """
    normalized = _normalize(code) if isinstance(code, str) else ""
    if len(normalized) != 10:
        raise MFAError("malformed recovery code", reason="invalid")
    for index, hashed in enumerate(stored):
        if hashed is not None and _matches(normalized, hashed):
            return index
    raise MFAError("wrong or already used recovery code", reason="invalid")
