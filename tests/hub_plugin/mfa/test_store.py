"""The MFA store on a real SQLite file: sealing, rotation, replay refusal, counters, sightings."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy

from nbguard.encryption import SecretBox
from nbguard.errors import ConfigError, MFAError, SecretError
from nbguard.hub_plugin.mfa.store import LoginFacts, MFAStore, StoreError

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"  # noqa: S105 (a test TOTP secret)


@pytest.fixture
def key() -> str:
    """One Fernet key."""
    return SecretBox.generate_key()


@pytest.fixture
def store(tmp_path: Path, key: str) -> MFAStore:
    """A store in a fresh SQLite file."""
    return MFAStore(f"sqlite:///{tmp_path / 'mfa.sqlite'}", SecretBox([key]))


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


def test_a_step_is_accepted_once_even_under_a_race(store: MFAStore) -> None:
    """Of many threads presenting the same step at once, exactly one wins."""
    store.enrol_totp("alice", SECRET, 10, [])
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def present() -> None:
        barrier.wait()
        try:
            store.accept_step("alice", 11)
            outcomes.append("ok")
        except MFAError as error:
            outcomes.append(error.reason)

    threads = [threading.Thread(target=present) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["ok"] + ["replayed"] * 7
    with pytest.raises(MFAError, match="already used"):
        store.accept_step("alice", 10)


def test_key_rotation_reseals_on_use(tmp_path: Path, key: str) -> None:
    """After a new key is put first, a login re-seals the secret so the old key can go."""
    url = f"sqlite:///{tmp_path / 'mfa.sqlite'}"
    MFAStore(url, SecretBox([key])).enrol_totp("alice", SECRET, 1, [])
    new_key = SecretBox.generate_key()
    rotated = MFAStore(url, SecretBox([new_key, key]))
    rotated.accept_step("alice", 2)
    only_new = MFAStore(url, SecretBox([new_key]))
    enrolment = only_new.totp("alice")
    assert enrolment is not None
    assert enrolment.secret == SECRET


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


def test_secret_sealed_with_an_unknown_key_is_refused(tmp_path: Path, key: str) -> None:
    """A store given only a key that never sealed the secret refuses to open it."""
    url = f"sqlite:///{tmp_path / 'mfa.sqlite'}"
    MFAStore(url, SecretBox([key])).enrol_totp("alice", SECRET, 1, [])
    stranger = MFAStore(url, SecretBox([SecretBox.generate_key()]))
    with pytest.raises(SecretError, match="cannot be opened"):
        stranger.totp("alice")


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


def test_accepted_step_clears_the_counter_it_is_given(store: MFAStore) -> None:
    """An accepted step clears the named failure counter in its transaction; a replay does not."""
    store.enrol_totp("alice", SECRET, 10, [])
    store.add_failure("user:alice", 1.0)
    with pytest.raises(MFAError, match="already used"):
        store.accept_step("alice", 10, clear="user:alice")
    assert store.failures("user:alice") == (1, 1.0)
    store.accept_step("alice", 11, clear="user:alice")
    assert store.failures("user:alice") == (0, 0.0)


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


def test_sqlite_store_uses_a_durable_wal_journal(store: MFAStore) -> None:
    """The SQLite store is opened like nbguard's other stores: WAL, synchronous FULL."""
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 2  # FULL


def test_in_memory_database_is_refused() -> None:
    """Enrolments must survive a restart: an in-memory SQLite URL is a config error."""
    with pytest.raises(ConfigError, match=r"NBGuard\.mfa_db_url"):
        MFAStore("sqlite://", SecretBox([SecretBox.generate_key()]))
