"""Failing closed at the hub: when the ledger or the MFA database cannot do their part."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from tornado import web

from nbguard.errors import NBGuardError, SecretError
from nbguard.hub_plugin.mfa.store import StoreError

if TYPE_CHECKING:
    from nbguard.hub_plugin.hub_guard import NBGuard
    from nbguard.ledger.writer import PendingReceipt

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
        raise _unrecorded(guard, kind, error) from error


def queue_record(
    guard: NBGuard, kind: str, body: Mapping[str, Any], *, actor: str, session: str | None = None
) -> PendingReceipt:
    """Validate and queue one record without waiting; HTTP 503 if the ledger refuses it.

    For a record that must be durable before a later answer rather than this
    one: pass the receipt to :func:`await_recorded` before that answer.
    """
    try:
        return guard.ledger.append_nowait(kind, body, actor=actor, session=session)
    except NBGuardError as error:
        raise _unrecorded(guard, kind, error) from error


async def await_recorded(guard: NBGuard, receipt: PendingReceipt, kind: str) -> None:
    """Return once a queued record is durable; HTTP 503 (nothing granted) if it was not stored."""
    try:
        await guard.ledger.durable(receipt)
    except NBGuardError as error:
        raise _unrecorded(guard, kind, error) from error


def _unrecorded(guard: NBGuard, kind: str, error: Exception) -> web.HTTPError:
    guard.log.error("nbguard: could not append a %s record: %s", kind, error)
    return web.HTTPError(503, UNRECORDED)


#: What the user reads when the MFA database is down.
STORE_DOWN = (
    "nbguard cannot reach its second-factor database, so sign-in is paused. "
    "Try again in a moment, or contact your administrator."
)

#: What the user reads when their factor's secret opens with none of the admin's keys.
FACTOR_UNREADABLE = (
    "nbguard cannot read your second factor's key (the hub's keys changed), so sign-in "
    "is paused for you. Contact your administrator."
)

_Method = TypeVar("_Method", bound=Callable[..., Awaitable[Any]])


def fail_closed(method: _Method) -> _Method:
    """Turn a StoreError inside a handler stage into HTTP 503 with a plain message."""

    @functools.wraps(method)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        except StoreError as error:
            logging.getLogger("nbguard").error("nbguard: MFA database unavailable: %s", error)
            raise web.HTTPError(503, STORE_DOWN) from error
        except SecretError as error:
            logging.getLogger("nbguard").error(
                "nbguard: a TOTP secret opens with none of NBGuard.secret_keys: %s", error
            )
            raise web.HTTPError(503, FACTOR_UNREADABLE) from error

    return wrapper  # type: ignore[return-value]
