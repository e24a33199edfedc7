"""Deciding one governed request for a caller, and recording the decision in the ledger.

Every route that touches a governed resource (the decision API, the dataset
broker, the model gateway) goes through :meth:`Decider.decide`: one decision per
request, locks first, and an ``access`` ledger record with the deciding policies
and, when the client sent one, the notebook cell that asked. A record that
cannot be written denies the request (fail closed).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nbguard.errors import AccessDenied, NBGuardError, RequestError
from nbguard.policy import Decision, EntityRef

if TYPE_CHECKING:
    from nbguard.hub_plugin.guard.contexts import CallerContext, ContextResolver
    from nbguard.ledger import Ledger
    from nbguard.ledger.writer import Expectation
    from nbguard.policy import PolicyEngine

#: Header in which clients (the kernel's guard client, the server extension) name
#: the cell that made a request: ``{"kernel_id", "instance", "seq", "msg_id", "cell_id"}``.
CELL_HEADER = "X-NBGuard-Cell"
_CELL_KEYS = {"kernel_id", "instance", "cell_id", "msg_id"}
_CELL_TEXT = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")

#: Seconds after which hub facts are re-read once before a denial stands, so a
#: step-up that just happened counts.
_RECHECK_AFTER = 1.0


class LedgerUnavailable(NBGuardError):
    """The access could not be recorded, so it is refused."""

    default_user_message = (
        "nbguard could not record this access in its audit ledger, so it is refused. "
        "Try again in a moment."
    )


@dataclass(frozen=True, slots=True)
class CellRef:
    """The notebook cell a request came from, as its client reported it."""

    kernel_id: str
    cell_id: str = ""
    msg_id: str = ""
    seq: int | None = None
    #: The kernel process's stream id (see docs/user-zone.md); with ``seq`` it names
    #: the ``cell_execution`` record of the cell.
    instance: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The ``cell`` object of an access record."""
        out: dict[str, Any] = {"kernel_id": self.kernel_id}
        if self.instance:
            out["instance"] = self.instance
        if self.cell_id:
            out["cell_id"] = self.cell_id
        if self.msg_id:
            out["msg_id"] = self.msg_id
        if self.seq is not None:
            out["seq"] = self.seq
        return out


def parse_cell(header: str | None) -> CellRef | None:
    """The cell named by the ``X-NBGuard-Cell`` header; RequestError if malformed."""
    if not header:
        return None
    if len(header) > 1024:
        raise RequestError(f"{CELL_HEADER} is too long", user_message=f"{CELL_HEADER} is too long")
    try:
        value = json.loads(header)
    except ValueError:
        value = None
    if not isinstance(value, Mapping) or not set(value) <= {*_CELL_KEYS, "seq"}:
        message = (
            f"{CELL_HEADER} must be a JSON object with kernel_id, instance, seq, msg_id, cell_id"
        )
        raise RequestError(message, user_message=message)
    texts = {k: value.get(k, "") for k in _CELL_KEYS}
    seq = value.get("seq")
    valid_texts = all(
        isinstance(v, str) and (not v or _CELL_TEXT.fullmatch(v)) for v in texts.values()
    )
    valid_seq = seq is None or (type(seq) is int and 0 <= seq < 2**53)
    if not texts["kernel_id"] or not valid_texts or not valid_seq:
        message = f"{CELL_HEADER}: kernel_id is required; ids are short plain strings"
        raise RequestError(message, user_message=message)
    return CellRef(texts["kernel_id"], texts["cell_id"], texts["msg_id"], seq, texts["instance"])


class Decider:
    """Decides governed requests for callers and records each decision."""

    def __init__(
        self,
        engine: PolicyEngine,
        resolver: ContextResolver,
        ledger: Ledger,
        *,
        step_up_url: str,
        log: logging.Logger | None = None,
    ) -> None:
        self.engine = engine
        self.resolver = resolver
        self.ledger = ledger
        self.step_up_url = step_up_url
        self.log = log or logging.getLogger("nbguard.guard")

    async def decide(
        self,
        who: CallerContext,
        action: str,
        resource: EntityRef,
        *,
        cell: CellRef | None = None,
        expected: Expectation | None = None,
    ) -> tuple[CallerContext, Decision]:
        """Decide and record; returns the (possibly refreshed) context and the decision.

        ``expected``: the ledger Expectation that announced this request's record
        (:meth:`Ledger.expect`), settled by the record. Raises AccessDenied for a
        locked user or device (recorded too), LedgerUnavailable when the record
        cannot be written.
        """
        if who.locks:
            await self._record_lock(who, action, resource, cell, expected)
            lock = who.locks[0]
            words = (
                f"Your access is locked by an administrator ({lock.kind} lock: {lock.reason}). "
                "Ask your hub administrator to lift it."
            )
            raise AccessDenied(
                f"{who.name} {action} {resource}: locked by {lock.id}",
                user_message=words,
                details={"allowed": False, "locked": True, "lock_id": lock.id, "message": words},
            )
        decision = self.engine.decide(who.principal, action, resource, who.context)
        if not decision.allowed and time.monotonic() - who.fetched > _RECHECK_AFTER:
            # A step-up or a new grant may have happened since the cached facts.
            fresh = await self.resolver.resolve(who.caller, max_age=0)
            if not fresh.locks:
                who = fresh
                decision = self.engine.decide(who.principal, action, resource, who.context)
        await self._record(who, decision, cell, expected)
        return who, decision

    def denial(self, decision: Decision) -> AccessDenied:
        """The AccessDenied for a denied decision, with the step-up page where it helps."""
        details = decision.to_dict()
        if any(
            req.kind == "fresh_mfa" for remedy in decision.remedies for req in remedy.requirements
        ):
            details["step_up_url"] = self.step_up_url
        return AccessDenied(decision.explain(), user_message=decision.explain(), details=details)

    async def _record(
        self,
        who: CallerContext,
        decision: Decision,
        cell: CellRef | None,
        expected: Expectation | None,
    ) -> None:
        body: dict[str, Any] = {
            "principal": str(decision.principal),
            "action": decision.action,
            "resource": str(decision.resource),
            "allowed": decision.allowed,
            "policy_ids": list(decision.policy_ids)[:64],
            "correlation_id": decision.correlation_id,
        }
        if decision.errors:
            body["errors"] = [e[:1024] for e in decision.errors[:32]]
        if not decision.allowed:
            body["reason"] = decision.explain()[:1024]
        await self._append(who, body, cell, expected)

    async def _record_lock(
        self,
        who: CallerContext,
        action: str,
        resource: EntityRef,
        cell: CellRef | None,
        expected: Expectation | None,
    ) -> None:
        body: dict[str, Any] = {
            "principal": str(who.principal),
            "action": action,
            "resource": str(resource),
            "allowed": False,
            "policy_ids": [f"lock:{lock.id}" for lock in who.locks][:64],
            "correlation_id": f"lock-{who.locks[0].id}"[:128],
            "reason": f"locked: {who.locks[0].reason}"[:1024],
        }
        await self._append(who, body, cell, expected)

    async def _append(
        self,
        who: CallerContext,
        body: dict[str, Any],
        cell: CellRef | None,
        expected: Expectation | None,
    ) -> None:
        if cell is not None:
            body["cell"] = cell.to_dict()
        try:
            await self.ledger.append_async(
                "access", body, actor=who.name, session=who.session_id or None, expected=expected
            )
        except NBGuardError as error:
            self.log.error("nbguard guard: could not record an access decision: %s", error)
            raise LedgerUnavailable(str(error)) from error
