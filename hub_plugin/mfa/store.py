"""Where second factors live: enrolments, recovery-code hashes, failure counters, sightings.

SQLAlchemy Core over any database the hub can reach (SQLite by default), opened
like nbguard's other stores (``nbguard.database``: SQLite in WAL mode with
``synchronous=FULL``, write transactions that take the lock up front). TOTP
secrets are stored sealed (``NBGuard.secret_keys``), recovery codes only as
salted hashes. A TOTP code is checked in one write transaction
(:meth:`MFAStore.take_totp`) that locks the user's factor, reads the failure
counters, and then takes the step or counts the failure, so two hub requests
racing with the same code cannot both win and parallel guesses cannot slip past
a lockout; a login's second factor costs one commit. A recovery code is taken
with one conditional UPDATE (its scrypt check is too slow to run under the lock).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    case,
    delete,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.sql import Select

from nbguard.database import create_tables, normalise_url, open_engine, write_transaction
from nbguard.encryption import SecretBox
from nbguard.errors import ConfigError, MFAError, NBGuardError

metadata = MetaData()

totp_table = Table(
    "nbguard_mfa_totp",
    metadata,
    Column("username", String(256), primary_key=True),
    Column("secret", Text, nullable=False),
    Column("last_step", BigInteger, nullable=True),
    Column("created_at", Float, nullable=False),
)

recovery_table = Table(
    "nbguard_mfa_recovery",
    metadata,
    Column("username", String(256), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("code_hash", String(256), nullable=False),
    Column("used_at", Float, nullable=True),
)

failure_table = Table(
    "nbguard_mfa_failures",
    metadata,
    Column("key", String(512), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("last_failure", Float, nullable=False),
)

seen_table = Table(
    "nbguard_seen",
    metadata,
    Column("username", String(256), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("fingerprint", String(128), primary_key=True),
    Column("first_seen", Float, nullable=False),
)

# The statements of a login's hot path, built once: a statement object keeps its
# cache key, so executing it again skips SQLAlchemy's construction and key work
# (a third of a code check's time in the hub, measured with py-spy).
_TOTP_OF = select(totp_table.c.secret, totp_table.c.last_step).where(
    totp_table.c.username == bindparam("username")
)
# On PostgreSQL the code check locks the user's factor row until it commits
# (SQLite ignores FOR UPDATE: its write transaction already holds the database lock).
_TOTP_TO_TAKE = _TOTP_OF.with_for_update()
_ENROLLED = select(totp_table.c.username).where(totp_table.c.username == bindparam("username"))
_TAKE_STEP = (
    update(totp_table)
    .where(totp_table.c.username == bindparam("who"))
    .where(or_(totp_table.c.last_step.is_(None), totp_table.c.last_step < bindparam("new_step")))
    .values(last_step=bindparam("new_step"), secret=bindparam("resealed"))
)
_CLEAR_FAILURES = delete(failure_table).where(failure_table.c.key == bindparam("key"))
# One more failure, or the first of a new count once the last is older than the
# longest lockout (then the counter has forgotten, see SecondFactor).
_COUNT_FAILURE = (
    update(failure_table)
    .where(failure_table.c.key == bindparam("counter"))
    .values(
        failures=case(
            (failure_table.c.last_failure < bindparam("forget_before"), 1),
            else_=failure_table.c.failures + 1,
        ),
        last_failure=bindparam("now"),
    )
)
_FIRST_FAILURE = insert(failure_table).values(
    key=bindparam("counter"), failures=1, last_failure=bindparam("now")
)
_FAILURES_OF = select(
    failure_table.c.key, failure_table.c.failures, failure_table.c.last_failure
).where(failure_table.c.key.in_(bindparam("keys", expanding=True)))


@functools.lru_cache(maxsize=16)
def _sightings_of(kinds: tuple[str, ...]) -> Select[tuple[str, str]]:
    """The sightings query for these kinds, one fingerprint parameter per kind."""
    return select(seen_table.c.kind, seen_table.c.fingerprint).where(
        seen_table.c.username == bindparam("username"),
        or_(
            *(
                (seen_table.c.kind == kind) & (seen_table.c.fingerprint == bindparam(f"fp{i}"))
                for i, kind in enumerate(kinds)
            )
        ),
    )


#: PostgreSQL advisory lock that serialises table creation between hubs ("nbmfa").
_SCHEMA_LOCK = 0x6E626D6661


class StoreError(NBGuardError):
    """The MFA database failed; the login fails closed."""


@dataclass(frozen=True, slots=True)
class TOTPEnrolment:
    """A user's active TOTP factor (secret opened)."""

    secret: str
    last_step: int | None


#: Failure counters as read: ``{key: (failures, time of the last one)}``.
Counts = dict[str, tuple[int, float]]


@dataclass(frozen=True, slots=True)
class TOTPAttempt:
    """What :meth:`MFAStore.take_totp` did with one code."""

    #: The time step taken, or None when the code was refused.
    step: int | None
    #: Why the code was refused (``invalid`` or ``replayed``); None when it was taken.
    refusal: MFAError | None = None
    #: After a refusal, the highest of the counters it added to.
    failures: int = 0


@dataclass(frozen=True, slots=True)
class LoginFacts:
    """What a primary login needs from the store: sightings and whether a factor exists."""

    #: The kinds (``device``, ``network``) seen before with the login's fingerprints.
    seen: frozenset[str]
    #: True when the user has an active second factor.
    enrolled: bool


class MFAStore:
    """Second-factor state of every user, in one database."""

    def __init__(self, url: str, secrets: SecretBox) -> None:
        try:
            self.engine = open_engine(normalise_url(url, what="the MFA store"))
            create_tables(self.engine, metadata, lock_key=_SCHEMA_LOCK)
        except (ConfigError, SQLAlchemyError) as error:
            raise ConfigError(f"NBGuard.mfa_db_url: cannot open {url!r}: {error}") from error
        self.secrets = secrets

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    # -- TOTP ------------------------------------------------------------------

    def totp(self, username: str) -> TOTPEnrolment | None:
        """The user's TOTP enrolment, or None when they have none."""
        with self._connect() as conn:
            return self._totp(conn, username)

    def totp_and_failures(
        self, username: str, keys: Iterable[str]
    ) -> tuple[TOTPEnrolment | None, dict[str, tuple[int, float]]]:
        """:meth:`totp` and :meth:`failures_of` in one round trip (a code check needs both)."""
        with self._connect() as conn:
            return self._totp(conn, username), self._failures(conn, keys)

    def _totp(self, conn: Connection, username: str) -> TOTPEnrolment | None:
        row = conn.execute(_TOTP_OF, {"username": username}).first()
        if row is None:
            return None
        secret = self.secrets.open(row.secret).decode("ascii")
        return TOTPEnrolment(secret, row.last_step)

    def take_totp(
        self,
        username: str,
        keys: Sequence[str],
        *,
        admit: Callable[[Counts], None],
        match: Callable[[TOTPEnrolment], int],
        clear: str,
        now: float,
        forget_after: float,
    ) -> TOTPAttempt:
        """Check a TOTP code and take its step or count the failure, in one write transaction.

        Under the lock of that transaction (the user's factor row on PostgreSQL,
        the database on SQLite): ``admit`` sees the counters of ``keys`` and may
        raise MFAError (``locked``), then MFAError ``not_enrolled`` is raised when
        the user has no factor; nothing is written in either case. ``match``
        returns the code's time step or raises MFAError (``invalid``,
        ``replayed``). A matched step later than the stored one is taken (the
        secret re-sealed if an older key sealed it) and the counter ``clear`` (one
        of ``keys``) deleted if it is set; a refusal adds one failure to every key's counter
        (afresh when its last failure is more than ``forget_after`` seconds
        before ``now``) and is returned, not raised, since the counts commit.
        """
        refusal = None
        with self._begin() as conn:
            row = conn.execute(_TOTP_TO_TAKE, {"username": username}).first()
            counts = self._failures(conn, keys)
            admit(counts)
            if row is None:
                raise MFAError("no second factor enrolled", reason="not_enrolled")
            unsealed = self.secrets.unseal(row.secret)
            enrolment = TOTPEnrolment(unsealed.plaintext.decode("ascii"), row.last_step)
            try:
                step = match(enrolment)
                sealed = self.secrets.rotate(row.secret) if unsealed.stale else row.secret
                taken = conn.execute(
                    _TAKE_STEP, {"who": username, "new_step": step, "resealed": sealed}
                )
                if taken.rowcount != 1:  # the lock makes this unreachable; kept as a second guard
                    raise MFAError("TOTP code already used", reason="replayed")
            except MFAError as error:
                refusal = error
                failures = self._count_failures(conn, keys, now, forget_after)
            else:
                if counts.get(clear, (0, 0.0))[0]:
                    conn.execute(_CLEAR_FAILURES, {"key": clear})
        if refusal is not None:
            return TOTPAttempt(None, refusal, failures)
        return TOTPAttempt(step)

    def enrol_totp(
        self, username: str, secret: str, step: int, recovery_hashes: Sequence[str]
    ) -> None:
        """Activate a confirmed TOTP factor and its recovery codes; MFAError if one exists."""
        try:
            with self._begin() as conn:
                conn.execute(
                    insert(totp_table).values(
                        username=username,
                        secret=self.secrets.seal(secret.encode("ascii")),
                        last_step=step,
                        created_at=time.time(),
                    )
                )
                conn.execute(delete(recovery_table).where(recovery_table.c.username == username))
                if recovery_hashes:
                    conn.execute(
                        insert(recovery_table),
                        [
                            {"username": username, "position": i, "code_hash": h, "used_at": None}
                            for i, h in enumerate(recovery_hashes)
                        ],
                    )
        except IntegrityError as error:
            raise MFAError("a second factor is already enrolled", reason="invalid") from error

    def is_enrolled(self, username: str) -> bool:
        """True when the user has an active second factor."""
        with self._connect() as conn:
            row = conn.execute(_ENROLLED, {"username": username}).first()
        return row is not None

    def reset(self, username: str) -> bool:
        """Remove the user's factor, recovery codes and counters; True if there was a factor."""
        with self._begin() as conn:
            removed = conn.execute(delete(totp_table).where(totp_table.c.username == username))
            conn.execute(delete(recovery_table).where(recovery_table.c.username == username))
            conn.execute(delete(failure_table).where(failure_table.c.key == user_key(username)))
        return bool(removed.rowcount)

    # -- recovery codes --------------------------------------------------------------

    def recovery_hashes(self, username: str) -> list[str | None]:
        """The user's recovery-code hashes by position; used codes are None."""
        with self._connect() as conn:
            rows = conn.execute(
                select(recovery_table.c.code_hash, recovery_table.c.used_at)
                .where(recovery_table.c.username == username)
                .order_by(recovery_table.c.position)
            ).all()
        return [None if row.used_at is not None else row.code_hash for row in rows]

    def use_recovery_code(self, username: str, position: int, *, clear: str | None = None) -> None:
        """Mark a recovery code used; MFAError ``replayed`` if it already was.

        When the code is taken, the failure counter ``clear`` (if given) is
        cleared in the same transaction.
        """
        with self._begin() as conn:
            result = conn.execute(
                update(recovery_table)
                .where(recovery_table.c.username == username)
                .where(recovery_table.c.position == position)
                .where(recovery_table.c.used_at.is_(None))
                .values(used_at=time.time())
            )
            if result.rowcount != 1:
                raise MFAError("recovery code already used", reason="replayed")
            if clear is not None:
                conn.execute(delete(failure_table).where(failure_table.c.key == clear))

    # -- failure counters -------------------------------------------------------------

    def failures(self, key: str) -> tuple[int, float]:
        """Consecutive failures counted under ``key`` and the time of the last one."""
        return self.failures_of([key])[key]

    def failures_of(self, keys: Iterable[str]) -> dict[str, tuple[int, float]]:
        """:meth:`failures` of several keys, read at once (``(0, 0.0)`` for a clean key)."""
        with self._connect() as conn:
            return self._failures(conn, keys)

    @staticmethod
    def _failures(conn: Connection, keys: Iterable[str]) -> dict[str, tuple[int, float]]:
        wanted = list(keys)
        rows = conn.execute(_FAILURES_OF, {"keys": wanted}).all()
        counts = dict.fromkeys(wanted, (0, 0.0))
        counts.update({row.key: (int(row.failures), float(row.last_failure)) for row in rows})
        return counts

    def count_failures(self, keys: Sequence[str], now: float, forget_after: float) -> int:
        """Add one failure to each counter in one transaction; return the highest count.

        A counter whose last failure is more than ``forget_after`` seconds before
        ``now`` counts afresh from 1.
        """
        with self._begin() as conn:
            return self._count_failures(conn, keys, now, forget_after)

    def _count_failures(
        self, conn: Connection, keys: Sequence[str], now: float, forget_after: float
    ) -> int:
        for key in keys:
            params = {"counter": key, "now": now, "forget_before": now - forget_after}
            if conn.execute(_COUNT_FAILURE, params).rowcount:
                continue
            try:
                with conn.begin_nested():
                    conn.execute(_FIRST_FAILURE, params)
            except IntegrityError:
                # Another hub inserted this counter meanwhile (PostgreSQL: a client
                # counter is not under the user's row lock): add to its count.
                conn.execute(_COUNT_FAILURE, params)
        return max((failures for failures, _ in self._failures(conn, keys).values()), default=0)

    def add_failure(self, key: str, now: float) -> int:
        """Count one more failure under ``key``; return the new count."""
        return self.count_failures([key], now, forget_after=math.inf)

    def clear_failures(self, key: str) -> None:
        """Forget the failures counted under ``key``."""
        with self._begin() as conn:
            conn.execute(delete(failure_table).where(failure_table.c.key == key))

    # -- sightings (first-seen devices and networks) ---------------------------------------

    def has_seen(self, username: str, kind: str, fingerprint: str) -> bool:
        """True when ``username`` completed a login from this device or network before."""
        return kind in self.seen_kinds(username, {kind: fingerprint})

    def seen_kinds(self, username: str, fingerprints: dict[str, str]) -> set[str]:
        """The kinds of ``{kind: fingerprint}`` that :meth:`has_seen`, read at once."""
        with self._connect() as conn:
            return self._seen_kinds(conn, username, fingerprints)

    def login_facts(self, username: str, fingerprints: dict[str, str]) -> LoginFacts:
        """:meth:`seen_kinds` and :meth:`is_enrolled` in one round trip (a login needs both)."""
        with self._connect() as conn:
            seen = self._seen_kinds(conn, username, fingerprints)
            enrolled = conn.execute(_ENROLLED, {"username": username}).first()
        return LoginFacts(seen=frozenset(seen), enrolled=enrolled is not None)

    @staticmethod
    def _seen_kinds(conn: Connection, username: str, fingerprints: dict[str, str]) -> set[str]:
        if not fingerprints:
            return set()
        kinds = tuple(fingerprints)
        params = {f"fp{i}": fingerprints[kind] for i, kind in enumerate(kinds)}
        rows = conn.execute(_sightings_of(kinds), {"username": username, **params}).all()
        return {row.kind for row in rows if fingerprints.get(row.kind) == row.fingerprint}

    def remember(self, username: str, kind: str, fingerprint: str) -> None:
        """Note that ``username`` completed a login from this device or network."""
        try:
            with self._begin() as conn:
                conn.execute(
                    insert(seen_table).values(
                        username=username,
                        kind=kind,
                        fingerprint=fingerprint,
                        first_seen=time.time(),
                    )
                )
        except IntegrityError:
            pass  # seen before: the first sighting is what counts

    # -- connections -----------------------------------------------------------------

    def _connect(self) -> AbstractContextManager[Connection]:
        return self._guarded(begin=False)

    def _begin(self) -> AbstractContextManager[Connection]:
        return self._guarded(begin=True)

    @contextmanager
    def _guarded(self, *, begin: bool) -> Iterator[Connection]:
        # Database trouble becomes StoreError so that logins fail closed with a
        # clear message; IntegrityError stays, callers use it for "already there".
        try:
            if begin:
                # write_transaction: on SQLite the write lock is taken at BEGIN,
                # so a read-then-update (take_totp) cannot interleave with another.
                with write_transaction(self.engine) as conn:
                    yield conn
            else:
                with self.engine.connect() as conn:
                    yield conn
        except IntegrityError:
            raise
        except SQLAlchemyError as error:
            raise StoreError(f"MFA database unavailable: {error}") from error


def user_key(username: str) -> str:
    """The failure-counter key of a user."""
    return f"user:{username}"


def client_key(address: str) -> str:
    """The failure-counter key of a client address."""
    return f"client:{address}"
