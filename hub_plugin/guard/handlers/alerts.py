"""``GET /api/v1/alerts``: the witness alerts the cross-check raised, newest first. Admins.

The same alerts are in the ledger as ``alert`` records; this is the quick view
the admin sessions page shows too.
"""

from __future__ import annotations

from nbguard.hub_plugin.guard.handlers.base import APIHandler, GuardError
from nbguard.hub_plugin.guard.handlers.executions import in_execution_store

#: Alerts per answer unless ``limit`` says otherwise, and the most it may say.
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000


class AlertsHandler(APIHandler):
    """``GET /api/v1/alerts?limit=&user=``: recent witness alerts (``guard.admin``)."""

    async def get(self) -> None:
        """Alerts newest first, of one user if ``user`` is given."""
        await self.require_admin(await self.caller_context())
        text = self.get_query_argument("limit", str(DEFAULT_LIMIT))
        if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_LIMIT):
            raise GuardError(
                400, "bad_request", f"limit must be a whole number from 1 to {MAX_LIMIT}."
            )
        user = self.get_query_argument("user", None) or None
        alerts = await in_execution_store(
            self.guard.executions.recent_alerts, limit=int(text), user=user
        )
        self.write_json({"alerts": [alert.to_dict() for alert in alerts]})
