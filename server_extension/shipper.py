"""``WitnessShipper``: numbers witness records, spools them, and ships them in order.

:meth:`WitnessShipper.record` is called by the websocket witness after the
message went on to the kernel: it gives the record its stream position
(``instance`` of this server process, ``seq`` per kernel from 0), appends it to
the durable spool and wakes the shipping task. That task sends the oldest
records in batches to ``POST {guard}api/v1/executions`` as
``{"witness": "server", "records": [...]}`` and forgets them only once the
guard acknowledged them. The guard keeps each ``(kernel_id, instance, seq)``
once, so a batch resent after a lost answer is counted as duplicates, not
recorded twice.

A failure (guard down, 5xx, timeout, token not accepted yet) is retried after
``retry_min`` seconds, doubling up to ``retry_max``, with jitter. A batch the
guard refuses as malformed (``nbguard.delivery.REFUSED_STATUSES``) is set aside in the spool's
``rejected`` table and logged as an error, so it cannot block what follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

from nbguard.delivery import REFUSED_STATUSES, backoff_seconds
from nbguard.server_extension.guard_client import GuardAnswerError, GuardClient
from nbguard.server_extension.spool import WitnessSpool

#: Seconds the last attempt at shutdown may take.
STOP_TIMEOUT = 2.0


def rfc3339_now() -> str:
    """The current time as RFC 3339 UTC with microseconds, ending in ``Z``."""
    moment = datetime.fromtimestamp(time.time(), UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


class WitnessShipper:
    """Spools the server witness's records and ships them to the guard, in order, once."""

    def __init__(
        self,
        spool: WitnessSpool,
        guard: GuardClient,
        *,
        instance: str,
        batch_size: int = 200,
        retry_min: float = 0.5,
        retry_max: float = 60.0,
        log: logging.Logger | None = None,
    ) -> None:
        self.spool = spool
        self.guard = guard
        self.instance = instance
        self.batch_size = batch_size
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.log = log or logging.getLogger(__name__)
        self._seq: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def record(
        self,
        *,
        kernel_id: str,
        msg_id: str,
        cell_id: str | None,
        session: str,
        code_sha256: str,
        silent: bool,
    ) -> dict[str, Any]:
        """Number, timestamp and spool one witnessed ``execute_request``; return the record."""
        seq = self._seq.get(kernel_id, 0)
        self._seq[kernel_id] = seq + 1
        record: dict[str, Any] = {
            "kernel_id": kernel_id,
            "instance": self.instance,
            "seq": seq,
            "msg_id": msg_id,
            "session": session,
            "code_sha256": code_sha256,
            "silent": silent,
            "received": rfc3339_now(),
        }
        if cell_id is not None:
            record["cell_id"] = cell_id
        self.spool.append(record)
        if self._task is None:  # servers that never ran the extensions' start hook
            self.start()
        self._wake.set()
        return record

    def pending(self) -> int:
        """Records not yet acknowledged by the guard."""
        return self.spool.pending()

    def start(self) -> None:
        """Start the shipping task on the running event loop (ships any leftovers first)."""
        if self._task is None:
            self._wake.set()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop shipping; try once more, briefly, to ship what waits; close the spool."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ship_once(), STOP_TIMEOUT)
        self.spool.close()

    async def _run(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                try:
                    shipped = await self.ship_once()
                except GuardAnswerError as error:
                    self._report_failure(error)
                    failures += 1
                    await self._sleep(self._backoff(failures))
                    continue
                except Exception:  # a bug must not end witnessing: log, wait, go on
                    self.log.exception("nbguard | witness shipper failed; retrying")
                    failures += 1
                    await self._sleep(self._backoff(failures))
                    continue
                failures = 0
                if self._failing:
                    self.log.info("nbguard | witness records reach the guard again")
                    self._failing = False
                if shipped == 0:
                    break

    def _backoff(self, failures: int) -> float:
        return backoff_seconds(failures, initial=self.retry_min, maximum=self.retry_max)

    async def _sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (new records do not cut a back-off short)."""
        await asyncio.sleep(seconds)

    def _report_failure(self, error: GuardAnswerError) -> None:
        if not self._failing:
            self.log.warning(
                "nbguard | witness records wait in %s (%d): the guard answered %s: %s",
                self.spool.path,
                self.spool.pending(),
                error.status_code,
                error.body.get("error", {}).get("message", ""),
            )
            self._failing = True

    async def ship_once(self, limit: int | None = None) -> int:
        """Send the oldest batch; return how many records left the spool (0: none waited).

        A batch refused as malformed is halved until the one bad record is found
        and set aside. Raises :class:`GuardAnswerError` when the batch should be
        retried later.
        """
        batch = self.spool.oldest(limit or self.batch_size)
        if not batch:
            return 0
        ids = [row_id for row_id, _ in batch]
        body = {"witness": "server", "records": [record for _, record in batch]}
        try:
            await self.guard.call("POST", "api/v1/executions", body=body)
        except GuardAnswerError as error:
            if error.status_code not in REFUSED_STATUSES:
                raise
            if len(batch) > 1:
                return await self.ship_once(len(batch) // 2)
            reason = str(error.body.get("error", {}).get("message", ""))
            self.log.error(
                "nbguard | the guard refused a witness record as malformed (%s); "
                "it is kept in the rejected table of %s",
                reason,
                self.spool.path,
            )
            self.spool.reject(ids, reason)
            return len(ids)
        self.spool.remove(ids)
        return len(ids)
