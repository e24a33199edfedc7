"""The ``Ledger``: append audit records, sign checkpoints, publish them to witnesses."""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from traitlets import (
    Bool,
    CaselessStrEnum,
    Float,
    Integer,
    List,
    TraitError,
    Unicode,
    observe,
    validate,
)
from traitlets.config import LoggingConfigurable

from nbguard.errors import ConfigError, LedgerError
from nbguard.ledger.checkpoints import Checkpoint, sign_checkpoint
from nbguard.ledger.export import write_export
from nbguard.ledger.keys import SigningKey, load_signing_key
from nbguard.ledger.records import PreparedRecord, prepare_record
from nbguard.ledger.schemas import packaged_schemas
from nbguard.ledger.store import LedgerStore
from nbguard.ledger.verify import VerifyReport, verify_store
from nbguard.ledger.witness import WitnessPublisher, read_witness_file, witness_from_spec
from nbguard.ledger.writer import (
    Committed,
    Expectation,
    GroupCommitWriter,
    PendingReceipt,
    Receipt,
)


class Ledger(LoggingConfigurable):
    """The tamper-evident audit ledger.

    Open it from a database URL, ``append`` records from any thread, ``close`` it on
    shutdown (which signs a final checkpoint)::

        ledger = Ledger(url="sqlite:////var/lib/nbguard/ledger.db",
                        signing_key_file="/etc/nbguard/ledger-key.pem")
        receipt = ledger.append("login", {...}, actor="alice", session="s-1")
        ledger.close()
    """

    url = Unicode(
        "",
        help="""Database URL of the ledger (SQLAlchemy syntax).

        ``sqlite:////abs/path/ledger.db`` is the embedded default: WAL mode, one
        file, several processes on one host. ``postgresql://user@host/db`` (psycopg 3,
        install ``nbguard[postgres]``) is for production and for several guard-service
        replicas writing one ledger: they keep a single total order. Required.
        """,
    ).tag(config=True)

    signing_key_file = Unicode(
        "",
        help="""Path of the Ed25519 private key (PEM, PKCS#8) that signs checkpoints.

        Create one with ``nbguard ledger keygen``; keep it readable by the hub only.
        Without it, records are hash-chained but never signed, so an insider who
        rewrites the whole database cannot be caught: a warning is logged at start.
        After a key rotation, verify with the old and new public keys.
        """,
    ).tag(config=True)

    checkpoint_every = Integer(
        1000,
        help="""Sign a checkpoint once this many records are unsigned.

        Checked at every commit, so with group commit the checkpoint lands at the
        end of the batch that crosses the threshold. Together with
        ``Ledger.checkpoint_interval`` (whichever comes first) this bounds the
        unsigned tail: records after the last checkpoint are protected by the hash
        chain only. Default 1000.
        """,
    ).tag(config=True)

    checkpoint_interval = Float(
        60.0,
        help="""Sign a checkpoint at most this many seconds after a record is written.

        Applies also when the ledger is idle. A clean ``close()`` always signs a
        final checkpoint. Default 60 seconds.
        """,
    ).tag(config=True)

    durability = CaselessStrEnum(
        ["group", "record"],
        default_value="group",
        help="""How appends are committed: ``group`` (default) or ``record``.

        ``group``: appends queue and one writer thread commits them in batches of
        up to ``Ledger.max_batch`` records, waiting at most ``Ledger.max_delay``
        seconds for a batch to fill. ``record``: every record is committed in a
        transaction of its own. In both modes ``append`` returns only after the
        record's transaction has committed; ``group`` trades a little latency for
        far higher throughput. One append can ask for ``durability="record"``.
        """,
    ).tag(config=True)

    max_batch = Integer(
        1000,
        help="""Most records committed in one transaction (group durability). Default 1000.""",
    ).tag(config=True)

    max_delay = Float(
        0.002,
        help="""Longest wait, in seconds, for a batch to fill before committing it.

        This is the durability window of group commit: an append waits at most this
        long plus one commit before it returns, and records not yet acknowledged
        may be lost in a crash (acknowledged ones never are). The writer waits only
        while appends overlap (the batch it took last held more than one record);
        on an idle ledger a lone append is committed at once. Appends announced
        beforehand (``Ledger.expect``, as the guard service does for each API
        request's decision record) shorten the wait: a batch made only of
        announced records is committed as soon as no announced append is still to
        come. 0 never waits: batches then hold what queued during the previous
        commit. Default 0.002 (2 ms); at most 1.
        """,
    ).tag(config=True)

    max_queue = Integer(
        100_000,
        help="""Most records waiting to be written; further appends block until there is room.""",
    ).tag(config=True)

    synchronous = CaselessStrEnum(
        ["full", "normal"],
        default_value="full",
        help="""What "committed" means: ``full`` (default) or ``normal``.

        ``full`` survives power loss: SQLite ``synchronous=FULL``, PostgreSQL
        ``synchronous_commit=on``. ``normal`` survives a crash of the process but an
        operating-system crash or power loss may lose the last commits: SQLite
        ``synchronous=NORMAL`` in WAL mode, PostgreSQL ``synchronous_commit=off``.
        """,
    ).tag(config=True)

    witnesses = List(
        Unicode(),
        help="""Where to publish each signed checkpoint, outside the database.

        Each entry is a file path (checkpoints are appended as JSON lines; put it
        on other storage than the database) or an ``http(s)://`` URL that receives
        a JSON POST. ``nbguard verify --witness FILE`` then detects a database
        rolled back or rewritten behind the witness. Default: none.
        """,
    ).tag(config=True)

    witness_token_file = Unicode(
        "",
        help="""Path of a file holding a bearer token for the HTTP(S) witnesses.

        When set, every checkpoint POSTed to a ``Ledger.witnesses`` URL carries
        ``Authorization: Bearer <token>``. The file holds the token on one line
        (surrounding whitespace is ignored); it is read at start (a missing or
        empty file stops the ledger from starting) and again at each publish, so
        a rotated token is picked up without a restart. The token is never
        logged. Keep the file readable by the hub only, and use ``https://``
        witnesses: over plain ``http://`` to another host the token travels in
        clear (a warning is logged). File witnesses ignore it. Default: no token.
        """,
    ).tag(config=True)

    witness_timeout = Float(
        5.0, help="""Seconds to wait for an HTTP witness before giving up on one checkpoint."""
    ).tag(config=True)

    warn_unsigned = Bool(
        True, help="""Log a warning at start when no ``Ledger.signing_key_file`` is set."""
    ).tag(config=True)

    @validate("checkpoint_every", "max_batch", "max_queue")
    def _at_least_one(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if value < 1:
            raise TraitError(f"Ledger.{proposal['trait'].name} must be at least 1, not {value}")
        return value

    @validate("checkpoint_interval", "witness_timeout")
    def _positive(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if not value > 0:
            raise TraitError(f"Ledger.{proposal['trait'].name} must be positive, not {value}")
        return value

    @observe("durability")
    def _durability_changed(self, change: Any) -> None:
        # Read on every append: a plain attribute costs less than the trait.
        self._alone = change["new"] == "record"

    @validate("max_delay")
    def _delay(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if not 0 <= value <= 1:
            raise TraitError(f"Ledger.max_delay must be between 0 and 1 second, not {value}")
        return value

    def __init__(self, url: str | None = None, **kwargs: Any) -> None:
        if url is not None:
            kwargs["url"] = url
        super().__init__(**kwargs)
        self._alone = self.durability == "record"
        if not self.url:
            raise ConfigError("Ledger.url is not set: give the ledger's database URL")
        self._schemas = packaged_schemas()
        self._key: SigningKey | None = None
        if self.signing_key_file:
            self._key = load_signing_key(self.signing_key_file)
        elif self.warn_unsigned:
            self.log.warning(
                "Ledger.signing_key_file is not set: ledger records are chained but not "
                "signed, so a rewrite of the whole database would go unnoticed"
            )
        publishers = [
            witness_from_spec(
                spec, timeout=self.witness_timeout, token_file=self.witness_token_file or None
            )
            for spec in self.witnesses
        ]
        self._store = LedgerStore(self.url, synchronous=self.synchronous)
        self._publisher = WitnessPublisher(publishers) if publishers else None
        self._unsigned_since: float | None = None
        self._close_lock = threading.Lock()
        self._closed = False
        self._writer = GroupCommitWriter(
            self._commit,
            max_batch=self.max_batch,
            max_delay=self.max_delay,
            max_queue=self.max_queue,
            on_idle=self._idle,
        )

    @property
    def ledger_id(self) -> str:
        """The random id this ledger got when its database was created."""
        return self._store.ledger_id

    @property
    def store(self) -> LedgerStore:
        """The storage layer (for export, verification and administration)."""
        return self._store

    # -- appending ----------------------------------------------------------------

    def append(
        self,
        kind: str,
        body: Mapping[str, Any],
        *,
        actor: str,
        session: str | None = None,
        durability: str | None = None,
    ) -> Receipt:
        """Validate and durably append one record; return its Receipt.

        Raises RecordValidationError (naming the field; nothing written) for a
        record that does not match its schema, LedgerError if it cannot be stored.
        """
        return self.append_nowait(
            kind, body, actor=actor, session=session, durability=durability
        ).result()

    def expect(self) -> Expectation:
        """Announce an append that is coming, so group commit need not wait for it in vain.

        Pass the Expectation as ``expected`` to the append it announced, or call its
        ``withdraw()`` if none comes. A batch made only of announced records is
        committed as soon as no announced append is outstanding, rather than after
        ``max_delay``; durability is the same. See :class:`GroupCommitWriter`.
        """
        return self._writer.expect()

    @property
    def expected_appends(self) -> int:
        """Announced appends outstanding (see :meth:`expect`)."""
        return self._writer.expected

    def append_nowait(
        self,
        kind: str,
        body: Mapping[str, Any],
        *,
        actor: str,
        session: str | None = None,
        durability: str | None = None,
        expected: Expectation | None = None,
    ) -> PendingReceipt:
        """Validate a record now and queue it; the PendingReceipt resolves once it is durable.

        Raises RecordValidationError at once for an invalid record (nothing queued;
        ``expected``, the Expectation that announced it, is withdrawn).
        """
        try:
            if not durability:
                alone = self._alone
            elif durability in ("group", "record"):
                alone = durability == "record"
            else:
                raise ConfigError(f"durability must be 'group' or 'record', not {durability!r}")
            # Serialised here, in the caller's thread (later changes to ``body`` cannot
            # leak in); a plain dict is read as it is, other mappings are copied first.
            plain = body if type(body) is dict else _plain(body)
            record = prepare_record(self._schemas, kind, plain, actor=actor, session=session)
        except BaseException:
            if expected is not None:
                expected.withdraw()
            raise
        return self._writer.submit(record, alone=alone, expected=expected)

    def append_many(
        self, records: Iterable[tuple[str, Mapping[str, Any], str, str | None]]
    ) -> list[Receipt]:
        """Validate and durably append ``(kind, body, actor, session)`` records, in order.

        Every record is validated before any is queued: one invalid record raises
        RecordValidationError and nothing is written. The records are queued in one
        go (group durability) and this returns once all of them are committed.
        """
        prepared = [
            prepare_record(
                self._schemas,
                kind,
                body if type(body) is dict else _plain(body),
                actor=actor,
                session=session,
            )
            for kind, body, actor, session in records
        ]
        return [pending.result() for pending in self._writer.submit_many(prepared)]

    async def append_async(
        self,
        kind: str,
        body: Mapping[str, Any],
        *,
        actor: str,
        session: str | None = None,
        durability: str | None = None,
        expected: Expectation | None = None,
    ) -> Receipt:
        """Like ``append`` but awaits durability without blocking the event loop."""
        pending = self.append_nowait(
            kind, body, actor=actor, session=session, durability=durability, expected=expected
        )
        return await self.durable(pending)

    @staticmethod
    async def durable(pending: PendingReceipt) -> Receipt:
        """Await a queued record's Receipt without blocking the event loop.

        Raises the LedgerError that stopped its commit. For a record queued with
        :meth:`append_nowait` that must be durable before a later answer.
        """
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Receipt] = loop.create_future()
        handover = _handover(loop)

        def committed(done: PendingReceipt) -> None:  # on the writer thread
            handover.add(waiter, done)

        pending.add_done_callback(committed)
        return await waiter

    def _commit(self, batch: Sequence[PreparedRecord]) -> Committed:
        first, hashes, checkpoint = self._store.append(
            batch, self._checkpointer if self._key else None
        )
        if checkpoint is not None:
            self._signed(checkpoint)
        elif self._unsigned_since is None and self._key is not None:
            self._unsigned_since = time.time()
        return Committed(first, hashes)

    # -- checkpoints --------------------------------------------------------------

    def _checkpointer(
        self, seq: int, head: str, last_seq: int, last_at: float, force: bool
    ) -> Checkpoint | None:
        if self._key is None:  # pragma: no cover - only handed to the store with a key
            return None
        due = (
            force
            or seq - last_seq >= self.checkpoint_every
            or time.time() - last_at >= self.checkpoint_interval
        )
        if not due:
            return None
        return sign_checkpoint(self._key, ledger=self._store.ledger_id, seq=seq, head=head)

    def _signed(self, checkpoint: Checkpoint) -> None:
        self._unsigned_since = None
        if self._publisher is not None:
            self._publisher.publish(checkpoint)

    def _idle(self) -> float | None:
        # Runs on the writer thread between batches: sign records that have waited
        # checkpoint_interval seconds even when no further append comes.
        if self._unsigned_since is None:
            return None
        wait = self._unsigned_since + self.checkpoint_interval - time.time()
        if wait > 0:
            return wait
        self.checkpoint()
        return None

    def checkpoint(self) -> Checkpoint | None:
        """Sign the committed head now if it is not signed yet; return the new checkpoint."""
        if self._key is None:
            return None
        checkpoint = self._store.checkpoint(self._checkpointer, force=True)
        if checkpoint is not None:
            self._signed(checkpoint)
        else:
            self._unsigned_since = None
        return checkpoint

    # -- reading ------------------------------------------------------------------

    def verify(
        self,
        keys: Mapping[str, Ed25519PublicKey] | None = None,
        *,
        witness_file: str | Path | None = None,
        allow_unsigned_tail: int = 0,
    ) -> VerifyReport:
        """Verify the stored ledger (default key: this ledger's own); raise on tampering."""
        if keys is None:
            keys = {}
            if self._key is not None:
                keys = {self._key.key_id: self._key.private_key.public_key()}
        witness = read_witness_file(witness_file) if witness_file else ()
        return verify_store(
            self._store, keys, witness=witness, allow_unsigned_tail=allow_unsigned_tail
        )

    def export(self, out: IO[str], *, redact: bool = False) -> int:
        """Write a JSONL export of the committed records; return how many."""
        return write_export(self._store, out, redact=redact)

    # -- lifecycle ----------------------------------------------------------------

    def close(self) -> None:
        """Commit queued records, sign a final checkpoint, flush witnesses, disconnect."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._writer.close()
        try:
            self.checkpoint()
        except LedgerError as error:
            self.log.error("final ledger checkpoint failed: %s", error)
        if self._publisher is not None:
            self._publisher.close(timeout=2 * self.witness_timeout)
        self._store.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


#: The ledger file used when ``Ledger.url`` is not configured (the working directory
#: of the hub, which the guard service shares, so both write one ledger).
DEFAULT_LEDGER_FILE = "nbguard-ledger.sqlite"


def open_configured_ledger(parent: Any) -> Ledger:
    """The ledger ``parent``'s configuration describes, or, without ``Ledger.url``, the
    default SQLite file in the working directory (said loudly in the log)."""
    if parent.config.get("Ledger", {}).get("url"):
        return Ledger(parent=parent)
    path = Path(DEFAULT_LEDGER_FILE).resolve()
    parent.log.warning("Ledger.url is not set: recording to %s", path)
    return Ledger(parent=parent, url=f"sqlite:///{path}")


def _plain(body: Any) -> Any:
    """A mapping as a dict (anything else as it is, for validation to refuse)."""
    return dict(body) if isinstance(body, Mapping) else body


class _Handover:
    """Committed receipts on their way from the writer thread to one event loop.

    The records of a batch are committed together, so their awaiting coroutines
    are woken together: one ``call_soon_threadsafe`` (a write to the loop's wake-up
    pipe, and a read of it on the loop) for the receipts that arrive before the
    loop takes them, rather than one per record.
    """

    __slots__ = ("_lock", "_loop", "_ready")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._ready: list[tuple[asyncio.Future[Receipt], PendingReceipt]] = []

    def add(self, waiter: asyncio.Future[Receipt], pending: PendingReceipt) -> None:
        """Hand over one receipt (writer thread): wakes the loop unless a wake-up is due."""
        with self._lock:
            self._ready.append((waiter, pending))
            if len(self._ready) > 1:
                return  # the loop is already asked to take them
        try:
            self._loop.call_soon_threadsafe(self._take)
        except RuntimeError:  # the loop is closed: nobody awaits these any more
            with self._lock:
                self._ready.clear()
            raise

    def _take(self) -> None:
        # On the loop: settle every receipt handed over so far.
        with self._lock:
            ready, self._ready = self._ready, []
        for waiter, pending in ready:
            _settle(waiter, pending)


_handovers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Handover] = (
    weakref.WeakKeyDictionary()
)
_handovers_lock = threading.Lock()


def _handover(loop: asyncio.AbstractEventLoop) -> _Handover:
    """The one :class:`_Handover` of ``loop``."""
    found = _handovers.get(loop)
    if found is None:
        with _handovers_lock:
            found = _handovers.setdefault(loop, _Handover(loop))
    return found


def _settle(waiter: asyncio.Future[Receipt], pending: PendingReceipt) -> None:
    """Hand a committed (or failed) record's outcome to an awaiting coroutine."""
    if waiter.cancelled():
        return
    error = pending.exception(0)
    if error is None:
        waiter.set_result(pending.result(0))
    else:
        waiter.set_exception(error)
