"""TOTP (RFC 6238): enrolment material and code checks that refuse replays.

The one-time-password arithmetic is pyotp's; this module adds what a login
needs around it: the matched time step is returned so that the caller stores it
and no code at or before that step is accepted again, codes are compared in
constant time, and malformed input is refused before any work.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

import pyotp
import segno

from nbguard.errors import MFAError


@dataclass(frozen=True, slots=True)
class TOTPSettings:
    """How codes are made and checked.

    ``valid_window`` is how many 30-second steps before and after now are
    accepted, to tolerate clock skew between the phone and the hub.
    """

    issuer: str = "nbguard"
    digits: int = 6
    interval: int = 30
    valid_window: int = 1


def new_secret() -> str:
    """A new random base32 secret (160 bits)."""
    return pyotp.random_base32(length=32)


def provisioning_uri(secret: str, username: str, settings: TOTPSettings) -> str:
    """The ``otpauth://`` URI an authenticator app scans."""
    totp = pyotp.TOTP(secret, digits=settings.digits, interval=settings.interval)
    return totp.provisioning_uri(name=username, issuer_name=settings.issuer)


def qr_code_svg(uri: str) -> str:
    """The URI as an inline SVG QR code (no imaging stack needed)."""
    return str(segno.make(uri, error="m").svg_inline(scale=4, title="TOTP enrolment QR code"))


def verify_code(
    secret: str,
    code: str,
    *,
    last_step: int | None,
    settings: TOTPSettings,
    at: float | None = None,
) -> int:
    """Check ``code``; return the time step it matched, to be stored as ``last_step``.

    Raises MFAError ``invalid`` for a wrong or malformed code and ``replayed``
    for a code whose step is not after ``last_step`` (each code works once, and
    an older code cannot follow a newer one).
    """
    normalized = "".join(code.split()) if isinstance(code, str) else ""
    if len(normalized) != settings.digits or not normalized.isascii() or not normalized.isdigit():
        raise MFAError("malformed TOTP code", reason="invalid")
    totp = pyotp.TOTP(secret, digits=settings.digits, interval=settings.interval)
    now_step = int((time.time() if at is None else at) // settings.interval)
    matched = None
    for step in range(now_step - settings.valid_window, now_step + settings.valid_window + 1):
        # Compare every candidate so that timing does not reveal which step matched.
        if hmac.compare_digest(totp.generate_otp(step), normalized) and matched is None:
            matched = step
    if matched is None:
        raise MFAError("wrong TOTP code", reason="invalid")
    if last_step is not None and matched <= last_step:
        raise MFAError("TOTP code already used", reason="replayed")
    return matched
