"""Review of recorded sessions: the API, the pages, and the exports.

Who may review is the policy's ``session.review``: on the hub for the session
list, on the session's user for one session (the default policies: reviewers and
admins with a recent second factor, never their own session). Each view and
export of a session is a ``review`` ledger record, written before anything is
shown; a session the caller may not know about is 404 once they may review.

Recorded code and output are untrusted: the pages escape them (Jinja
autoescape), show them as preformatted text, and send a Content-Security-Policy
that allows only the service's own scripts, so text in a record cannot run.
"""

from __future__ import annotations

import json
import re
from io import StringIO
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from nbguard.errors import NBGuardError
from nbguard.hub_plugin.guard.contexts import CallerContext
from nbguard.hub_plugin.guard.handlers.base import HUB, APIHandler, GuardError, http_error
from nbguard.hub_plugin.guard.handlers.elevation import ElevationAPIHandler
from nbguard.hub_plugin.guard.handlers.pages import PageAction, PageAuth
from nbguard.hub_plugin.guard.review import SessionReviewer, reviewer_of
from nbguard.policy import EntityRef
from nbguard.review.exports import FORMATS, write_jsonl, write_notebook
from nbguard.review.index import MAX_PAGE, SessionFilter
from nbguard.review.replay import SessionReview
from nbguard.review.timeline import ALERT, CELL, next_index

#: Query arguments of the session list that are filters.
FILTERS = ("user", "since", "until", "privileged", "alerts", "dataset", "model")
#: Session ids as the login wrapper draws them (and any other id the ledger accepts
#: that is safe in a URL and a file name); anything else is an unknown session.
SESSION_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
#: What review pages may load: the service's and the hub's own files, nothing inline
#: (so no text from a record can become a script), no frames, forms only to here.
REVIEW_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'; object-src 'none'"
)
#: Timeline events a session page lists around the player's position (the API and
#: the exports hold them all).
TIMELINE_WINDOW = 200
_MEDIA = {"ipynb": "application/x-ipynb+json", "jsonl": "application/x-ndjson"}
_PLAYER = Path(__file__).resolve().parent.parent / "static" / "review_player.js"


class ReviewAPIHandler(APIHandler):
    """Shared by the review routes: the reviewer, the policy check, the records."""

    @property
    def reviewer(self) -> SessionReviewer:
        """The service's session reviewer."""
        return reviewer_of(self.guard, self.settings)

    def set_default_headers(self) -> None:
        """The base headers with the strict policy above."""
        super().set_default_headers()
        self.set_header("Content-Security-Policy", REVIEW_CSP)

    async def may_list(self) -> CallerContext:
        """403 unless the policy lets the caller review sessions (on the hub)."""
        who, _ = await self.decide_or_deny(await self.caller_context(), "session.review", HUB)
        return who

    async def reviewed(self, session: str) -> tuple[CallerContext, SessionReview]:
        """The session, if the caller may review it: 403 if not, 404 if unknown."""
        if not SESSION_ID.match(session):
            await self.may_list()
            raise GuardError(404, "not_found", "No such session.")
        try:
            owner = await self.reviewer.owner(session)
        except NBGuardError as error:
            raise http_error(error) from error
        if owner is None:
            await self.may_list()
            raise GuardError(404, "not_found", "No such session.")
        who, _ = await self.decide_or_deny(
            await self.caller_context(), "session.review", EntityRef("User", owner)
        )
        try:
            return who, await self.reviewer.review(session)
        except NBGuardError as error:
            raise http_error(error) from error

    async def record(
        self, who: CallerContext, action: str, review: SessionReview, fmt: str | None = None
    ) -> None:
        """The ``review`` record; 503 if the ledger cannot take it (nothing shown)."""
        try:
            await self.reviewer.record(who, action, review, fmt)
        except NBGuardError as error:
            self.guard.log.error("nbguard guard: could not record a review: %s", error)
            raise GuardError(
                503, "ledger_unavailable", "The review could not be recorded; try again."
            ) from None

    def filters(self) -> tuple[SessionFilter, int, int | None]:
        """The list's filters, page size and ``before`` from the query; 400 if bad."""
        values = {
            name: self.get_query_argument(name, "").strip()
            for name in self.request.query_arguments
            if name not in ("limit", "before", "done")
        }
        try:
            where = SessionFilter.parse(values)
        except NBGuardError as error:
            raise http_error(error) from error
        limit = _number(self.get_query_argument("limit", "50"), "limit", 1, MAX_PAGE)
        before_text = self.get_query_argument("before", "")
        before = _number(before_text, "before", 1, 2**62) if before_text else None
        return where, limit, before

    async def export(self, session: str, fmt: str) -> None:
        """Send the session in ``fmt`` as a download, recorded first."""
        if fmt not in FORMATS:
            raise GuardError(400, "bad_request", f"format must be one of {', '.join(FORMATS)}.")
        who, review = await self.reviewed(session)
        await self.record(who, "export", review, fmt)
        out = StringIO()
        (write_notebook if fmt == "ipynb" else write_jsonl)(review, out)
        self.set_header("Content-Type", f"{_MEDIA[fmt]}; charset=utf-8")
        self.set_header("Content-Disposition", f'attachment; filename="session-{session}.{fmt}"')
        self.finish(out.getvalue())


def _number(text: str, name: str, low: int, high: int) -> int:
    if not text.isdigit() or not low <= int(text) <= high:
        raise GuardError(400, "bad_request", f"{name} must be a whole number from {low} to {high}.")
    return int(text)


class ReviewSessionsHandler(ReviewAPIHandler):
    """``GET /api/v1/review/sessions``: recorded sessions, newest activity first."""

    async def get(self) -> None:
        """Filters: ``user``, ``since``, ``until``, ``privileged``, ``alerts``,
        ``dataset``, ``model``; pages: ``limit``, ``before`` (the previous page's
        ``next_before``)."""
        where, limit, before = self.filters()
        await self.may_list()
        try:
            page = await self.reviewer.sessions(where, limit, before)
        except NBGuardError as error:
            raise http_error(error) from error
        self.write_json(
            {"sessions": page.sessions, "total": page.total, "next_before": page.next_before}
        )


class ReviewSessionHandler(ReviewAPIHandler):
    """``GET /api/v1/review/sessions/{session}``: one session's timeline and integrity."""

    async def get(self, session: str) -> None:
        """The review as JSON (recorded as a view)."""
        who, review = await self.reviewed(session)
        await self.record(who, "view", review)
        self.write_json(review.to_dict())


class ReviewExportHandler(ReviewAPIHandler):
    """``GET /api/v1/review/sessions/{session}/export?format=ipynb|jsonl``."""

    async def get(self, session: str) -> None:
        """The session as a download (recorded as an export)."""
        await self.export(session, self.get_query_argument("format", "ipynb"))


# -- pages ------------------------------------------------------------------------------


class ReviewPage(PageAuth, ReviewAPIHandler, ElevationAPIHandler):
    """A review page (the strict policy on every answer, errors included); the
    elevation helpers tell whether to show the admin tabs."""


class ReviewListPage(ReviewPage):
    """The session list with its filter form and pages."""

    async def get(self) -> None:
        """Render the list."""
        where, limit, before = self.filters()
        who = await self.may_list()
        try:
            page = await self.reviewer.sessions(where, limit, before)
        except NBGuardError as error:
            raise http_error(error) from error
        query = {
            name: self.get_query_argument(name, "")[:256]
            for name in FILTERS
            if self.get_query_argument(name, "")
        }
        more = (
            self.page_url("review") + "?" + urlencode({**query, "before": page.next_before})
            if page.next_before
            else ""
        )
        self.render_page(
            "guard_review_list.html",
            title="Recorded sessions",
            sessions=page.sessions,
            total=page.total,
            query=query,
            next_url=more,
            first_url=self.page_url("review") + ("?" + urlencode(query) if query else ""),
            paged=before is not None,
            is_admin=self.is_admin(who),
        )


class ReviewSessionPage(ReviewPage):
    """One session: the player, the timeline, integrity and export buttons."""

    async def get(self, session: str) -> None:
        """Render the session at event ``at`` (default: its first cell)."""
        who, review = await self.reviewed(session)
        await self.record(who, "view", review)
        events = [e.to_dict() for e in review.events]
        first_cell = next_index(review.events, -1, CELL)
        at_text = self.get_query_argument("at", "")
        at = _number(at_text, "at", 0, max(len(events) - 1, 0)) if at_text else first_cell or 0
        previous = [i for i in range(at) if events[i]["type"] == CELL]
        first = max(0, min(at - TIMELINE_WINDOW // 2, len(events) - TIMELINE_WINDOW))
        base = self.page_url(f"review/sessions/{session}")

        def step(index: int | None) -> str:
            return f"{base}?at={index}#player" if index is not None else ""

        self.render_page(
            "guard_review_session.html",
            title="Recorded session",
            review=review,
            summary=review.summary,
            ledger=review.status,
            broken=review.broken,
            events=events,
            at=at,
            window=(first, min(first + TIMELINE_WINDOW, len(events))),
            current=events[at] if events else None,
            steps={
                "previous": step(previous[-1] if previous else None),
                "next": step(next_index(review.events, at, CELL)),
                "privileged": step(next_index(review.events, at, "privileged")),
                "alert": step(next_index(review.events, at, ALERT)),
            },
            export_action=f"review/sessions/{session}/export",
            player_src=self.page_url("review/player.js"),
            is_admin=self.is_admin(who),
            pretty=lambda value: json.dumps(value, indent=1, ensure_ascii=False),
        )


class ReviewExportAction(PageAction, ReviewAPIHandler):
    """The export buttons: a form (XSRF-checked) answered with the download."""

    async def post(self, session: str) -> None:
        """Export in the form's ``format``."""
        await self.export(session, self.get_body_argument("format", "ipynb"))


class PlayerScript(PageAuth):
    """``review/player.js``: the player's keyboard keys, served as a file (no inline
    script on the pages)."""

    async def get(self) -> None:
        """The script (signed-in users only, like the pages)."""
        self.set_header("Content-Type", "text/javascript; charset=utf-8")
        self.finish(_PLAYER.read_bytes())


#: ``(path under the prefix, handler)`` of the review pages.
REVIEW_PAGE_ROUTES: list[tuple[str, Any]] = [
    ("review", ReviewListPage),
    ("review/player.js", PlayerScript),
    ("review/sessions/{session}", ReviewSessionPage),
    ("review/sessions/{session}/export", ReviewExportAction),
]
#: ``(path under the prefix, handler)`` of the review API.
REVIEW_API_ROUTES: list[tuple[str, Any]] = [
    ("api/v1/review/sessions", ReviewSessionsHandler),
    ("api/v1/review/sessions/{session}", ReviewSessionHandler),
    ("api/v1/review/sessions/{session}/export", ReviewExportHandler),
]
