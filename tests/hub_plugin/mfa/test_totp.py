"""TOTP: real RFC 6238 codes, accepted once, in a small clock window, compared in constant time."""

from __future__ import annotations

import pyotp
import pytest

from nbguard.errors import MFAError
from nbguard.hub_plugin.mfa.totp import (
    TOTPSettings,
    new_secret,
    provisioning_uri,
    qr_code_svg,
    verify_code,
)

SETTINGS = TOTPSettings(issuer="Acme Hub")
NOW = 1_800_000_000.0


def code_at(secret: str, moment: float) -> str:
    return pyotp.TOTP(secret).at(moment)


def test_rfc6238_reference_vector() -> None:
    """The RFC 6238 SHA-1 test secret at T=59 gives 94287082 with 8 digits."""
    secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"  # noqa: S105 - RFC 6238 test vector
    settings = TOTPSettings(digits=8)
    assert verify_code(secret, "94287082", last_step=None, settings=settings, at=59) == 1


def test_current_code_is_accepted_and_returns_its_step() -> None:
    """A code from the user's app verifies and yields the time step to store."""
    secret = new_secret()
    assert verify_code(
        secret, code_at(secret, NOW), last_step=None, settings=SETTINGS, at=NOW
    ) == int(NOW // 30)


def test_codes_in_the_clock_window_are_accepted() -> None:
    """A code one step old or one step ahead is accepted (clock skew)."""
    secret = new_secret()
    for offset in (-30, 30):
        assert verify_code(
            secret, code_at(secret, NOW + offset), last_step=None, settings=SETTINGS, at=NOW
        )


@pytest.mark.parametrize(
    ("make_code", "reason"),
    [
        pytest.param(lambda s: code_at(s, NOW - 90), "invalid", id="too-old"),
        pytest.param(lambda s: code_at(s, NOW + 90), "invalid", id="too-far-ahead"),
        pytest.param(lambda s: "12345", "invalid", id="too-short"),
        pytest.param(lambda s: "12345a", "invalid", id="letters"),
        pytest.param(
            lambda s: "\uff11\uff12\uff13\uff14\uff15\uff16", "invalid", id="fullwidth-digits"
        ),
        pytest.param(lambda s: "", "invalid", id="empty"),
        pytest.param(lambda s: None, "invalid", id="not-a-string"),
    ],
)
def test_bad_codes_are_invalid(make_code: object, reason: str) -> None:
    """Codes outside the window or malformed are refused as invalid."""
    secret = new_secret()
    with pytest.raises(MFAError) as raised:
        verify_code(secret, make_code(secret), last_step=None, settings=SETTINGS, at=NOW)  # type: ignore[operator]
    assert raised.value.reason == reason


def test_a_code_cannot_be_used_twice() -> None:
    """Once a step is stored, the same code (or an older one) is refused as replayed."""
    secret = new_secret()
    code = code_at(secret, NOW)
    step = verify_code(secret, code, last_step=None, settings=SETTINGS, at=NOW)
    with pytest.raises(MFAError) as raised:
        verify_code(secret, code, last_step=step, settings=SETTINGS, at=NOW + 5)
    assert raised.value.reason == "replayed"
    with pytest.raises(MFAError):
        verify_code(secret, code_at(secret, NOW - 30), last_step=step, settings=SETTINGS, at=NOW)
    assert (
        verify_code(
            secret, code_at(secret, NOW + 30), last_step=step, settings=SETTINGS, at=NOW + 30
        )
        == step + 1
    )


def test_spaces_in_codes_are_tolerated() -> None:
    """A code typed as '123 456' is accepted."""
    secret = new_secret()
    code = code_at(secret, NOW)
    assert verify_code(secret, f"{code[:3]} {code[3:]}", last_step=None, settings=SETTINGS, at=NOW)


def test_enrolment_material() -> None:
    """The provisioning URI names issuer and user, and the QR code is inline SVG with no script."""
    secret = new_secret()
    uri = provisioning_uri(secret, "alice", SETTINGS)
    assert uri.startswith("otpauth://totp/Acme%20Hub:alice?")
    assert f"secret={secret}" in uri
    svg = qr_code_svg(uri)
    assert svg.startswith("<svg")
    assert "<script" not in svg
    assert len(secret) == 32
