"""The MFA store on SQLite and PostgreSQL: sealing, rotation, code checks, counters, sightings."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy

from nbguard.encryption import SecretBox
from nbguard.errors import ConfigError, MFAError, SecretError
from nbguard.hub_plugin.mfa.store import (
    Counts,
    LoginFacts,
    MFAStore,
    StoreError,
    TOTPAttempt,
    TOTPEnrolment,
)

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"  # noqa: S105 (a test TOTP secret)
KEYS = ("user:alice", "client:10.0.0.1")


@pytest.fixture
def key() -> str:
    """One Fernet key."""
    return SecretBox.generate_key()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: a SQLite file, then a PostgreSQL database."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'mfa.sqlite'}"


OpenStore = Callable[..., MFAStore]


@pytest.fixture
def open_store(url: str, key: str) -> Iterator[OpenStore]:
    """Opens stores on the test's database (as separate hubs would), with ``key`` or the keys given."""
    opened: list[MFAStore] = []

    def open_one(*keys: str) -> MFAStore:
        opened.append(MFAStore(url, SecretBox(list(keys or (key,)))))
        return opened[-1]

    yield open_one
    for one in opened:
        one.close()


@pytest.fixture
def store(open_store: OpenStore) -> MFAStore:
    """A store on a fresh database."""
    return open_store()


def admit_all(counts: Counts) -> None:
    """An ``admit`` that never locks."""


def step_after_last(step: int) -> Callable[[TOTPEnrolment], int]:
    """A ``match`` for a code of time ``step``: refused as a replay unless after the stored step."""

    def match(enrolment: TOTPEnrolment) -> int:
        if enrolment.last_step is not None and step <= enrolment.last_step:
            raise MFAError("TOTP code already used", reason="replayed")
        return step

    return match


def wrong_code(enrolment: TOTPEnrolment) -> int:
    """A ``match`` for a wrong code."""
    raise MFAError("wrong TOTP code", reason="invalid")


def locks_at(failures: int) -> Callable[[Counts], None]:
    """An ``admit`` that locks once any counter reaches ``failures`` (no back-off expiry)."""

    def admit(counts: Counts) -> None:
        if max(count for count, _ in counts.values()) >= failures:
            raise MFAError("locked", reason="locked", retry_after=1)

    return admit


def take(
    store: MFAStore,
    match: Callable[[TOTPEnrolment], int],
    *,
    admit: Callable[[Counts], None] = admit_all,
    now: float = 1000.0,
    forget_after: float = math.inf,
) -> TOTPAttempt:
    """One code check of alice from 10.0.0.1, clearing her counter on success."""
    return store.take_totp(
        "alice", KEYS, admit=admit, match=match, clear=KEYS[0], now=now, forget_after=forget_after
    )


def race(count: int, attempt: Callable[[], str]) -> list[str]:
    """Run ``attempt`` in ``count`` threads released together; their outcomes, sorted."""
    outcomes: list[str] = []
    barrier = threading.Barrier(count)

    def run() -> None:
        barrier.wait()
        outcomes.append(attempt())

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(outcomes)


def test_secret_is_stored_sealed_and_opens(store: MFAStore) -> None:
    """The secret reads back, but the table holds only its sealed form."""
    store.enrol_totp("alice", SECRET, 100, ["hash-1"])
    enrolment = store.totp("alice")
    assert enrolment is not None
    assert enrolment.secret == SECRET
    assert enrolment.last_step == 100
    with store.engine.connect() as conn:
        stored = conn.execute(sqlalchemy.text("select secret from nbguard_mfa_totp")).scalar_one()
    assert SECRET not in stored


def test_second_enrolment_is_refused(store: MFAStore) -> None:
    """Enrolling over an existing factor fails and keeps the first one."""
    store.enrol_totp("alice", SECRET, 1, [])
    with pytest.raises(MFAError):
        store.enrol_totp("alice", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 2, [])
    enrolment = store.totp("alice")
    assert enrolment is not None
    assert enrolment.secret == SECRET


@pytest.mark.parametrize("hubs", [pytest.param(2, id="two"), pytest.param(6, id="six")])
def test_one_code_submitted_at_once_by_several_hubs_succeeds_once(
    open_store: OpenStore, hubs: int
) -> None:
    """Hubs (each its own store and connections) racing with one valid code: exactly one wins."""
    open_store().enrol_totp("alice", SECRET, 10, [])
    stores = [open_store() for _ in range(hubs)]
    turns = iter(stores)

    def attempt() -> str:
        refusal = take(next(turns), step_after_last(11)).refusal
        return "ok" if refusal is None else refusal.reason

    assert race(hubs, attempt) == ["ok"] + ["replayed"] * (hubs - 1)
    enrolment = open_store().totp("alice")
    assert enrolment is not None
    assert enrolment.last_step == 11


def test_guesses_in_parallel_cannot_pass_a_lockout(open_store: OpenStore) -> None:
    """Wrong codes racing from several hubs are counted one by one: no guess passes the lock."""
    open_store().enrol_totp("alice", SECRET, 10, [])
    stores = [open_store() for _ in range(8)]
    turns = iter(stores)

    def attempt() -> str:
        try:
            refusal = take(next(turns), wrong_code, admit=locks_at(3)).refusal
        except MFAError as error:
            return error.reason
        assert refusal is not None
        return refusal.reason

    assert race(8, attempt) == ["invalid"] * 3 + ["locked"] * 5
    assert stores[0].failures_of(KEYS) == {KEYS[0]: (3, 1000.0), KEYS[1]: (3, 1000.0)}


def test_first_failures_of_many_users_from_one_client_all_count(open_store: OpenStore) -> None:
    """Users failing at once from one client (no lock in common) each add to its counter."""
    users = [f"user{i}" for i in range(6)]
    for name in users:
        open_store().enrol_totp(name, SECRET, 10, [])
    turns = iter(zip(users, [open_store() for _ in users], strict=True))

    def attempt() -> str:
        name, hub = next(turns)
        keys = (f"user:{name}", "client:10.0.0.9")
        refusal = hub.take_totp(
            name, keys, admit=admit_all, match=wrong_code, clear=keys[0], now=7.0,
            forget_after=math.inf,
        ).refusal  # fmt: skip
        return refusal.reason if refusal else "ok"

    assert race(len(users), attempt) == ["invalid"] * len(users)
    assert open_store().failures("client:10.0.0.9") == (len(users), 7.0)


def test_taken_step_clears_the_users_counter_and_keeps_the_clients(store: MFAStore) -> None:
    """A taken step stores the step, clears the named counter only, and refuses a replay."""
    store.enrol_totp("alice", SECRET, 10, [])
    store.add_failure(KEYS[0], 1.0)
    store.add_failure(KEYS[1], 1.0)
    assert take(store, step_after_last(11)) == TOTPAttempt(11)
    assert store.failures_of(KEYS) == {KEYS[0]: (0, 0.0), KEYS[1]: (1, 1.0)}
    replay = take(store, step_after_last(11), now=5.0)
    assert replay.refusal is not None
    assert (replay.step, replay.refusal.reason, replay.failures) == (None, "replayed", 2)
    enrolment = store.totp("alice")
    assert enrolment is not None
    assert enrolment.last_step == 11


def test_refused_code_counts_on_every_key_and_returns_the_highest(store: MFAStore) -> None:
    """A wrong code adds one failure to the user's and the client's counters, in one commit."""
    store.enrol_totp("alice", SECRET, 10, [])
    for now in (1.0, 2.0):
        store.add_failure(KEYS[1], now)
    attempt = take(store, wrong_code, now=3.0)
    assert attempt.refusal is not None
    assert (attempt.refusal.reason, attempt.failures) == ("invalid", 3)
    assert store.failures_of(KEYS) == {KEYS[0]: (1, 3.0), KEYS[1]: (3, 3.0)}


def test_a_forgotten_counter_counts_afresh(store: MFAStore) -> None:
    """A counter whose last failure is older than forget_after restarts at 1; a recent one adds."""
    store.enrol_totp("alice", SECRET, 10, [])
    for now in (1.0, 2.0, 3.0):
        store.add_failure(KEYS[0], now)
    store.add_failure(KEYS[1], 95.0)
    attempt = take(store, wrong_code, now=100.0, forget_after=50.0)
    assert attempt.failures == 2
    assert store.failures_of(KEYS) == {KEYS[0]: (1, 100.0), KEYS[1]: (2, 100.0)}


@pytest.mark.parametrize(
    ("admit", "enrol", "reason"),
    [
        pytest.param(locks_at(1), True, "locked", id="locked"),
        pytest.param(admit_all, False, "not_enrolled", id="not-enrolled"),
        pytest.param(locks_at(1), False, "locked", id="locked-before-not-enrolled"),
    ],
)
def test_a_check_that_is_not_admitted_writes_nothing(
    store: MFAStore, admit: Callable[[Counts], None], enrol: bool, reason: str
) -> None:
    """Locked or not enrolled: raised before the code is looked at; no counter, no step moves."""
    if enrol:
        store.enrol_totp("alice", SECRET, 10, [])
    store.add_failure(KEYS[0], 1.0)
    looked: list[TOTPEnrolment] = []

    def match(enrolment: TOTPEnrolment) -> int:
        looked.append(enrolment)
        return 11

    with pytest.raises(MFAError) as raised:
        take(store, match, admit=admit)
    assert raised.value.reason == reason
    assert looked == []
    assert store.failures_of(KEYS) == {KEYS[0]: (1, 1.0), KEYS[1]: (0, 0.0)}
    enrolment = store.totp("alice")
    assert (enrolment.last_step if enrolment else None) == (10 if enrol else None)


def test_match_sees_the_opened_secret_and_stored_step(store: MFAStore) -> None:
    """The code is matched against the opened secret and the last step taken."""
    store.enrol_totp("alice", SECRET, 10, [])
    seen: list[TOTPEnrolment] = []

    def match(enrolment: TOTPEnrolment) -> int:
        seen.append(enrolment)
        return 12

    take(store, match)
    take(store, wrong_code)
    assert seen == [TOTPEnrolment(SECRET, 10)]
    assert store.totp("alice") == TOTPEnrolment(SECRET, 12)


def stored_secret(store: MFAStore) -> str:
    """The sealed secret as the table holds it."""
    with store.engine.connect() as conn:
        return str(
            conn.execute(sqlalchemy.text("select secret from nbguard_mfa_totp")).scalar_one()
        )


def test_key_rotation_reseals_on_use(open_store: OpenStore, key: str) -> None:
    """After a new key is put first, a login re-seals the secret so the old key can go."""
    open_store().enrol_totp("alice", SECRET, 1, [])
    new_key = SecretBox.generate_key()
    rotated = open_store(new_key, key)
    take(rotated, step_after_last(2))
    only_new = open_store(new_key)
    enrolment = only_new.totp("alice")
    assert enrolment is not None
    assert enrolment.secret == SECRET


def test_a_secret_under_the_newest_key_is_not_resealed(store: MFAStore) -> None:
    """A taken step leaves a secret already sealed under the first key as it is stored."""
    store.enrol_totp("alice", SECRET, 1, [])
    before = stored_secret(store)
    take(store, step_after_last(2))
    assert stored_secret(store) == before


def test_recovery_code_is_used_once(store: MFAStore) -> None:
    """A used recovery code reads as None and cannot be used again."""
    store.enrol_totp("alice", SECRET, 1, ["h0", "h1", "h2"])
    store.use_recovery_code("alice", 1)
    assert store.recovery_hashes("alice") == ["h0", None, "h2"]
    with pytest.raises(MFAError, match="already used"):
        store.use_recovery_code("alice", 1)


def test_reset_removes_factor_codes_and_counter(store: MFAStore) -> None:
    """A reset leaves nothing of the user's factor behind."""
    store.enrol_totp("alice", SECRET, 1, ["h0"])
    store.add_failure("user:alice", 5.0)
    assert store.reset("alice")
    assert store.totp("alice") is None
    assert store.recovery_hashes("alice") == []
    assert store.failures("user:alice") == (0, 0.0)
    assert not store.reset("alice")


def test_count_failures_adds_to_several_keys_at_once(store: MFAStore) -> None:
    """count_failures adds one to each key (afresh when forgotten) and returns the highest."""
    store.add_failure(KEYS[0], 1.0)
    assert store.count_failures(KEYS, 2.0, forget_after=10.0) == 2
    assert store.count_failures(KEYS, 30.0, forget_after=10.0) == 1
    assert store.failures_of(KEYS) == {KEYS[0]: (1, 30.0), KEYS[1]: (1, 30.0)}


def test_failure_counter_counts_and_clears(store: MFAStore) -> None:
    """Failures add up per key and clear per key."""
    assert [store.add_failure("client:10.0.0.1", float(t)) for t in range(3)] == [1, 2, 3]
    assert store.failures("client:10.0.0.1") == (3, 2.0)
    store.clear_failures("client:10.0.0.1")
    assert store.failures("client:10.0.0.1") == (0, 0.0)


def test_sightings_are_remembered_once(store: MFAStore) -> None:
    """A device or network is new until remembered; remembering twice is harmless."""
    assert not store.has_seen("alice", "network", "10.0.0.0/24")
    store.remember("alice", "network", "10.0.0.0/24")
    store.remember("alice", "network", "10.0.0.0/24")
    assert store.has_seen("alice", "network", "10.0.0.0/24")
    assert not store.has_seen("bob", "network", "10.0.0.0/24")


def test_secret_sealed_with_an_unknown_key_is_refused(open_store: OpenStore) -> None:
    """A store given only a key that never sealed the secret refuses to open it or check a code."""
    open_store().enrol_totp("alice", SECRET, 1, [])
    stranger = open_store(SecretBox.generate_key())
    with pytest.raises(SecretError, match="cannot be opened"):
        stranger.totp("alice")
    with pytest.raises(SecretError, match="cannot be opened"):
        take(stranger, step_after_last(2))
    assert open_store().totp("alice") == TOTPEnrolment(SECRET, 1)


def test_bad_database_url_is_a_config_error() -> None:
    """An unusable database URL fails at start with the setting's name."""
    with pytest.raises(ConfigError, match=r"NBGuard\.mfa_db_url"):
        MFAStore("nosuchdialect://x", SecretBox([SecretBox.generate_key()]))


def test_database_going_away_is_a_store_error(tmp_path: Path, key: str) -> None:
    """A database whose file was removed under the hub raises StoreError (logins fail closed)."""
    db = tmp_path / "mfa.sqlite"
    store = MFAStore(f"sqlite:///{db}", SecretBox([key]))
    store.engine.dispose()
    db.unlink()
    with pytest.raises(StoreError, match="MFA database unavailable"):
        store.add_failure("user:alice", 1.0)


def test_used_recovery_code_clears_the_counter_it_is_given(store: MFAStore) -> None:
    """Taking a recovery code clears the named counter; a used code leaves it."""
    store.enrol_totp("alice", SECRET, 1, ["h0"])
    store.add_failure("user:alice", 1.0)
    store.use_recovery_code("alice", 0, clear="user:alice")
    assert store.failures("user:alice") == (0, 0.0)
    store.add_failure("user:alice", 2.0)
    with pytest.raises(MFAError, match="already used"):
        store.use_recovery_code("alice", 0, clear="user:alice")
    assert store.failures("user:alice") == (1, 2.0)


def test_failures_of_several_keys_read_at_once(store: MFAStore) -> None:
    """Counted keys read with their counts, clean keys as zero."""
    store.add_failure("client:10.0.0.1", 4.0)
    assert store.failures_of(["user:alice", "client:10.0.0.1"]) == {
        "user:alice": (0, 0.0),
        "client:10.0.0.1": (1, 4.0),
    }


def test_seen_kinds_match_kind_and_fingerprint(store: MFAStore) -> None:
    """Only a kind remembered with that very fingerprint counts as seen."""
    store.remember("alice", "device", "ua:1")
    store.remember("alice", "network", "10.0.0.0/24")
    assert store.seen_kinds("alice", {"device": "ua:1", "network": "10.0.0.0/24"}) == {
        "device",
        "network",
    }
    assert store.seen_kinds("alice", {"device": "10.0.0.0/24", "network": "ua:1"}) == set()
    assert store.seen_kinds("alice", {"device": "ua:2", "network": "10.0.0.0/24"}) == {"network"}
    assert store.seen_kinds("bob", {"device": "ua:1"}) == set()


def test_login_facts_read_sightings_and_enrolment_together(store: MFAStore) -> None:
    """One read answers both: the kinds seen with these fingerprints, and enrolment."""
    sightings = {"device": "ua:1", "network": "10.0.0.0/24"}
    assert store.login_facts("alice", sightings) == LoginFacts(seen=frozenset(), enrolled=False)
    store.remember("alice", "network", "10.0.0.0/24")
    store.remember("bob", "device", "ua:1")
    store.enrol_totp("alice", SECRET, 1, [])
    assert store.login_facts("alice", sightings) == LoginFacts(
        seen=frozenset({"network"}), enrolled=True
    )
    assert store.login_facts("bob", sightings) == LoginFacts(
        seen=frozenset({"device"}), enrolled=False
    )
    assert store.login_facts("alice", {}) == LoginFacts(seen=frozenset(), enrolled=True)


def test_sqlite_store_uses_a_durable_wal_journal(tmp_path: Path, key: str) -> None:
    """The SQLite store is opened like nbguard's other stores: WAL, synchronous FULL."""
    store = MFAStore(f"sqlite:///{tmp_path / 'mfa.sqlite'}", SecretBox([key]))
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 2  # FULL


def test_in_memory_database_is_refused() -> None:
    """Enrolments must survive a restart: an in-memory SQLite URL is a config error."""
    with pytest.raises(ConfigError, match=r"NBGuard\.mfa_db_url"):
        MFAStore("sqlite://", SecretBox([SecretBox.generate_key()]))
