"""The ledger on a real PostgreSQL cluster: same guarantees as on SQLite."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from nbguard.errors import LedgerIntegrityError
from nbguard.ledger import Ledger, parallel, verify_store
from nbguard.ledger.keys import load_public_keys
from nbguard.ledger.store import LedgerStore

from .conftest import SAMPLES, access_body

pytestmark = pytest.mark.postgres
Run = Callable[..., tuple[int, str, str]]


def _fill(url: str, key: Path, witness: Path, count: int = 30) -> None:
    with Ledger(
        url=url, signing_key_file=str(key), checkpoint_every=10, witnesses=[str(witness)]
    ) as ledger:
        for index in range(1, count + 1):
            ledger.append("access", access_body(index), actor="alice", session="s-1")


def _sql(url: str, *statements: str) -> None:
    parsed = make_url(url)
    with psycopg.connect(
        host=parsed.host, port=parsed.port, user=parsed.username, dbname=parsed.database
    ) as connection:
        for statement in statements:
            connection.execute(statement)  # type: ignore[arg-type]


def test_every_kind_appends_and_verifies(
    postgres_url: str, keypair: tuple[Path, Path], nbguard: Run
) -> None:
    """All record kinds append on PostgreSQL; export and verify pass, from URL and file."""
    with Ledger(url=postgres_url, signing_key_file=str(keypair[0])) as ledger:
        for kind, body in sorted(SAMPLES.items()):
            ledger.append(kind, body, actor="alice")
        export = io.StringIO()
    status, out, _ = nbguard("verify", postgres_url, "--key", keypair[1])
    assert status == 0, out
    plain_url = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with Ledger(url=plain_url, signing_key_file=str(keypair[0])) as ledger:
        assert ledger.export(export, redact=True) == len(SAMPLES)


@pytest.mark.parametrize(
    ("statements", "seq"),
    [
        pytest.param(
            [
                "UPDATE nbguard_ledger_records SET core = replace(core, '\"allowed\":false', "
                "'\"allowed\":true') WHERE seq = 7"
            ],
            7,
            id="edit-field",
        ),
        pytest.param(["DELETE FROM nbguard_ledger_records WHERE seq = 12"], 12, id="delete"),
        pytest.param(["DELETE FROM nbguard_ledger_records WHERE seq > 25"], 26, id="truncate"),
        pytest.param(
            [
                "DELETE FROM nbguard_ledger_records WHERE seq > 20",
                "DELETE FROM nbguard_ledger_checkpoints WHERE seq > 20",
            ],
            21,
            id="rollback-behind-witness",
        ),
    ],
)
@pytest.mark.parametrize("jobs", ["1", "3"])
def test_tampering_is_caught_on_postgres(
    postgres_url: str,
    keypair: tuple[Path, Path],
    tmp_path: Path,
    nbguard: Run,
    monkeypatch: pytest.MonkeyPatch,
    statements: list[str],
    seq: int,
    jobs: str,
) -> None:
    """SQL edits by a database insider are caught, with the witness, at the right record,
    by one process or by helpers sharing its snapshot."""
    monkeypatch.setattr(parallel, "RANGE_SIZE", 4)
    witness = tmp_path / "witness.jsonl"
    _fill(postgres_url, keypair[0], witness)
    _sql(postgres_url, *statements)
    status, out, _ = nbguard(
        "verify", postgres_url, "--key", keypair[1], "--witness", witness, "--jobs", jobs
    )
    assert status == 1, out
    assert out.startswith(f"FAILED at record {seq}:"), out


def test_helpers_verify_in_the_exported_snapshot(
    postgres_url: str,
    keypair: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Helper processes read the verifier's snapshot, not the rows as changed since."""
    monkeypatch.setattr(parallel, "RANGE_SIZE", 4)  # record 29 falls to the first helper
    _fill(postgres_url, keypair[0], tmp_path / "witness.jsonl")
    keys = load_public_keys([keypair[1]])
    store = LedgerStore(postgres_url, create=False)
    original = parallel.check_in_parallel

    def tamper_meanwhile(*args: Any, **kwargs: Any) -> Any:
        _sql(postgres_url, "UPDATE nbguard_ledger_records SET core = core || ' ' WHERE seq = 29")
        return original(*args, **kwargs)

    monkeypatch.setattr(parallel, "check_in_parallel", tamper_meanwhile)
    try:
        with caplog.at_level(logging.WARNING, logger="nbguard.ledger.parallel"):
            assert verify_store(store, keys, jobs=3).records == 30
        assert caplog.text == "", "every helper ran"
        with pytest.raises(LedgerIntegrityError, match="record 29 was altered"):
            verify_store(store, keys, jobs=1)
    finally:
        store.close()
