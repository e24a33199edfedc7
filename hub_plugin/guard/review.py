"""The guard service's side of review: the session index kept current, the ledger's
verdict cached, and the ``review`` records of who viewed or exported what.

The index and the timeline are :mod:`nbguard.review`; this module only runs them
off the event loop and keeps the whole-ledger verification from running on every
page view (it reads every record). Each shown record's own hash is still checked
on every view.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from traitlets import Float, List, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from nbguard.database import normalise_url, open_engine
from nbguard.errors import ConfigError, LedgerError, NBGuardError
from nbguard.hub_plugin.guard.decisions import LedgerUnavailable
from nbguard.ledger.keys import load_public_keys
from nbguard.review.index import SessionFilter, SessionIndex, SessionPage
from nbguard.review.integrity import LedgerStatus
from nbguard.review.replay import SessionReview, ledger_status, refresh_index, review_from_store

if TYPE_CHECKING:
    from nbguard.hub_plugin.guard.app import GuardService
    from nbguard.hub_plugin.guard.contexts import CallerContext

T = TypeVar("T")


class ReviewUnavailable(LedgerUnavailable):
    """The session index or the ledger cannot be read now (503: nothing shown)."""

    default_user_message = (
        "Recorded sessions cannot be read right now (the ledger or its index is "
        "unavailable). Try again in a moment."
    )


async def _off_loop(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a database call in a thread; a database outage is ReviewUnavailable."""
    try:
        return await asyncio.to_thread(call, *args, **kwargs)
    except (SQLAlchemyError, LedgerError) as error:
        raise ReviewUnavailable(f"review: {error}") from error


class SessionReviewer(LoggingConfigurable):
    """Reviewing recorded sessions in the guard service (pages and API)."""

    index_url = Unicode(
        "",
        help="""Database URL of the session index (tables ``nbguard_review_*``).

        Empty (default): the ledger's own database (``Ledger.url``), which every
        replica shares. The index is derived from the ledger and can be dropped
        at any time; it is rebuilt from the ledger's first record.""",
    ).tag(config=True)

    public_key_files = List(
        Unicode(),
        help="""Public keys (PEM) whose checkpoints the review pages accept when they
        verify the ledger.

        Default: the public half of ``Ledger.signing_key_file`` when set. List
        every key that ever signed after a rotation. With none, each shown
        record's own hash is still checked, but no checkpoint is.""",
    ).tag(config=True)

    verify_interval = Float(
        60.0,
        help="""Seconds a whole-ledger verification stays valid for the review pages
        (default 60).

        Verifying reads every record, so it runs at most this often (and again
        at once when the ledger has shrunk), off the event loop. Shown records
        are always re-hashed on each view.""",
    ).tag(config=True)

    @default("public_key_files")
    def _default_keys(self) -> list[str]:
        ledger = self.parent.config.get("Ledger", {}) if self.parent is not None else {}
        key = ledger.get("signing_key_file")
        return [str(key)] if key else []

    @validate("verify_interval")
    def _non_negative(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if value < 0:
            raise ConfigError("SessionReviewer.verify_interval must not be negative")
        return value

    def __init__(self, guard: GuardService, **kwargs: Any) -> None:
        super().__init__(parent=guard, **kwargs)
        self.guard = guard
        self.keys = load_public_keys(self.public_key_files)
        engine = (
            open_engine(normalise_url(self.index_url, what="the session index"))
            if self.index_url
            else guard.ledger.store.engine
        )
        self.index = SessionIndex(engine)
        self._status: tuple[float, int, LedgerStatus] | None = None
        self._verifying = asyncio.Lock()
        self._indexing = asyncio.Lock()

    async def refresh(self) -> None:
        """Index the records appended since the last view (one replica at a time in
        the database; one call at a time in this process)."""
        async with self._indexing:
            await _off_loop(refresh_index, self.guard.ledger.store, self.index)

    async def sessions(self, where: SessionFilter, limit: int, before: int | None) -> SessionPage:
        """A page of the session list, the index brought up to date first."""
        await self.refresh()
        return await _off_loop(self.index.list_sessions, where, limit=limit, before=before)

    async def owner(self, session: str) -> str | None:
        """The user of ``session`` (None: unknown session or no user)."""
        await self.refresh()
        summary = await _off_loop(self.index.session, session)
        return None if summary is None else summary.get("user")

    async def status(self) -> LedgerStatus:
        """The whole-ledger verdict, at most ``verify_interval`` seconds old."""
        async with self._verifying:
            store = self.guard.ledger.store
            head = await _off_loop(_last_seq, store)
            cached = self._status
            if cached is not None:
                at, seen, status = cached
                fresh = time.monotonic() - at < self.verify_interval
                if fresh and head >= seen:
                    return status
            status = await _off_loop(ledger_status, store, self.keys)
            self._status = (time.monotonic(), head, status)
            return status

    async def review(self, session: str) -> SessionReview:
        """One session's review (NotFoundError if unknown)."""
        await self.refresh()
        status = await self.status()
        return await _off_loop(
            review_from_store, self.guard.ledger.store, self.index, session, status
        )

    async def record(
        self, who: CallerContext, action: str, review: SessionReview, fmt: str | None = None
    ) -> None:
        """The ``review`` record of a view or an export; refused (503) if it cannot be
        written: nothing is shown that was not recorded."""
        first, last = review.seq_range
        body: dict[str, Any] = {"action": action, "target_session": review.session[:128]}
        user = review.summary.get("user")
        if user:
            body["target_user"] = str(user)[:256]
        if first:
            body.update(from_seq=first, to_seq=last)
        if fmt:
            body.update(format=fmt, redacted=False)
        await self.guard.ledger.append_async(
            "review", body, actor=who.name, session=who.session_id or None
        )


def _last_seq(store: Any) -> int:
    with store.snapshot() as snapshot:
        return int(snapshot.last_seq())


def reviewer_of(guard: GuardService, settings: dict[str, Any]) -> SessionReviewer:
    """The service's one :class:`SessionReviewer` (made on first use: services that
    never show a review page never create the index tables)."""
    reviewer = settings.get("nbguard_reviewer")
    if reviewer is None:
        try:
            reviewer = SessionReviewer(guard)
        except (NBGuardError, SQLAlchemyError) as error:
            # A key file that cannot be read, an index database that is down:
            # the admin's log says which, the reviewer gets a 503; retried next view.
            guard.log.error("nbguard guard: session review unavailable: %s", error)
            raise ReviewUnavailable(f"review: {error}") from error
        settings["nbguard_reviewer"] = reviewer
    return reviewer  # type: ignore[no-any-return]
