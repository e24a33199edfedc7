"""Execution storage: what both witnesses reported, once each, in one SQL database.

SQLite (WAL) embedded, PostgreSQL for several guard-service replicas; the same
database as the elevation store and the catalog (``GuardService.db_url``).

A batch is stored in one write transaction: each record is inserted unless its
position ``(user, witness, kernel_id, instance, seq)`` is already taken (an
insert that ignores the conflict, on SQLite and on PostgreSQL), and the
caller's ``on_accept`` (the ledger append) runs inside the transaction, for the
records that were new. If it fails, nothing of the batch is kept and the
shipper's retry starts afresh; if the database commit fails after the ledger
accepted the records, the retry records them again (never zero times). On
PostgreSQL a replica inserting a position another replica has just inserted
waits for that transaction, so a batch retried through two replicas at once is
still recorded once.

Streams and records are inserted in a fixed order (by stream, then seq), so two
replicas storing overlapping batches lock rows in the same order and never
deadlock. The records are keyed by the token's user as well as by the stream:
nobody can take positions in another user's streams.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from nbguard.database import create_tables, normalise_url, open_engine, write_transaction
from nbguard.errors import ConflictError, NBGuardError, RequestError
from nbguard.executions.alerts import WitnessAlert, alert_from_row
from nbguard.executions.cross_check import find_gaps, gap_alerts, pair_witnesses
from nbguard.executions.models import KERNEL, ExecutionBatch, ExecutionRecord
from nbguard.executions.tables import (
    ALERTED,
    PAIRED,
    PENDING,
    UNPAIRABLE,
    alerts_table,
    metadata,
    passes_table,
    records_table,
    streams_table,
)

# Any constant: serialises table creation between replicas (pg_advisory_xact_lock).
_SCHEMA_LOCK = 0x6E6265786563

#: A newly stored record and whether the guard found a grant in force for it.
Accepted = tuple[ExecutionRecord, bool]


class ExecutionStoreError(NBGuardError):
    """The execution database failed; ``str()`` has the cause, ``user_message`` does not."""

    default_user_message = "Execution records cannot be stored right now; send them again later."


@dataclass(frozen=True, slots=True)
class Added:
    """What became of a batch: records stored now, and records already stored before."""

    accepted: int
    duplicates: int


def insert_unless_present(connection: Connection, table: Table, values: dict[str, Any]) -> bool:
    """INSERT ``values`` unless a unique constraint already holds them; True if inserted."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        statement: Any = postgresql.insert(table)
    elif dialect == "sqlite":
        statement = sqlite.insert(table)
    else:  # pragma: no cover - normalise_url admits only these two in practice
        raise ExecutionStoreError(f"execution store: unsupported database {dialect}")
    # RETURNING, not rowcount: PostgreSQL reports no rowcount for the INSERT ... RETURNING
    # SQLAlchemy makes of a table with a generated key.
    statement = statement.values(**values).on_conflict_do_nothing()
    returned = connection.execute(statement.returning(*table.primary_key.columns)).first()
    return returned is not None


class ExecutionStore:
    """Execution records of both witnesses. Thread-safe; any number per database."""

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time) -> None:
        """Open (creating missing tables in) the database at ``url``."""
        self.url = normalise_url(url, what="the execution store")
        self.clock = clock
        self.engine = open_engine(self.url)
        try:
            create_tables(self.engine, metadata, lock_key=_SCHEMA_LOCK)
            with write_transaction(self.engine) as connection:
                insert_unless_present(connection, passes_table, {"id": 1, "last_pass": 0.0})
        except SQLAlchemyError as error:
            self.engine.dispose()
            raise ExecutionStoreError(f"cannot open the execution database: {error}") from error

    def close(self) -> None:
        """Release every database connection."""
        self.engine.dispose()

    @contextmanager
    def _write(self, doing: str) -> Iterator[Connection]:
        try:
            with write_transaction(self.engine) as connection:
                yield connection
        except SQLAlchemyError as error:
            raise ExecutionStoreError(f"execution store: {doing} failed: {error}") from error

    @contextmanager
    def _read(self, doing: str) -> Iterator[Connection]:
        try:
            with self.engine.connect() as connection:
                yield connection
        except SQLAlchemyError as error:
            raise ExecutionStoreError(f"execution store: {doing} failed: {error}") from error

    # -- storing ------------------------------------------------------------------

    def add(
        self,
        *,
        user: str,
        server: str,
        batch: ExecutionBatch,
        privileged: Sequence[bool],
        on_accept: Callable[[list[Accepted]], None] | None = None,
    ) -> Added:
        """Store ``batch`` for ``user``'s ``server`` (both from the token, never the body).

        ``privileged[i]`` is the guard's verdict for ``batch.records[i]``.
        ``on_accept`` gets the records stored now, in batch order, inside the
        transaction: if it raises, nothing is kept and the error propagates.
        """
        if len(privileged) != len(batch.records):
            raise ValueError("one privileged flag per record")
        now = self.clock()
        order = sorted(
            range(len(batch.records)),
            key=lambda i: (
                batch.records[i].kernel_id,
                batch.records[i].instance,
                batch.records[i].seq,
            ),
        )
        new: set[int] = set()
        with self._write("storing execution records") as connection:
            streams: dict[tuple[str, str], int] = {}
            for i in order:
                record = batch.records[i]
                key = (record.kernel_id, record.instance)
                if key not in streams:
                    streams[key] = self._stream(
                        connection, user, server, batch.witness, record, now
                    )
                values = self._row(user, streams[key], record, privileged[i], now)
                if insert_unless_present(connection, records_table, values):
                    new.add(i)
            accepted = [(r, privileged[i]) for i, r in enumerate(batch.records) if i in new]
            if accepted and on_accept is not None:
                on_accept(accepted)
        return Added(accepted=len(accepted), duplicates=len(batch.records) - len(accepted))

    @staticmethod
    def _stream(
        connection: Connection,
        user: str,
        server: str,
        witness: str,
        record: ExecutionRecord,
        now: float,
    ) -> int:
        """The id of the record's stream, created at the first record seen."""
        key = {
            "user": user,
            "witness": witness,
            "kernel_id": record.kernel_id,
            "instance": record.instance,
        }
        insert_unless_present(
            connection,
            streams_table,
            {**key, "server": server, "checked_through": -1, "created": now},
        )
        table = streams_table
        found = connection.execute(
            select(table.c.id).where(*(table.c[name] == value for name, value in key.items()))
        ).scalar_one()
        return int(found)

    @staticmethod
    def _row(
        user: str, stream_id: int, record: ExecutionRecord, privileged: bool, now: float
    ) -> dict[str, Any]:
        pairable = record.msg_id or record.witness != KERNEL
        return {
            "stream_id": stream_id,
            "seq": record.seq,
            "user": user,
            "witness": record.witness,
            "kernel_id": record.kernel_id,
            "msg_id": record.msg_id,
            "cell_id": record.cell_id,
            "code_sha256": record.code_sha256,
            "status": record.status,
            "privileged": privileged,
            "claimed_privileged": record.claimed_privileged,
            "reported": record.moment,
            "arrived": now,
            "pair_state": PENDING if pairable else UNPAIRABLE,
        }

    # -- the cross-check ----------------------------------------------------------

    def cross_check(
        self,
        *,
        grace_seconds: float,
        on_alerts: Callable[[list[WitnessAlert]], None] | None = None,
        now: float | None = None,
        limit: int = 5000,
    ) -> list[WitnessAlert]:
        """One pass: pair the witnesses' records, find gaps in streams, store the alerts.

        Records that arrived more than ``grace_seconds`` before ``now`` (default:
        the clock) without a partner, and gaps followed by such records, are
        alerted on, each once: the pass claims what it decides with conditional
        UPDATEs in one transaction, and ``on_alerts`` (the ledger) runs inside
        it, so a failure leaves everything for the next pass. Replicas take
        turns (a locked row; on PostgreSQL a replica finding it locked skips its
        pass). At most ``limit`` records and streams are looked at per pass.
        Returns the new alerts.
        """
        now = self.clock() if now is None else now
        cutoff = now - grace_seconds
        if not self._has_work(cutoff):
            return []
        with self._write("cross-checking the witnesses") as connection:
            if not self._take_turn(connection, now):
                return []
            found = self._pair(connection, cutoff, limit) + self._gaps(connection, cutoff, limit)
            alerts = [self._insert_alert(connection, alert, now) for alert in found]
            if alerts and on_alerts is not None:
                on_alerts(alerts)
            return alerts

    def _has_work(self, cutoff: float) -> bool:
        """Whether a pass would decide anything (read only: no write lock for nothing)."""
        r, s = records_table, streams_table
        lonely = select(r.c.id).where(r.c.pair_state == PENDING, r.c.arrived <= cutoff)
        unwalked = (
            select(r.c.id)
            .join(s, r.c.stream_id == s.c.id)
            .where(
                r.c.seq > s.c.checked_through,
                or_(r.c.seq == s.c.checked_through + 1, r.c.arrived <= cutoff),
            )
        )
        with self._read("looking for cross-check work") as connection:
            return any(connection.execute(q.limit(1)).first() for q in (lonely, unwalked))

    @staticmethod
    def _take_turn(connection: Connection, now: float) -> bool:
        table = passes_table
        query = select(table.c.id).where(table.c.id == 1).with_for_update(skip_locked=True)
        if connection.execute(query).first() is None:
            return False  # another replica's pass holds the row
        connection.execute(update(table).where(table.c.id == 1).values(last_pass=now))
        return True

    def _pair(self, connection: Connection, cutoff: float, limit: int) -> list[WitnessAlert]:
        r, s = records_table, streams_table
        old = (
            select(r.c.user, r.c.kernel_id, r.c.msg_id)
            .where(r.c.pair_state == PENDING, r.c.arrived <= cutoff)
            .order_by(r.c.arrived)
            .limit(limit)
        )
        keys = {tuple(row) for row in connection.execute(old)}
        if not keys:
            return []
        columns = (r.c.id, r.c.user, r.c.witness, r.c.kernel_id, r.c.msg_id, r.c.seq)
        candidates = (
            select(*columns, r.c.code_sha256, r.c.arrived, r.c.pair_state, s.c.instance, s.c.server)
            .join(s, r.c.stream_id == s.c.id)
            .where(
                r.c.pair_state.in_((PENDING, ALERTED)),
                r.c.kernel_id.in_(sorted({key[1] for key in keys})),
            )
            .with_for_update(of=r)
        )
        rows = [
            row
            for row in connection.execute(candidates).mappings()
            if (row["user"], row["kernel_id"], row["msg_id"]) in keys
        ]
        outcome = pair_witnesses(rows, cutoff)
        self._claim(connection, outcome.paired, r.c.pair_state != PAIRED, pair_state=PAIRED)
        self._claim(connection, outcome.alerted, r.c.pair_state == PENDING, pair_state=ALERTED)
        return outcome.alerts

    @staticmethod
    def _claim(connection: Connection, ids: list[int], when: Any, **values: Any) -> None:
        """Set ``values`` on the records ``ids``, all of which must still match ``when``."""
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            result = connection.execute(
                update(records_table).where(records_table.c.id.in_(chunk), when).values(**values)
            )
            if result.rowcount != len(chunk):
                raise ConflictError("another cross-check pass decided these records meanwhile")

    def _gaps(self, connection: Connection, cutoff: float, limit: int) -> list[WitnessAlert]:
        r, s = records_table, streams_table
        unwalked = (
            select(s)
            .where(
                select(r.c.id)
                .where(
                    r.c.stream_id == s.c.id,
                    r.c.seq > s.c.checked_through,
                    or_(r.c.seq == s.c.checked_through + 1, r.c.arrived <= cutoff),
                )
                .exists()
            )
            .order_by(s.c.id)
            .limit(limit)
            .with_for_update()
        )
        alerts: list[WitnessAlert] = []
        for stream in connection.execute(unwalked).mappings().all():
            seqs = connection.execute(
                select(r.c.seq, r.c.arrived)
                .where(r.c.stream_id == stream["id"], r.c.seq > stream["checked_through"])
                .order_by(r.c.seq)
            ).all()
            through, gaps = find_gaps(stream["checked_through"], [tuple(x) for x in seqs], cutoff)
            if through == stream["checked_through"]:
                continue
            result = connection.execute(
                update(s)
                .where(s.c.id == stream["id"], s.c.checked_through == stream["checked_through"])
                .values(checked_through=through)
            )
            if result.rowcount != 1:
                raise ConflictError("another cross-check pass walked this stream meanwhile")
            alerts += gap_alerts(stream, gaps)
        return alerts

    @staticmethod
    def _insert_alert(connection: Connection, alert: WitnessAlert, now: float) -> WitnessAlert:
        values = {
            "kind": alert.kind,
            "reason": alert.reason,
            "severity": alert.severity,
            "user": alert.user,
            "server": alert.server,
            "witness": alert.witness,
            "kernel_id": alert.kernel_id,
            "instance": alert.instance,
            "msg_id": alert.msg_id,
            "first_seq": alert.first_seq,
            "last_seq": alert.last_seq,
            "message": alert.message,
            "created": now,
        }
        alert_id = connection.execute(
            insert(alerts_table).values(**values).returning(alerts_table.c.id)
        ).scalar_one()
        return alert.stored(int(alert_id), now)

    def recent_alerts(self, *, limit: int = 100, user: str | None = None) -> list[WitnessAlert]:
        """Stored alerts, newest first (of ``user``, or everyone's); ``limit`` at most 1000."""
        if type(limit) is not int or not 1 <= limit <= 1000:
            raise RequestError("limit must be a whole number from 1 to 1000")
        a = alerts_table
        query = select(a).order_by(a.c.created.desc(), a.c.id.desc()).limit(limit)
        if user is not None:
            query = query.where(a.c.user == user)
        with self._read("listing alerts") as connection:
            return [alert_from_row(row) for row in connection.execute(query).mappings()]

    def count(self, *, user: str | None = None) -> int:
        """How many records are stored (of ``user``, or of everyone)."""
        query = select(func.count()).select_from(records_table)
        if user is not None:
            query = query.where(records_table.c.user == user)
        with self._read("counting records") as connection:
            return int(connection.execute(query).scalar_one())
