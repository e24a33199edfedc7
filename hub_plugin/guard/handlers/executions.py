"""``POST /api/v1/executions``: execution records from the two witnesses of a server.

Only a single-user server's own token is accepted (its kernels inherit it): the
guard takes the user and the server from the token and the spawn lease, never
from the body, so one user's server cannot write another's records. Each
record is checked field by field (one bad record refuses the batch), stored
once per stream position whichever replica gets it, and becomes one
``cell_execution`` ledger record whose ``privileged`` the guard decides from
the user's grants, whatever the kernel claims.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from nbguard.elevation.models import ElevationGrant
from nbguard.errors import LedgerError, NBGuardError, RecordValidationError
from nbguard.executions.models import MAX_BATCH_BYTES, held_during, parse_batch
from nbguard.executions.store import Accepted, ExecutionStoreError
from nbguard.hub_plugin.guard.decisions import LedgerUnavailable
from nbguard.hub_plugin.guard.elevation_records import in_store
from nbguard.hub_plugin.guard.handlers.base import APIHandler, GuardError, http_error

if TYPE_CHECKING:
    from nbguard.hub_plugin.guard.contexts import CallerContext

T = TypeVar("T")


async def in_execution_store(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one execution-store call off the event loop; its failures as JSON errors.

    A store or ledger outage is 503 (the shipper keeps its spool and retries); a
    record the ledger's schema refuses is 400, like any other malformed record.
    """
    try:
        return await asyncio.to_thread(call, *args, **kwargs)
    except ExecutionStoreError as error:
        raise GuardError(503, "unavailable", error.user_message) from error
    except RecordValidationError as error:
        raise GuardError(
            400, "bad_request", f"A record does not fit the ledger: {error}"
        ) from error
    except LedgerError as error:
        raise http_error(LedgerUnavailable(str(error))) from error
    except NBGuardError as error:
        raise http_error(error) from error


def grant_intervals(grants: list[ElevationGrant]) -> list[tuple[float, float]]:
    """When each grant was in force: from its start to its expiry or revocation."""
    return [
        (g.starts, g.expires if g.revoked is None else min(g.expires, g.revoked)) for g in grants
    ]


class ServerAPIHandler(APIHandler):
    """A route only a single-user server's own token may call (its kernels share it)."""

    async def server_caller(self) -> CallerContext:
        """The caller's context; 403 unless the token is the one the server was spawned with."""
        who = await self.caller_context()
        if who.server is None:
            raise GuardError(
                403,
                "forbidden",
                "Only a single-user server's own token may call this "
                "(not a user's token, and not a server that has stopped).",
            )
        return who


class ExecutionsHandler(ServerAPIHandler):
    """``POST /api/v1/executions``: a batch of one witness's execution records."""

    max_body = MAX_BATCH_BYTES

    async def post(self) -> None:
        """Store and record the batch; 200 ``{"accepted", "duplicates"}``."""
        who = await self.server_caller()
        try:
            batch = parse_batch(self.json_body())
        except NBGuardError as error:
            raise http_error(error) from error
        grants = await in_store(self.guard.elevations.list_grants, user=who.name, active_only=False)
        intervals = grant_intervals(grants)
        arrived = time.time()
        privileged = [held_during(intervals, r.moment, arrived) for r in batch.records]
        added = await in_execution_store(
            self.guard.executions.add,
            user=who.name,
            server=who.server or "",
            batch=batch,
            privileged=privileged,
            on_accept=self.ledger_writer(who),
        )
        self.write_json({"accepted": added.accepted, "duplicates": added.duplicates})

    def ledger_writer(self, who: CallerContext) -> Callable[[list[Accepted]], None]:
        """What the store calls, inside its transaction, with the records stored now:
        one ``cell_execution`` record each, durable before the transaction commits."""
        ledger = self.guard.ledger
        session = who.session_id or None
        server = who.server or ""

        def write(accepted: list[Accepted]) -> None:
            ledger.append_many(
                (
                    "cell_execution",
                    record.ledger_body(privileged=flag, server=server),
                    who.name,
                    session,
                )
                for record, flag in accepted
            )

        return write
