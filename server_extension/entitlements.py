"""``EntitlementCache``: what the guard says this user may do in this server, cached.

The guard service issues a short-lived EdDSA-signed JWT (``GET
api/v1/entitlements``, the server's own token only) answering each Jupyter
action (``jupyter.terminal``, ``jupyter.contents_write``,
``jupyter.kernel_execute``) for this server, and publishes its public key
(``GET api/v1/entitlements/key``). The cache fetches both with the server's
token, verifies the token with the core's
:func:`~nbguard.entitlements.verify_entitlement` (signature by the guard's key,
audience, expiry, and that it names *this* server), keeps it until
``refresh_margin`` seconds before it expires, and then fetches a new one. It
answers ``None`` when it has no valid entitlement, and the authorizer then
fails closed. When the guard refuses (401/403: a lock, a revoked token), the
cached entitlement is dropped at once; when the guard cannot be reached, the
cached one serves until it expires.

From its first use on, the cache also checks itself in the background every
``check_interval`` seconds (fetching anew when due), so that open kernel
websockets, which consult it without waiting on the network
(:meth:`allows_now`), see a lock or a lost permission at the next renewal, even
while nothing else asks.

The token is verified here because the answer crosses the network; the guard
stays the one that decides.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from nbguard.server_extension.guard_client import GuardAnswerError, GuardClient

if TYPE_CHECKING:
    from nbguard.entitlements import Entitlement, ServerOrder

#: Seconds to wait after a failed fetch before asking the guard again.
RETRY_AFTER_FAILURE = 5.0
#: Guard answers that withdraw the entitlement (as opposed to an outage).
REFUSALS = frozenset({401, 403})


def server_name(user: str, server: str) -> str:
    """JupyterHub's full name of a server (``alice``, ``alice/gpu``), as entitlements name it."""
    return f"{user}/{server}" if server else user


class EntitlementCache:
    """The current verified entitlement, fetched from the guard and refreshed before expiry."""

    def __init__(
        self,
        guard: GuardClient,
        *,
        server: str,
        refresh_margin: float = 30.0,
        check_interval: float | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.guard = guard
        self.server = server
        self.refresh_margin = refresh_margin
        self.check_interval = check_interval
        self._keeper: asyncio.Task[None] | None = None
        self.log = log or logging.getLogger(__name__)
        self._entitlement: Entitlement | None = None
        self._key: Any = None
        self._key_fetched = float("-inf")
        self._failed_at: float | None = None
        self._lock = asyncio.Lock()

    def fresh(self, now: float) -> Entitlement | None:
        """The cached entitlement if it need not be refreshed yet."""
        held = self._entitlement
        if held is not None and now < held.expires - self.refresh_margin:
            return held
        return None

    def valid(self, now: float) -> Entitlement | None:
        """The cached entitlement if it has not expired."""
        held = self._entitlement
        return held if held is not None and now < held.expires else None

    async def current(self) -> Entitlement | None:
        """The entitlement to authorize with now, or None (fail closed)."""
        if self._keeper is None and self.check_interval:
            self._keeper = asyncio.ensure_future(self._keep_fresh(self.check_interval))
        now = time.time()
        held = self.fresh(now)
        if held is not None:
            return held
        async with self._lock:
            now = time.time()
            held = self.fresh(now)
            if held is not None:
                return held
            if self._failed_at is not None and now - self._failed_at < RETRY_AFTER_FAILURE:
                return self.valid(now)
            return await self._renew()

    async def renew(self) -> Entitlement | None:
        """Ask the guard now, however fresh the cached entitlement (after a guard's order);
        what :meth:`current` would answer afterwards."""
        async with self._lock:
            return await self._renew()

    async def _renew(self) -> Entitlement | None:
        # The caller holds the lock.
        from nbguard.errors import NBGuardError

        now = time.time()
        try:
            self._entitlement = await self.fetch()
        except (GuardAnswerError, NBGuardError) as error:
            self._failed_at = now
            if isinstance(error, GuardAnswerError) and error.status_code in REFUSALS:
                self._entitlement = None  # the guard said no: nothing to fall back on
            self.log.warning(
                "nbguard | no entitlement from the guard (%s); terminals, writes and "
                "execution are refused until there is one",
                getattr(error, "body", None) or error,
            )
            return self.valid(time.time())
        self._failed_at = None
        return self._entitlement

    def allows_now(self, permission: str) -> bool:
        """Whether the cached entitlement, unexpired, allows ``permission`` (no network)."""
        held = self.valid(time.time())
        return held is not None and held.allows(permission)

    def close(self) -> None:
        """Stop the background refresh."""
        if self._keeper is not None:
            self._keeper.cancel()

    async def _keep_fresh(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.current()
            except Exception:  # the loop must outlive any one failure
                self.log.exception("nbguard | entitlement refresh failed")

    async def fetch(self) -> Entitlement:
        """Fetch and verify a new token (and the key, when unknown or rotated).

        Raises GuardAnswerError (the guard refused or is down) or an
        :class:`~nbguard.errors.NBGuardError` (the token or the key is not good).
        """
        from nbguard.entitlements import EntitlementError, verify_entitlement

        _, answer = await self.guard.call("GET", "api/v1/entitlements")
        token = answer.get("token") if isinstance(answer, dict) else None
        if not isinstance(token, str):
            raise EntitlementError("the guard's answer holds no token", reason="malformed")
        return await self._verified(verify_entitlement, token)

    async def order(self, token: str) -> ServerOrder:
        """The guard's order in ``token``, verified for this server like an entitlement.

        Raises EntitlementError (not the guard's, expired, another server's) or,
        when the guard's key cannot be had, GuardAnswerError or ConfigError.
        """
        from nbguard.entitlements import verify_order

        return await self._verified(verify_order, token)

    async def _verified(self, verify: Any, token: str) -> Any:
        """``verify(token, key, server=...)`` with the guard's key, fetched when unknown or
        when the token names another key (the guard rotated it), at most once in
        ``RETRY_AFTER_FAILURE`` seconds: orders arrive unauthenticated, and tokens
        naming made-up keys must not turn into calls to the guard."""
        from nbguard.entitlements import EntitlementError
        from nbguard.errors import ConfigError

        if self._key is not None:
            try:
                return verify(token, self._key, server=self.server)
            except EntitlementError as error:
                recent = time.monotonic() - self._key_fetched < RETRY_AFTER_FAILURE
                if error.reason != "unknown_key" or recent:
                    raise
        self._key_fetched = time.monotonic()
        _, document = await self.guard.call("GET", "api/v1/entitlements/key")
        pem = document.get("pem") if isinstance(document, dict) else None
        if not isinstance(pem, str):
            raise ConfigError("the guard's entitlement key document holds no PEM")
        self._key = pem
        return verify(token, pem, server=self.server)
