"""Knowing, cheaply and exactly, whether a database changed since an answer was read.

The guard service reads a caller's grants and locks, and the catalog's
generation, on every request so that a revocation, a lock or a catalog change
counts on the very next request on every replica. :class:`ChangeWatch` lets it
skip those reads when nothing at all was committed to the database since they
were made: SQLite's ``PRAGMA data_version`` (on a connection of the watch's own)
differs after any commit by any other connection, in this process or another.
SQLite documents it for exactly this, invalidating caches.

Other databases give no such signal for free, so the watch answers None there
and callers read every time. :class:`StandingCache` is the guard's use of it.
"""

from __future__ import annotations

import enum
import sqlite3
import threading
from typing import TYPE_CHECKING, Final, Literal, TypeAlias

from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from nbguard.elevation.models import ActiveElevation, Lock
    from nbguard.elevation.store import ElevationStore, Standing


class _Unread(enum.Enum):
    UNREAD = "unread"


#: Passed as ``version`` where none was read yet: the callee reads one itself.
UNREAD: Final = _Unread.UNREAD
#: A version a caller read already (see :meth:`ChangeWatch.version`), or UNREAD.
Version: TypeAlias = int | Literal[_Unread.UNREAD] | None


class ChangeWatch:
    """The version of an SQLite database, or None where there is no exact, cheap one."""

    def __init__(self, url: str) -> None:
        """Watch the database at ``url`` (an SQLAlchemy URL; only SQLite files get a version)."""
        parsed = make_url(url)
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            # Never written through: it only asks the version, in autocommit mode, so
            # it holds no transaction open between calls.
            self._connection = sqlite3.connect(
                str(parsed.database), isolation_level=None, check_same_thread=False
            )

    def version(self) -> int | None:
        """A number that differs after any commit made since it was last read; None when
        unknown (not SQLite, or the question failed): then read, do not trust a cache."""
        if self._connection is None:
            return None
        with self._lock:
            try:
                row = self._connection.execute("PRAGMA data_version").fetchone()
            except sqlite3.Error:
                return None
        return int(row[0]) if row else None

    def close(self) -> None:
        """Close the watch's connection (later calls answer None)."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


class StandingCache:
    """:meth:`ElevationStore.standing` answers, reused only while they are still exact.

    An answer is reused while the database's version is the one read before it
    (no commit anywhere since, so no grant, revocation or lock) and the clock is
    between the read and the first moment a grant or lock it saw starts or ends.
    Without a version (PostgreSQL) every call reads the store.
    """

    def __init__(self, store: ElevationStore, watch: ChangeWatch, *, size: int = 4096) -> None:
        self.store = store
        self.watch = watch
        self.size = size
        self.clock = store.clock
        #: (user, device) -> (the version read before the answer, the answer)
        self._entries: dict[tuple[str, str], tuple[int, Standing]] = {}

    def standing(
        self, user: str, *, device_id: str = "", version: Version = UNREAD
    ) -> tuple[ActiveElevation, list[Lock]]:
        """What ``user`` holds now and the locks on them or ``device_id``.

        ``version``: the watch's version if the caller read it already for this
        request (one question to the database instead of two); it must have been
        read before this call and after anything the caller committed.
        """
        key = (user, device_id)
        # The version is read before the store: an answer is never tagged with a
        # version newer than what it saw.
        if version is UNREAD:
            version = self.watch.version()
        if version is not None:
            seen, kept = self._entries.get(key, (None, None))
            if seen == version and kept is not None and kept.read_at <= self.clock() < kept.until:
                return kept.elevation, list(kept.locks)
        found = self.store.standing_until(user, device_id=device_id)
        if version is not None and found.until > found.read_at:
            if len(self._entries) >= self.size:
                self._entries.clear()  # callers are few; a full table is rare, so simply restart
            self._entries[key] = (version, found)
        return found.elevation, list(found.locks)
