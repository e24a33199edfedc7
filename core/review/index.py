"""The session index: which records belong to which session, kept up to date incrementally.

The index lives in its own tables (by default in the ledger's database) and
remembers the last ledger sequence number it has read, so bringing it up to
date reads only the records appended since; listing sessions is then a query on
a table of sessions, never a scan of the ledger.

A record belongs to the session named in its envelope. Some records belong to a
session without carrying its id, and are joined here:

- an ``elevation`` record other than the request itself (an approval by bob,
  in bob's session; a revocation) joins the session that made the request
  (``request_id``);
- a witness ``alert`` (written by the guard's cross-check, with no session)
  joins the session whose ``cell_execution`` records used that kernel, of the
  same user (``subject`` and ``details.kernel_id``): kernel ids come from the
  user zone, so a user cannot steer alerts into another user's session.

The index is derived data: it can be dropped and rebuilt from the ledger at any
time, and nothing it says is trusted without the records it points to.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    func,
    insert,
    select,
    update,
)

from nbguard.database import create_tables, write_transaction
from nbguard.errors import RequestError
from nbguard.review.entries import Entry

metadata = MetaData()
_SEQ = BigInteger().with_variant(Integer, "sqlite")

sessions_table = Table(
    "nbguard_review_sessions",
    metadata,
    Column("session", String(128), primary_key=True),
    Column("user", String(256), nullable=True, index=True),
    Column("first_seq", _SEQ, nullable=False),
    Column("last_seq", _SEQ, nullable=False, index=True),
    Column("first_time", String(40), nullable=False),
    Column("last_time", String(40), nullable=False),
    Column("records", Integer, nullable=False),
    Column("cells", Integer, nullable=False),
    Column("alerts", Integer, nullable=False),
    Column("privileged", Boolean, nullable=False),
)
Index("nbguard_review_sessions_user_last", sessions_table.c.user, sessions_table.c.last_seq)
members_table = Table(
    "nbguard_review_members",
    metadata,
    Column("session", String(128), primary_key=True),
    Column("seq", _SEQ, primary_key=True),
)
resources_table = Table(
    "nbguard_review_resources",
    metadata,
    Column("resource", String(600), primary_key=True),
    Column("session", String(128), primary_key=True),
)
links_table = Table(
    "nbguard_review_links",
    metadata,
    Column("key", String(700), primary_key=True),
    Column("session", String(128), nullable=False),
)
state_table = Table(
    "nbguard_review_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", _SEQ, nullable=False),
)

# Any constant: serialises table creation between replicas (pg_advisory_xact_lock).
_SCHEMA_LOCK = 0x6E627265766965

#: Kinds whose actor is the session's user (the others may be another person's act
#: joined to the session, such as bob's approval).
_OWN_KINDS = frozenset({"login", "mfa", "spawn", "server_stop", "access", "cell_execution"})
#: Elevation events that put a grant in force.
GRANTING = frozenset({"approve", "break-glass"})
#: At most this many sessions per page.
MAX_PAGE = 200


@dataclass
class _Summary:
    """What one indexing pass learned about one session."""

    first_seq: int
    last_seq: int
    first_time: str
    last_time: str
    user: str | None = None
    records: int = 0
    cells: int = 0
    alerts: int = 0
    privileged: bool = False
    members: list[int] = field(default_factory=list)
    resources: set[str] = field(default_factory=set)
    #: True when the session's row exists already (update it, do not insert it).
    stored: bool = False


@dataclass(frozen=True)
class SessionFilter:
    """What the session list is narrowed to; every field optional."""

    user: str | None = None
    since: str | None = None
    until: str | None = None
    privileged: bool = False
    alerts: bool = False
    resource: str | None = None

    @classmethod
    def parse(cls, values: dict[str, str]) -> SessionFilter:
        """A filter from query arguments (``user``, ``since``, ``until``, ``privileged``,
        ``alerts``, ``dataset``, ``model``); RequestError names the bad one."""
        unknown = (
            set(values)
            - {"user", "since", "until", "privileged", "alerts"}
            - {
                "dataset",
                "model",
            }
        )
        if unknown:
            raise _bad(f"unknown filter: {sorted(unknown)[0]}")
        if values.get("dataset") and values.get("model"):
            raise _bad("filter by a dataset or a model, not both")
        resource = None
        for kind in ("dataset", "model"):
            name = values.get(kind) or ""
            if name:
                if len(name) > 500 or any(c in name for c in "\x00\r\n"):
                    raise _bad(f"{kind}: not a valid name")
                resource = f"{kind}:{name}"
        return cls(
            user=_text(values.get("user"), "user", 256),
            since=_time(values.get("since"), "since"),
            until=_time(values.get("until"), "until", end_of_day=True),
            privileged=_flag(values.get("privileged"), "privileged"),
            alerts=_flag(values.get("alerts"), "alerts"),
            resource=resource,
        )


def _bad(message: str) -> RequestError:
    """A bad filter, with the message the reviewer sees."""
    return RequestError(message, user_message=message)


def _text(value: str | None, name: str, limit: int) -> str | None:
    if not value:
        return None
    if len(value) > limit or any(c in value for c in "\x00\r\n"):
        raise _bad(f"{name}: not a valid value")
    return value


def _flag(value: str | None, name: str) -> bool:
    if value in (None, "", "0", "false"):
        return False
    if value in ("1", "true", "on"):  # "on": an HTML checkbox without a value
        return True
    raise _bad(f"{name} must be 0 or 1")


def _time(value: str | None, name: str, *, end_of_day: bool = False) -> str | None:
    """An RFC 3339 time or a date as the ledger writes times (microseconds, ``Z``);
    a bare date (UTC) is its first moment, or with ``end_of_day`` its last."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(f"{name} must be an RFC 3339 time or a date") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if end_of_day and len(value) == len("2025-01-31"):
        parsed += timedelta(days=1, microseconds=-1)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class SessionPage:
    """One page of the session list, newest activity first."""

    sessions: list[dict[str, Any]]
    total: int
    #: Pass as ``before`` for the next page (None on the last page).
    next_before: int | None


class SessionIndex:
    """The index tables in one database; thread-safe (each call is one transaction)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_tables(engine, metadata, lock_key=_SCHEMA_LOCK)
        with write_transaction(engine) as connection:
            if connection.execute(select(state_table.c.seq)).first() is None:
                connection.execute(insert(state_table).values(id=1, seq=0))

    def indexed_seq(self) -> int:
        """The last ledger sequence number the index has read."""
        with self.engine.connect() as connection:
            return int(connection.execute(select(state_table.c.seq)).scalar_one())

    def ingest(self, entries: Iterable[Entry]) -> int:
        """Index ``entries`` (export lines in sequence order, continuing from
        :meth:`indexed_seq`; earlier ones are skipped); return how many were new.

        One transaction, holding the state row, so replicas indexing together
        neither skip nor double-count a record.
        """
        with write_transaction(self.engine) as connection:
            done = int(
                connection.execute(
                    select(state_table.c.seq).where(state_table.c.id == 1).with_for_update()
                ).scalar_one()
            )
            summaries: dict[str, _Summary] = {}
            links: dict[str, str] = {}
            last = done
            for entry in entries:
                seq = int(entry["seq"])
                if seq <= last:
                    continue
                self._index_one(connection, entry, summaries, links)
                last = seq
            if last == done:
                return 0
            self._write(connection, summaries, links)
            connection.execute(update(state_table).where(state_table.c.id == 1).values(seq=last))
        return last - done

    # -- one record -------------------------------------------------------------------

    def _index_one(
        self,
        connection: Connection,
        entry: Entry,
        summaries: dict[str, _Summary],
        links: dict[str, str],
    ) -> None:
        record = entry["record"]
        kind = record.get("kind")
        body = record.get("body") or {}
        actor = record.get("actor")
        own = record.get("session")
        targets: list[str] = [own] if isinstance(own, str) and own else []
        joined = self._joined(connection, kind, body, own, actor, links)
        if joined and joined not in targets:
            targets.append(joined)
        for session in targets:
            summary = summaries.get(session) or self._load(connection, session)
            if summary is None:
                summary = _Summary(entry["seq"], entry["seq"], record["time"], record["time"])
            summaries[session] = summary
            self._count(summary, entry, kind, body, actor if session == own else None)

    def _joined(
        self,
        connection: Connection,
        kind: Any,
        body: dict[str, Any],
        own: Any,
        actor: Any,
        links: dict[str, str],
    ) -> str | None:
        """The session a record joins besides its own (and the links it creates)."""
        if kind == "elevation" and isinstance(body.get("request_id"), str):
            key = f"request:{body['request_id']}"
            if body.get("event") in ("request", "break-glass") and own:
                links.setdefault(key, own)
                return None
            return self._link(connection, key, links)
        if kind == "cell_execution" and own and isinstance(body.get("kernel_id"), str):
            # The latest session to run the kernel: a server (and its kernels) can
            # outlive one login session and be used from the next.
            links[f"kernel:{actor}\n{body['kernel_id']}"] = own
            return None
        user = body.get("subject")
        if kind == "alert" and isinstance(user, str):
            details = body.get("details") or {}
            kernel = details.get("kernel_id")
            if isinstance(kernel, str):
                return self._link(connection, f"kernel:{user}\n{kernel}", links)
        return None

    @staticmethod
    def _link(connection: Connection, key: str, links: dict[str, str]) -> str | None:
        if key in links:
            return links[key]
        found = connection.execute(
            select(links_table.c.session).where(links_table.c.key == key)
        ).scalar()
        if found is not None:
            links[key] = str(found)
        return None if found is None else str(found)

    @staticmethod
    def _count(
        summary: _Summary, entry: Entry, kind: Any, body: dict[str, Any], actor: Any
    ) -> None:
        seq = int(entry["seq"])
        time = entry["record"]["time"]
        summary.first_seq = min(summary.first_seq, seq)
        summary.last_seq = max(summary.last_seq, seq)
        summary.first_time = min(summary.first_time, time)
        summary.last_time = max(summary.last_time, time)
        summary.records += 1
        summary.members.append(seq)
        if summary.user is None and isinstance(actor, str) and kind in _OWN_KINDS:
            summary.user = actor
        if kind == "cell_execution":
            if body.get("witness") == "kernel" or body.get("witness") is None:
                summary.cells += 1
            # ``privileged`` is the guard's own judgement; the kernel's list of
            # resources is a user-zone claim, so "touched" counts access decisions only.
            summary.privileged = summary.privileged or body.get("privileged") is True
        elif kind == "access" and isinstance(body.get("resource"), str):
            summary.resources.add(_resource_name(body["resource"]))
        elif kind == "elevation" and body.get("event") in GRANTING:
            summary.privileged = True
        elif kind == "alert":
            summary.alerts += 1

    # -- storage ----------------------------------------------------------------------

    @staticmethod
    def _load(connection: Connection, session: str) -> _Summary | None:
        row = connection.execute(
            select(sessions_table).where(sessions_table.c.session == session)
        ).first()
        if row is None:
            return None
        summary = _Summary(row.first_seq, row.last_seq, row.first_time, row.last_time)
        summary.user = row.user
        summary.records, summary.cells, summary.alerts = row.records, row.cells, row.alerts
        summary.privileged = bool(row.privileged)
        summary.stored = True
        return summary

    @staticmethod
    def _write(
        connection: Connection, summaries: dict[str, _Summary], links: dict[str, str]
    ) -> None:
        for session, s in summaries.items():
            values = {
                "user": s.user,
                "first_seq": s.first_seq,
                "last_seq": s.last_seq,
                "first_time": s.first_time,
                "last_time": s.last_time,
                "records": s.records,
                "cells": s.cells,
                "alerts": s.alerts,
                "privileged": s.privileged,
            }
            if s.stored:
                connection.execute(
                    update(sessions_table).where(sessions_table.c.session == session),
                    values,
                )
            else:
                connection.execute(insert(sessions_table), {"session": session, **values})
        members = [{"session": k, "seq": q} for k, s in summaries.items() for q in s.members]
        if members:
            connection.execute(insert(members_table), members)
        known = {
            (r.resource, r.session)
            for k, s in summaries.items()
            if s.resources
            for r in connection.execute(
                select(resources_table).where(resources_table.c.session == k)
            )
        }
        resources = [
            {"resource": r, "session": k}
            for k, s in summaries.items()
            for r in sorted(s.resources)
            if (r, k) not in known
        ]
        if resources:
            connection.execute(insert(resources_table), resources)
        stored = {
            str(key)
            for key in connection.execute(
                select(links_table.c.key).where(links_table.c.key.in_(list(links)))
            ).scalars()
        }
        fresh = [{"key": k, "session": v} for k, v in links.items() if k not in stored]
        if fresh:
            connection.execute(insert(links_table), fresh)
        for key in stored:  # only kernel links change hands
            connection.execute(
                update(links_table).where(links_table.c.key == key).values(session=links[key])
            )

    # -- reading ----------------------------------------------------------------------

    def list_sessions(
        self, where: SessionFilter, *, limit: int = 50, before: int | None = None
    ) -> SessionPage:
        """A page of sessions matching ``where``, newest activity first; ``before`` is
        the previous page's ``next_before`` (keyset pagination: stable while records
        keep arriving)."""
        if not 1 <= limit <= MAX_PAGE:
            raise _bad(f"limit must be between 1 and {MAX_PAGE}")
        c = sessions_table.c
        conditions = []
        if where.user:
            conditions.append(c.user == where.user)
        if where.since:
            conditions.append(c.last_time >= where.since)
        if where.until:
            conditions.append(c.first_time <= where.until)
        if where.privileged:
            conditions.append(c.privileged.is_(True))
        if where.alerts:
            conditions.append(c.alerts > 0)
        if where.resource:
            touched = select(resources_table.c.session).where(
                resources_table.c.resource == where.resource
            )
            conditions.append(c.session.in_(touched))
        matching = and_(True, *conditions)
        with self.engine.connect() as connection:
            total = int(
                connection.execute(
                    select(func.count()).select_from(sessions_table).where(matching)
                ).scalar_one()
            )
            query = select(sessions_table).where(matching)
            if before is not None:
                query = query.where(c.last_seq < before)
            rows = connection.execute(query.order_by(c.last_seq.desc()).limit(limit + 1)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return SessionPage(
            sessions=[_row(r) for r in rows],
            total=total,
            next_before=rows[-1].last_seq if more and rows else None,
        )

    def session(self, session: str) -> dict[str, Any] | None:
        """One session's summary, or None if the index has never seen it."""
        with self.engine.connect() as connection:
            row = connection.execute(
                select(sessions_table).where(sessions_table.c.session == session)
            ).first()
        return None if row is None else _row(row)

    def members(self, session: str) -> list[int]:
        """The sequence numbers of the records in ``session``, in order."""
        with self.engine.connect() as connection:
            return [
                int(s)
                for s in connection.execute(
                    select(members_table.c.seq)
                    .where(members_table.c.session == session)
                    .order_by(members_table.c.seq)
                ).scalars()
            ]

    def resources(self, session: str) -> list[str]:
        """The datasets and models the session touched (``dataset:x``, ``model:y``)."""
        with self.engine.connect() as connection:
            return sorted(
                str(r)
                for r in connection.execute(
                    select(resources_table.c.resource).where(resources_table.c.session == session)
                ).scalars()
            )


def _resource_name(resource: str) -> str:
    """``NBGuard::Dataset::"sales"`` (a Cedar entity) or ``dataset:sales`` -> ``dataset:sales``."""
    if "::" in resource:
        parts = resource.split("::")
        kind = parts[-2].lower() if len(parts) >= 2 else ""
        name = parts[-1].strip('"')
        return f"{kind}:{name}"[:600]
    return resource[:600]


def _row(row: Any) -> dict[str, Any]:
    return {
        "session": row.session,
        "user": row.user,
        "first_seq": int(row.first_seq),
        "last_seq": int(row.last_seq),
        "first_time": row.first_time,
        "last_time": row.last_time,
        "records": int(row.records),
        "cells": int(row.cells),
        "alerts": int(row.alerts),
        "privileged": bool(row.privileged),
    }
