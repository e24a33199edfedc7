"""Checking a second factor: lockout, TOTP or recovery code, replay refusal, records.

One place for the rules every page that asks for a code follows (the login
challenge, enrolment and step-up), so that none of them can forget the lockout,
the replay check or the ledger record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nbguard.errors import MFAError
from nbguard.hub_plugin.mfa import recovery, totp
from nbguard.hub_plugin.mfa.store import Counts, TOTPEnrolment, client_key, user_key
from nbguard.hub_plugin.recording import append_record

if TYPE_CHECKING:
    from nbguard.hub_plugin.hub_guard import NBGuard


@dataclass(frozen=True, slots=True)
class Enrolment:
    """What the enrolment page shows: the secret, its URI and the QR code."""

    secret: str
    uri: str
    qr_svg: str


class SecondFactor:
    """Verifies codes for one hub, with lockout and ledger records."""

    def __init__(self, guard: NBGuard) -> None:
        self.guard = guard

    # -- lockout -----------------------------------------------------------------

    def check_lockout(self, username: str, client_ip: str, *, now: float | None = None) -> None:
        """Raise MFAError ``locked`` (with ``retry_after``) while user or client is locked."""
        keys = (user_key(username), client_key(client_ip))
        self._check_counts(self.guard.store.failures_of(keys), now)

    def _check_counts(self, counts: Counts, now: float | None) -> None:
        moment = time.time() if now is None else now
        for failures, last in counts.values():
            # A counter forgets once the longest lockout has passed with no failure.
            if failures and moment - last <= self.guard.lockout.max_delay:
                self.guard.lockout.check(failures, last, moment)

    async def _failed(
        self, username: str, client_ip: str, session: str | None, method: str, error: MFAError
    ) -> None:
        keys = (user_key(username), client_key(client_ip))
        failures = self.guard.store.count_failures(
            keys, time.time(), forget_after=self.guard.lockout.max_delay
        )
        await self._record_failure(username, client_ip, session, method, error, failures)

    async def _record_failure(
        self,
        username: str,
        client_ip: str,
        session: str | None,
        method: str,
        error: MFAError,
        failures: int,
    ) -> None:
        await self.record(
            "verify", "failure", method, username, session, client_ip=client_ip,
            failures=failures, reason=error.reason,
        )  # fmt: skip
        if failures == self.guard.lockout.free_attempts:
            delay = self.guard.lockout.delay_after(failures)
            await self.record(
                "lockout", "failure", method, username, session, client_ip=client_ip,
                failures=failures, reason=f"locked for {delay} s",
            )  # fmt: skip

    # -- verification ------------------------------------------------------------------

    async def verify(
        self, username: str, code: str, *, client_ip: str, session: str | None, event: str
    ) -> str:
        """Check ``code`` (TOTP or recovery code); return the method that matched.

        Raises MFAError: ``locked`` before any check while locked out,
        ``not_enrolled``, ``invalid`` or ``replayed``. Failures are counted and
        recorded; a success clears the user's counter and is recorded as ``event``
        (``verify`` or ``step-up``).
        """
        text = code.strip() if isinstance(code, str) else ""
        if text.replace(" ", "").isdigit():
            await self._verify_totp(username, text, client_ip=client_ip, session=session)
            method = "totp"
        else:
            await self._verify_recovery_code(username, text, client_ip=client_ip, session=session)
            method = "recovery-code"
        await self.record(event, "success", method, username, session, client_ip=client_ip)
        return method

    async def _verify_totp(
        self, username: str, text: str, *, client_ip: str, session: str | None
    ) -> None:
        # Lockout, match, step and counters are one store transaction, so neither a
        # replay nor guesses in parallel can get between the check and the update.
        now = time.time()

        def admit(counts: Counts) -> None:
            self._check_counts(counts, now)  # a lockout is reported before anything else

        def match(enrolment: TOTPEnrolment) -> int:
            return totp.verify_code(
                enrolment.secret, text, last_step=enrolment.last_step, settings=self.guard.totp
            )

        attempt = self.guard.store.take_totp(
            username,
            (user_key(username), client_key(client_ip)),
            admit=admit,
            match=match,
            clear=user_key(username),
            now=now,
            forget_after=self.guard.lockout.max_delay,
        )
        if attempt.refusal is not None:
            await self._record_failure(
                username, client_ip, session, "totp", attempt.refusal, attempt.failures
            )
            raise attempt.refusal

    async def _verify_recovery_code(
        self, username: str, text: str, *, client_ip: str, session: str | None
    ) -> None:
        # The scrypt hashes are checked outside any lock (tens of milliseconds each);
        # the conditional UPDATE that takes the code is what refuses a second use.
        keys = (user_key(username), client_key(client_ip))
        enrolment, counts = self.guard.store.totp_and_failures(username, keys)
        self._check_counts(counts, None)
        if enrolment is None:
            raise MFAError("no second factor enrolled", reason="not_enrolled")
        try:
            index = recovery.match_code(text, self.guard.store.recovery_hashes(username))
            self.guard.store.use_recovery_code(username, index, clear=user_key(username))
        except MFAError as error:
            await self._failed(username, client_ip, session, "recovery-code", error)
            raise

    # -- enrolment ------------------------------------------------------------------------

    def offer(self, username: str, secret: str | None) -> Enrolment:
        """The enrolment material for ``secret`` (a new one when None)."""
        chosen = secret or totp.new_secret()
        uri = totp.provisioning_uri(chosen, username, self.guard.totp)
        return Enrolment(chosen, uri, totp.qr_code_svg(uri))

    async def confirm(
        self, username: str, secret: str, code: str, *, client_ip: str, session: str | None
    ) -> list[str]:
        """Activate ``secret`` once ``code`` matches it; return the new recovery codes."""
        self.check_lockout(username, client_ip)
        try:
            step = totp.verify_code(secret, code, last_step=None, settings=self.guard.totp)
        except MFAError as error:
            await self._failed(username, client_ip, session, "totp", error)
            raise
        codes = recovery.generate_codes(self.guard.recovery_code_count)
        self.guard.store.enrol_totp(username, secret, step, [recovery.hash_code(c) for c in codes])
        self.guard.store.clear_failures(user_key(username))
        await self.record("enrol", "success", "totp", username, session, client_ip=client_ip)
        return codes

    # -- records ------------------------------------------------------------------------------

    async def record(
        self,
        event: str,
        outcome: str,
        method: str,
        username: str,
        session: str | None,
        **extra: Any,
    ) -> None:
        """Append an ``mfa`` ledger record (awaits durability)."""
        body = {"event": event, "outcome": outcome, "method": method}
        body.update({k: v for k, v in extra.items() if v not in (None, "")})
        await append_record(self.guard, "mfa", body, actor=username, session=session)
