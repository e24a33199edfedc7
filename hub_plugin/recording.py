"""Appending the hub's audit records: fail closed when the ledger cannot take them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tornado import web

from nbguard.errors import NBGuardError

if TYPE_CHECKING:
    from nbguard.hub_plugin.hub_guard import NBGuard

#: What the user reads when the ledger is down (the log gets the cause).
UNRECORDED = (
    "nbguard could not record this action in its audit ledger, so it is refused. "
    "Try again in a moment, or contact your administrator."
)


async def append_record(
    guard: NBGuard, kind: str, body: Mapping[str, Any], *, actor: str, session: str | None = None
) -> None:
    """Append one record and await its durability; HTTP 503 (nothing granted) if that fails."""
    try:
        await guard.ledger.append_async(kind, body, actor=actor, session=session)
    except NBGuardError as error:
        guard.log.error("nbguard: could not append a %s record: %s", kind, error)
        raise web.HTTPError(503, UNRECORDED) from error
