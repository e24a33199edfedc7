"""The Ledger API: appends, durability modes, checkpoints, witnesses, keys and settings."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import event, func, select
from traitlets import TraitError

from nbguard.errors import ConfigError, LedgerError, LedgerIntegrityError, RecordValidationError
from nbguard.ledger import Ledger
from nbguard.ledger.keys import generate_key_pair, load_public_keys
from nbguard.ledger.ledger import _Handover
from nbguard.ledger.store import checkpoints_table, records_table
from nbguard.ledger.witness import read_witness_file

from .conftest import SAMPLES, access_body

MakeLedger = Callable[..., Ledger]


def _count(ledger: Ledger, table=records_table) -> int:
    with ledger.store.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def _checkpoint_seqs(ledger: Ledger) -> list[int]:
    with ledger.store.engine.connect() as connection:
        rows = connection.execute(select(checkpoints_table.c.seq).order_by(checkpoints_table.c.seq))
        return [row[0] for row in rows]


def _commits(ledger: Ledger) -> list[int]:
    """Count the ledger engine's commits from now on (a list holding one counter)."""
    counter = [0]

    def on_commit(_connection: object) -> None:
        counter[0] += 1

    event.listen(ledger.store.engine, "commit", on_commit)
    return counter


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_append_returns_durable_receipt(make_ledger: MakeLedger, kind: str) -> None:
    """Every record kind appends and returns its sequence number, hash and timestamp."""
    ledger = make_ledger()
    receipt = ledger.append(kind, SAMPLES[kind], actor="alice", session="s-1")
    assert (receipt.seq, receipt.kind) == (1, kind)
    assert len(receipt.hash) == 64
    assert receipt.time.endswith("Z")
    assert _count(ledger) == 1


@pytest.mark.parametrize(
    ("body", "actor", "field"),
    [
        pytest.param({**SAMPLES["access"], "allowed": 1}, "alice", "body.allowed", id="schema"),
        pytest.param(
            {**SAMPLES["alert"], "details": {"r": 0.5}}, "alice", "body.details.r", id="float"
        ),
        pytest.param(SAMPLES["access"], "", "actor", id="empty-actor"),
        pytest.param(SAMPLES["access"], "a" * 300, "actor", id="long-actor"),
        pytest.param(["not", "an", "object"], "alice", "body", id="not-object"),
    ],
)
def test_invalid_append_writes_nothing(
    make_ledger: MakeLedger, body: object, actor: str, field: str
) -> None:
    """A rejected record names its field, consumes no sequence number and stores nothing."""
    ledger = make_ledger()
    kind = "alert" if field.startswith("body.details") else "access"
    with pytest.raises(RecordValidationError) as caught:
        ledger.append(kind, body, actor=actor)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert _count(ledger) == 0
    assert ledger.append("access", SAMPLES["access"], actor="alice").seq == 1


def test_concurrent_threads_get_one_gapless_order(make_ledger: MakeLedger) -> None:
    """Eight threads appending at once get distinct, gapless sequence numbers and a valid chain."""
    ledger = make_ledger()
    seqs: list[int] = []
    lock = threading.Lock()

    def work(worker: int) -> None:
        for index in range(50):
            receipt = ledger.append("access", access_body(index), actor=f"user{worker}")
            with lock:
                seqs.append(receipt.seq)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seqs) == list(range(1, 401))
    ledger.close()
    assert make_ledger().verify().records == 400


def test_group_commit_batches_queued_records(make_ledger: MakeLedger) -> None:
    """Queued appends share transactions, never more than max_batch records each."""
    ledger = make_ledger(max_batch=100, checkpoint_every=10_000)
    commits = _commits(ledger)
    futures = [ledger.append_nowait("access", access_body(i), actor="alice") for i in range(1000)]
    receipts = [future.result(timeout=30) for future in futures]
    assert [r.seq for r in receipts] == list(range(1, 1001))
    assert 10 <= commits[0] < 1000


def test_append_many_commits_in_order_through_a_small_queue(make_ledger: MakeLedger) -> None:
    """append_many returns receipts in order once durable, even with a queue smaller than it."""
    ledger = make_ledger(max_batch=50, max_queue=64, checkpoint_every=10_000)
    records = [("access", access_body(i), f"user{i % 3}", "s-1") for i in range(300)]
    receipts = ledger.append_many(records)
    assert [r.seq for r in receipts] == list(range(1, 301))
    assert _count(ledger) == 300
    ledger.close()
    assert make_ledger().verify().records == 300


def test_append_many_with_an_invalid_record_writes_nothing(make_ledger: MakeLedger) -> None:
    """One invalid record in a batch rejects the whole batch before anything is queued."""
    ledger = make_ledger()
    bad = dict(access_body(1), allowed="yes")
    records = [("access", access_body(0), "alice", None), ("access", bad, "alice", None)]
    with pytest.raises(RecordValidationError) as caught:
        ledger.append_many(records)
    assert caught.value.field == "body.allowed"
    assert _count(ledger) == 0


def test_record_durability_commits_each_record_alone(make_ledger: MakeLedger) -> None:
    """With durability='record' every record gets a transaction of its own."""
    ledger = make_ledger(durability="record", checkpoint_every=10_000)
    commits = _commits(ledger)
    futures = [ledger.append_nowait("access", access_body(i), actor="alice") for i in range(20)]
    for future in futures:
        future.result(timeout=30)
    assert commits[0] == 20


def test_durability_set_later_applies_to_the_next_append(make_ledger: MakeLedger) -> None:
    """Setting Ledger.durability on an open ledger changes how the next appends commit."""
    ledger = make_ledger(checkpoint_every=10_000)
    ledger.durability = "RECORD"  # caseless, as configured
    commits = _commits(ledger)
    futures = [ledger.append_nowait("access", access_body(i), actor="alice") for i in range(5)]
    for future in futures:
        future.result(timeout=30)
    assert commits[0] == 5


def test_per_call_durability_overrides_default(make_ledger: MakeLedger) -> None:
    """One append can ask for its own transaction while the rest are grouped."""
    ledger = make_ledger(max_delay=0.05, checkpoint_every=10_000)
    commits = _commits(ledger)
    grouped = [ledger.append_nowait("access", access_body(i), actor="a") for i in range(10)]
    alone = ledger.append_nowait("access", access_body(99), actor="a", durability="record")
    for future in [*grouped, alone]:
        future.result(timeout=30)
    assert commits[0] == 2
    with pytest.raises(ConfigError):
        ledger.append("access", access_body(1), actor="a", durability="eventually")


def test_append_async_awaits_durability(make_ledger: MakeLedger) -> None:
    """The asyncio variant resolves to receipts without blocking the loop."""
    ledger = make_ledger()

    async def main() -> list[int]:
        receipts = await asyncio.gather(
            *(ledger.append_async("access", access_body(i), actor="alice") for i in range(20))
        )
        return sorted(r.seq for r in receipts)

    assert asyncio.run(main()) == list(range(1, 21))


def test_announced_appends_are_settled_by_their_record_or_its_refusal(
    make_ledger: MakeLedger,
) -> None:
    """An Expectation passed to an append is settled whether the record is stored or
    refused as invalid, and an append that never comes can be withdrawn."""
    ledger = make_ledger()
    stored, refused, unused = ledger.expect(), ledger.expect(), ledger.expect()
    assert ledger.expected_appends == 3
    ledger.append_nowait("access", access_body(0), actor="alice", expected=stored).result(30)
    with pytest.raises(RecordValidationError):
        ledger.append_nowait("access", {"action": 1}, actor="alice", expected=refused)
    assert ledger.expected_appends == 1
    unused.withdraw()
    assert ledger.expected_appends == 0
    assert _count(ledger) == 1


def test_checkpoint_every_n_records(make_ledger: MakeLedger) -> None:
    """With one record per commit, a checkpoint is signed exactly every checkpoint_every records."""
    ledger = make_ledger(checkpoint_every=5)
    for index in range(12):
        ledger.append("access", access_body(index), actor="alice")
    assert _checkpoint_seqs(ledger) == [5, 10]
    ledger.close()
    assert _checkpoint_seqs(make_ledger()) == [5, 10, 12], "close signs the tail"


def test_idle_ledger_signs_after_interval(make_ledger: MakeLedger) -> None:
    """Records are signed checkpoint_interval seconds after they were written, even when idle."""
    ledger = make_ledger(checkpoint_interval=0.2)
    for index in range(3):
        ledger.append("access", access_body(index), actor="alice")
    deadline = time.monotonic() + 5
    while _checkpoint_seqs(ledger) != [3] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _checkpoint_seqs(ledger) == [3]
    assert ledger.verify().unsigned_tail == 0


def test_reopened_ledger_continues_the_chain(make_ledger: MakeLedger) -> None:
    """A ledger reopened on the same database continues from its head."""
    first = make_ledger()
    first.append("login", SAMPLES["login"], actor="alice")
    first.close()
    second = make_ledger()
    assert second.append("login", SAMPLES["login"], actor="alice").seq == 2
    assert second.ledger_id == first.ledger_id
    assert second.verify(allow_unsigned_tail=1).records == 2


def test_key_rotation_keeps_old_checkpoints_verifiable(
    make_ledger: MakeLedger, tmp_path: Path, keypair: tuple[Path, Path]
) -> None:
    """After a key rotation, verify needs both public keys; either alone fails where it must."""
    old = make_ledger()
    for index in range(3):
        old.append("access", access_body(index), actor="alice")
    old.close()
    generate_key_pair(tmp_path / "new.pem", tmp_path / "new.pub")
    new = make_ledger(signing_key_file=str(tmp_path / "new.pem"))
    for index in range(3):
        new.append("access", access_body(index), actor="alice")
    new.close()
    reader = make_ledger()
    both = load_public_keys([keypair[1], tmp_path / "new.pub"])
    assert len(reader.verify(both).key_ids) == 2
    with pytest.raises(LedgerIntegrityError) as only_new:
        reader.verify(load_public_keys([tmp_path / "new.pub"]))
    assert only_new.value.seq == 1
    with pytest.raises(LedgerIntegrityError) as only_old:
        reader.verify(load_public_keys([keypair[1]]))
    assert only_old.value.seq == 4


def test_file_witness_receives_every_checkpoint(make_ledger: MakeLedger, tmp_path: Path) -> None:
    """Each checkpoint is appended to the witness file, which verify then accepts."""
    witness = tmp_path / "witness.jsonl"
    ledger = make_ledger(checkpoint_every=4, witnesses=[str(witness)])
    for index in range(10):
        ledger.append("access", access_body(index), actor="alice")
    ledger.close()
    assert [c.seq for c in read_witness_file(witness)] == [4, 8, 10]
    assert make_ledger().verify(witness_file=witness).witness_checkpoints == 3


@pytest.fixture
def http_witness() -> Iterator[tuple[str, list[dict[str, object]]]]:
    """A real HTTP server on loopback that stores every JSON body POSTed to it.

    Each body gets ``"authorization"``: the request's Authorization header (or None).
    A request whose path ends in ``/refuse`` is answered 401 and not stored.
    """
    received: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            body = json.loads(self.rfile.read(length))
            if self.path.endswith("/refuse"):
                self.send_response(401)
            else:
                received.append({**body, "authorization": self.headers["Authorization"]})
                self.send_response(201)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/checkpoints", received
    server.shutdown()
    server.server_close()


def test_http_witness_receives_checkpoints(
    make_ledger: MakeLedger, http_witness: tuple[str, list[dict[str, object]]]
) -> None:
    """Checkpoints are POSTed as JSON to an HTTP witness."""
    url, received = http_witness
    ledger = make_ledger(checkpoint_every=2, witnesses=[url])
    for index in range(5):
        ledger.append("access", access_body(index), actor="alice")
    ledger.close()
    assert [c["seq"] for c in received] == [2, 4, 5]
    assert all(c["type"] == "nbguard.ledger.checkpoint" for c in received)
    assert all(c["authorization"] is None for c in received)


def test_http_witness_sends_bearer_token_never_logged(
    make_ledger: MakeLedger,
    http_witness: tuple[str, list[dict[str, object]]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With a token file every POST carries it as a bearer token; logs and reprs never show it."""
    url, received = http_witness
    token_file = tmp_path / "witness-token"
    token_file.write_text("s3cret-t0ken\n")
    refusing = url.rsplit("/", 1)[0] + "/refuse"
    with caplog.at_level(logging.DEBUG):
        ledger = make_ledger(
            checkpoint_every=2, witnesses=[url, refusing], witness_token_file=str(token_file)
        )
        for index in range(3):
            ledger.append("access", access_body(index), actor="alice")
        deadline = time.monotonic() + 10  # publishing runs on its own thread
        while not received and time.monotonic() < deadline:
            time.sleep(0.01)
        token_file.write_text("r0tated\n")
        ledger.append("access", access_body(3), actor="alice")
        ledger.close()
    assert [c["authorization"] for c in received] == ["Bearer s3cret-t0ken", "Bearer r0tated"]
    assert "could not publish checkpoint 2" in caplog.text, "the refusal is logged"
    assert "s3cret" not in caplog.text
    assert "r0tated" not in caplog.text


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(None, id="missing"),
        pytest.param("  \n", id="empty"),
        pytest.param("a\nb", id="two-lines"),
    ],
)
def test_bad_witness_token_file_stops_the_ledger(
    make_ledger: MakeLedger, tmp_path: Path, content: str | None
) -> None:
    """A missing, empty or multi-line token file is a ConfigError naming the setting, not the token."""
    token_file = tmp_path / "witness-token"
    if content is not None:
        token_file.write_text(content)
    with pytest.raises(ConfigError, match=r"Ledger\.witness_token_file") as caught:
        make_ledger(witnesses=["https://witness.example/cp"], witness_token_file=str(token_file))
    assert "a\nb" not in str(caught.value)


def test_unreachable_witness_does_not_block_appends(
    make_ledger: MakeLedger, caplog: pytest.LogCaptureFixture
) -> None:
    """A dead witness is logged; appends and checkpoints carry on."""
    ledger = make_ledger(
        checkpoint_every=1, witnesses=["http://127.0.0.1:9/nowhere"], witness_timeout=0.5
    )
    with caplog.at_level(logging.ERROR, logger="nbguard.ledger.witness"):
        assert ledger.append("access", access_body(1), actor="alice").seq == 1
        ledger.close()
    assert "could not publish checkpoint 1" in caplog.text


@pytest.mark.parametrize(
    ("traits", "message"),
    [
        pytest.param({"max_batch": 0}, "Ledger.max_batch must be at least 1", id="max-batch"),
        pytest.param({"checkpoint_every": -1}, "Ledger.checkpoint_every", id="every"),
        pytest.param({"max_delay": 2.0}, "Ledger.max_delay must be between", id="delay"),
        pytest.param({"checkpoint_interval": 0.0}, "Ledger.checkpoint_interval", id="interval"),
        pytest.param({"durability": "sometimes"}, "durability", id="durability"),
    ],
)
def test_bad_settings_name_the_trait(
    make_ledger: MakeLedger, traits: dict[str, object], message: str
) -> None:
    """Invalid settings fail at construction with an error naming Class.trait."""
    with pytest.raises(TraitError, match=message):
        make_ledger(**traits)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("", "Ledger.url is not set", id="missing"),
        pytest.param("sqlite://", "in-memory", id="memory"),
        pytest.param("not a url", "not a database URL", id="garbage"),
    ],
)
def test_bad_url_is_a_config_error(make_ledger: MakeLedger, url: str, message: str) -> None:
    """A missing, in-memory or unparsable database URL is refused clearly."""
    with pytest.raises(ConfigError, match=message):
        make_ledger(url=url)


def test_non_ed25519_signing_key_is_refused(make_ledger: MakeLedger, tmp_path: Path) -> None:
    """Only Ed25519 signing keys are accepted."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "rsa.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ConfigError, match="must be Ed25519"):
        make_ledger(signing_key_file=str(path))


def test_unsigned_ledger_warns_and_needs_explicit_tail(
    make_ledger: MakeLedger, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a signing key the ledger warns at start and strict verification fails."""
    with caplog.at_level(logging.WARNING):
        ledger = make_ledger(signing_key_file="")
    assert "not signed" in caplog.text
    ledger.append("access", access_body(1), actor="alice")
    with pytest.raises(LedgerIntegrityError) as caught:
        ledger.verify()
    assert caught.value.seq == 1
    assert ledger.verify(allow_unsigned_tail=10).records == 1


def test_closed_ledger_refuses_appends(make_ledger: MakeLedger) -> None:
    """After close(), append raises LedgerError; close() may be called twice."""
    ledger = make_ledger()
    ledger.close()
    ledger.close()
    with pytest.raises(LedgerError, match="closed"):
        ledger.append("access", access_body(1), actor="alice")


def test_receipts_handed_over_together_wake_the_loop_once(
    make_ledger: MakeLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Receipts that reach an event loop before it takes them cost it one wake-up, and
    every waiter gets its own receipt."""
    ledger = make_ledger()
    pending = [ledger.append_nowait("access", access_body(i), actor="alice") for i in range(3)]
    for one in pending:
        one.result(timeout=30)

    async def main() -> tuple[list[int], int]:
        loop = asyncio.get_running_loop()
        wakeups = [0]
        original = loop.call_soon_threadsafe

        def counting(callback: Callable[..., object], *args: object) -> asyncio.Handle:
            wakeups[0] += 1
            return original(callback, *args)

        monkeypatch.setattr(loop, "call_soon_threadsafe", counting)
        handover = _Handover(loop)
        waiters = [loop.create_future() for _ in pending]
        for waiter, one in zip(waiters, pending, strict=True):
            handover.add(waiter, one)  # as the writer thread does, the loop busy meanwhile
        receipts = await asyncio.gather(*waiters)
        later = loop.create_future()
        handover.add(later, pending[0])
        await later
        return [r.seq for r in receipts], wakeups[0]

    assert asyncio.run(main()) == ([1, 2, 3], 2)
