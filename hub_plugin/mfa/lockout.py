"""Lockout with exponential back-off after repeated second-factor failures."""

from __future__ import annotations

from dataclasses import dataclass

from nbguard.errors import MFAError


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    """After ``free_attempts`` failures, each further failure doubles the wait.

    The wait after failure number ``free_attempts + k`` is
    ``base_delay * 2**k`` seconds, capped at ``max_delay``. Counters are kept per
    user and per client address, so an attacker spraying one user from many
    addresses, or many users from one address, is slowed either way.
    """

    free_attempts: int = 5
    base_delay: int = 30
    max_delay: int = 3600

    def delay_after(self, failures: int) -> int:
        """Seconds to wait after ``failures`` consecutive failures (0 while attempts are free)."""
        if failures < self.free_attempts:
            return 0
        return int(min(self.base_delay * 2 ** (failures - self.free_attempts), self.max_delay))

    def check(self, failures: int, last_failure: float, now: float) -> None:
        """Raise MFAError ``locked`` with ``retry_after`` while the wait is not over."""
        remaining = last_failure + self.delay_after(failures) - now
        if remaining > 0:
            raise MFAError(
                f"locked after {failures} failures", reason="locked", retry_after=int(remaining) + 1
            )
