"""Orders from the guard: ``POST /nbguard/api/orders`` interrupts this server's kernels.

When an admin locks a user or a device, or a grant is revoked, with
``interrupt_kernels``, the guard service signs an ``interrupt`` order for each
of the user's running servers (an EdDSA JWT, audience ``nbguard-server-order``,
naming the server, good for 60 seconds; see
:meth:`nbguard.entitlements.EntitlementSigner.order`) and posts it to the
server's own URL. The signature is the order's only credential: the guard holds
no token of the server, and the route takes no Jupyter login (a browser
request gains nothing from one). The server:

1. verifies the order with the guard's public key (the one its entitlements
   verify with), for this server, unexpired, and refuses it (403) otherwise;
2. carries out each order once (a replay is a 409);
3. interrupts every kernel that is busy, as the notebook's stop button would,
   so a running cell ends with ``KeyboardInterrupt``;
4. asks the guard for its entitlement anew before answering (a locked user
   then gets none, and open notebooks stop forwarding execution at once).

Anyone may post here; only the guard can sign. The answer names the kernels
interrupted, for the guard's answer to the admin.
"""

from __future__ import annotations

import json
import time
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import allow_unauthenticated

from nbguard.server_extension.guard_client import GuardAnswerError, error_body
from nbguard.server_extension.handlers import GuardProxyHandler, bad_request

#: Bodies larger than this are refused before parsing (an order is under 1 KiB).
MAX_BODY = 8192
#: Orders remembered at most (each while it could still verify); past this, new ones wait.
MAX_REMEMBERED = 1024
#: Seconds past its expiry that an order still verifies (``verify_order``'s clock leeway).
LEEWAY = 30.0


class OrderBook:
    """The ``jti`` of the orders carried out, until each expires: each order runs once."""

    def __init__(self) -> None:
        self._done: dict[str, float] = {}

    def first_time(self, token_id: str, expires: float, now: float | None = None) -> bool:
        """Remember ``token_id`` and say True, or False if it was carried out before.

        Raises ``OverflowError`` when :data:`MAX_REMEMBERED` unexpired orders are held.
        """
        now = time.time() if now is None else now
        self._done = {jti: until for jti, until in self._done.items() if until + LEEWAY > now}
        if token_id in self._done:
            return False
        if len(self._done) >= MAX_REMEMBERED:
            raise OverflowError("too many orders in one minute")
        self._done[token_id] = expires
        return True


async def interrupt_busy_kernels(kernel_manager: Any) -> list[str]:
    """Interrupt every kernel the server knows to be busy; their ids."""
    interrupted = []
    for kernel_id in list(kernel_manager.list_kernel_ids()):
        kernel = kernel_manager.get_kernel(kernel_id)
        if getattr(kernel, "execution_state", None) != "busy":
            continue
        await ensure_async(kernel_manager.interrupt_kernel(kernel_id))
        interrupted.append(kernel_id)
    return interrupted


def order_refused(reason: str) -> GuardAnswerError:
    """403: the order is not the guard's, not for this server, or no longer good."""
    return GuardAnswerError(
        403, error_body(403, "order_refused", f"The order was refused ({reason}).")
    )


class OrderHandler(GuardProxyHandler):
    """``POST /nbguard/api/orders``: carry out a signed order of the guard's."""

    def check_xsrf_cookie(self) -> None:
        """No cookie is read here: the signed order is the only credential."""

    @allow_unauthenticated
    async def post(self) -> None:
        """Verify the order, interrupt the busy kernels, renew the entitlement."""
        from nbguard.entitlements import EntitlementError
        from nbguard.errors import NBGuardError

        token = order_token(self.request.body)
        extension = self.extension
        cache, book = extension.entitlements, extension.orders
        if cache is None or book is None:
            raise RuntimeError("nbguard's order route is served without its extension")
        try:
            order = await cache.order(token)
        except EntitlementError as error:
            self.log.warning("nbguard | refused an order (%s): %s", error.reason, error)
            raise order_refused(error.reason) from None
        except NBGuardError as error:  # the guard's key could not be had
            raise order_refused(f"the guard's key is unavailable: {error}") from None
        try:
            first = book.first_time(order.token_id, order.expires)
        except OverflowError:
            raise order_refused("too many orders at once") from None
        if not first:
            raise GuardAnswerError(409, error_body(409, "conflict", "This order was carried out."))
        interrupted = await interrupt_busy_kernels(self.kernel_manager)
        await cache.renew()
        self.log.warning(
            "nbguard | the guard ordered %s (%s): %d kernel(s) interrupted",
            order.order,
            order.reason,
            len(interrupted),
        )
        self.finish(json.dumps({"order": order.order, "interrupted_kernels": interrupted}))


def order_token(raw: bytes) -> str:
    """The ``order`` of a ``{"order": "<JWT>"}`` body; 400 for anything else."""
    if len(raw) > MAX_BODY:
        raise bad_request(f"The body must be at most {MAX_BODY} bytes.")
    try:
        body = json.loads(raw or b"")
    except ValueError:
        raise bad_request("The body must be JSON.") from None
    if not isinstance(body, dict) or set(body) != {"order"} or not isinstance(body["order"], str):
        raise bad_request('The body must be {"order": "<the guard\'s signed order>"}.')
    return str(body["order"])


#: The route, under the server's base URL.
ROUTE = ("nbguard/api/orders", OrderHandler)
