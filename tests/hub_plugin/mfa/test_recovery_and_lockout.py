"""Recovery codes are single-use and stored hashed; lockout backs off exponentially."""

from __future__ import annotations

import pytest

from nbguard.errors import MFAError
from nbguard.hub_plugin.mfa.lockout import LockoutPolicy
from nbguard.hub_plugin.mfa.recovery import generate_codes, hash_code, match_code


def test_codes_are_unique_and_stored_only_as_hashes() -> None:
    """Generated codes differ, and their stored form contains neither the code nor its parts."""
    codes = generate_codes(10)
    assert len(set(codes)) == 10
    stored = [hash_code(c) for c in codes]
    for code, hashed in zip(codes, stored, strict=True):
        assert code.replace("-", "") not in hashed
        assert hashed.startswith("scrypt$")


def test_a_recovery_code_works_once() -> None:
    """A code matches its hash; once the caller clears it, the same code is refused."""
    codes = generate_codes(3)
    stored: list[str | None] = [hash_code(c) for c in codes]
    index = match_code(codes[1].upper(), stored)
    assert index == 1
    stored[index] = None
    with pytest.raises(MFAError):
        match_code(codes[1], stored)


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("aaaaa-aaaaa", id="wrong"),
        pytest.param("short", id="malformed"),
        pytest.param("", id="empty"),
    ],
)
def test_wrong_recovery_codes_are_refused(code: str) -> None:
    """Wrong or malformed recovery codes raise MFAError invalid."""
    stored: list[str | None] = [hash_code(c) for c in generate_codes(2)]
    with pytest.raises(MFAError) as raised:
        match_code(code, stored)
    assert raised.value.reason == "invalid"


def test_corrupt_stored_hash_never_matches() -> None:
    """A corrupted stored entry is skipped, not an error and not a match."""
    code = generate_codes(1)[0]
    with pytest.raises(MFAError):
        match_code(code, ["md5$abc", "scrypt$1$2"])


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(0, 0), (4, 0), (5, 30), (6, 60), (7, 120), (20, 3600)],
)
def test_backoff_doubles_after_free_attempts(failures: int, delay: int) -> None:
    """Five free attempts, then 30 s doubling per failure, capped at an hour."""
    assert LockoutPolicy().delay_after(failures) == delay


def test_check_raises_with_retry_after_while_locked() -> None:
    """While the wait runs, check raises locked with the seconds left; after it, it passes."""
    policy = LockoutPolicy()
    with pytest.raises(MFAError) as raised:
        policy.check(6, last_failure=1000.0, now=1010.0)
    assert (raised.value.reason, raised.value.retry_after) == ("locked", 51)
    policy.check(6, last_failure=1000.0, now=1061.0)
