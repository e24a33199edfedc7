"""Secrets at rest: sealed with the first key, opened with any, rotated without loss."""

from __future__ import annotations

import pytest

from nbguard.encryption import SecretBox
from nbguard.errors import ConfigError, SecretError


def test_seal_and_open_round_trip() -> None:
    """A sealed secret opens to the same bytes and does not contain them."""
    box = SecretBox([SecretBox.generate_key()])
    sealed = box.seal(b"JBSWY3DPEHPK3PXP")
    assert "JBSWY3DPEHPK3PXP" not in sealed
    assert box.open(sealed) == b"JBSWY3DPEHPK3PXP"


def test_rotation_keeps_old_values_readable() -> None:
    """With a new key first, old values still open, and rotate() moves them to the new key."""
    old, new = SecretBox.generate_key(), SecretBox.generate_key()
    sealed_old = SecretBox([old]).seal(b"secret")
    both = SecretBox([new, old])
    assert both.open(sealed_old) == b"secret"
    rotated = both.rotate(sealed_old)
    assert SecretBox([new]).open(rotated) == b"secret"
    with pytest.raises(SecretError):
        SecretBox([old]).open(rotated)


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda s: s[:-2] + ("A" if s[-2] != "A" else "B") + s[-1], id="flipped-byte"),
        pytest.param(lambda s: s[: len(s) // 2], id="truncated"),
        pytest.param(lambda s: "not a token", id="garbage"),
        pytest.param(lambda s: "é" + s, id="non-ascii"),
    ],
)
def test_tampered_values_do_not_open(mangle: object) -> None:
    """A tampered or foreign value raises SecretError, never returns bytes."""
    box = SecretBox([SecretBox.generate_key()])
    with pytest.raises(SecretError):
        box.open(mangle(box.seal(b"secret")))  # type: ignore[operator]


def test_wrong_key_does_not_open() -> None:
    """A value sealed under another key cannot be opened."""
    sealed = SecretBox([SecretBox.generate_key()]).seal(b"x")
    with pytest.raises(SecretError):
        SecretBox([SecretBox.generate_key()]).open(sealed)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        pytest.param([], "is empty", id="no-keys"),
        pytest.param(["short"], r"\[0\] is not a Fernet key", id="bad-key"),
    ],
)
def test_bad_keys_are_config_errors(keys: list[str], message: str) -> None:
    """Missing or malformed keys are refused at start with the setting's name."""
    with pytest.raises(ConfigError, match=message):
        SecretBox(keys, setting="MFAAuthenticator.secret_keys")


def test_unseal_tells_whether_an_older_key_sealed_the_value() -> None:
    """unseal() opens like open() and marks a value sealed under a later key as stale."""
    old, new = SecretBox.generate_key(), SecretBox.generate_key()
    both = SecretBox([new, old])
    under_old = SecretBox([old]).seal(b"secret")
    assert (both.unseal(under_old).plaintext, both.unseal(under_old).stale) == (b"secret", True)
    under_new = both.seal(b"secret")
    assert (both.unseal(under_new).plaintext, both.unseal(under_new).stale) == (b"secret", False)
    assert both.unseal(both.rotate(under_old)).stale is False
    assert SecretBox([old]).unseal(under_old).stale is False


@pytest.mark.parametrize("keys", [pytest.param(1, id="one-key"), pytest.param(2, id="two-keys")])
def test_unseal_refuses_what_no_key_opens(keys: int) -> None:
    """A value no configured key sealed, or a tampered one, raises SecretError from unseal()."""
    box = SecretBox([SecretBox.generate_key() for _ in range(keys)])
    foreign = SecretBox([SecretBox.generate_key()]).seal(b"x")
    for value in (foreign, box.seal(b"x")[:-4], "not a token", "é"):
        with pytest.raises(SecretError):
            box.unseal(value)
