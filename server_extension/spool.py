"""``WitnessSpool``: witness records on disk until the guard service has them.

One small SQLite file per server (in its runtime directory). Records are kept
in the order they were witnessed (an autoincrement key) and removed only after
the guard acknowledged them, so a guard outage, a crash or a restart of the
server loses nothing; the next run ships what the last one left, first.

The journal is WAL with ``synchronous=NORMAL``: a commit is in the file before
the call returns (it survives the server process being killed) without an
fsync per execution; only a machine crash can lose the last moments.

A record the guard refuses as malformed is moved to the ``rejected`` table,
kept for an administrator, so one bad record cannot block the stream.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from typing import Any

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS records ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rejected ("
    " id INTEGER PRIMARY KEY, body TEXT NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL)",
)


class WitnessSpool:
    """An ordered, durable queue of witness records in the SQLite file ``path``.

    Used from the server's event loop thread only; each call is one short
    transaction.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, mode=0o700, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA:
            self._db.execute(statement)

    def append(self, record: dict[str, Any]) -> None:
        """Keep ``record`` after every record appended before it."""
        body = json.dumps(record, separators=(",", ":"), sort_keys=True)
        self._db.execute("INSERT INTO records (body) VALUES (?)", (body,))

    def oldest(self, limit: int) -> list[tuple[int, dict[str, Any]]]:
        """Up to ``limit`` records, oldest first, with their spool ids."""
        rows = self._db.execute(
            "SELECT id, body FROM records ORDER BY id LIMIT ?", (limit,)
        ).fetchall()
        return [(row_id, json.loads(body)) for row_id, body in rows]

    def remove(self, ids: list[int]) -> None:
        """Forget records the guard has acknowledged."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM records WHERE id = ?", [(i,) for i in ids])

    def reject(self, ids: list[int], reason: str) -> None:
        """Move records the guard refused as malformed to the ``rejected`` table."""
        now = time.time()
        with self._db:
            self._db.execute("BEGIN")
            for row_id in ids:
                self._db.execute(
                    "INSERT OR REPLACE INTO rejected (id, body, reason, at) "
                    "SELECT id, body, ?, ? FROM records WHERE id = ?",
                    (reason, now, row_id),
                )
                self._db.execute("DELETE FROM records WHERE id = ?", (row_id,))

    def pending(self) -> int:
        """How many records wait for the guard."""
        (count,) = self._db.execute("SELECT count(*) FROM records").fetchone()
        return int(count)

    def rejected(self) -> list[tuple[dict[str, Any], str]]:
        """Records the guard refused, with its reason, oldest first."""
        rows = self._db.execute("SELECT body, reason FROM rejected ORDER BY id").fetchall()
        return [(json.loads(body), reason) for body, reason in rows]

    def close(self) -> None:
        """Close the file (records not yet shipped stay in it)."""
        self._db.close()
