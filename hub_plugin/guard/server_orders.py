"""Interrupting a user's kernels now, for a lock or a revocation that asks for it.

A lock or a revocation takes effect on the guard's next decision; a cell already
running in the user's server goes on. With ``interrupt_kernels``, the guard
also signs an ``interrupt`` order for each running server of the users
concerned (:meth:`nbguard.entitlements.EntitlementSigner.order`: EdDSA with the
entitlement key, audience ``nbguard-server-order``, naming that one server,
good for 60 seconds) and posts it to the server's own URL, the address the
proxy routes to, which the spawner mixin keeps in the server's state. The
server extension checks it (:mod:`nbguard.server_extension.orders`), interrupts
its busy kernels and asks for its entitlement anew, so a locked user's open
notebooks stop executing at once rather than at the entitlement's renewal.

The guard holds no token of the servers; the signature is the order's only
credential, so a server that is not nbguard's, or not reachable from the guard
(internal SSL, a network policy), is reported and left running: stopping
servers (``stop_servers``) remains the sure way.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from nbguard.errors import NBGuardError
from nbguard.hub_plugin.guard.elevation_records import stop_servers
from nbguard.hub_plugin.guard.handlers.entitlements import server_name

if TYPE_CHECKING:
    from nbguard.hub_plugin.guard.app import GuardService
    from nbguard.hub_plugin.guard.hub_state import RunningServer

#: Where a server takes orders, under its own URL.
ORDER_PATH = "nbguard/api/orders"
#: Seconds to wait for one server's answer.
ORDER_TIMEOUT = 10.0


async def end_what_runs(
    guard: GuardService,
    options: dict[str, Any],
    holds: Callable[[str], Awaitable[bool]],
    why: str,
) -> dict[str, list[Any]]:
    """What a lock or revocation with ``options`` (its checked body) does to running servers
    whose user ``holds``: stop them (``stop_servers``) or interrupt their kernels
    (``interrupt_kernels``); the answer's ``stopped_servers`` and ``interrupted_servers``."""
    stopped: list[str] = []
    interrupted: list[dict[str, Any]] = []
    if options.get("stop_servers"):
        stopped = await stop_servers(guard, holds, why)
    elif options.get("interrupt_kernels"):
        interrupted = await interrupt_kernels(guard, holds, why)
    return {"stopped_servers": stopped, "interrupted_servers": interrupted}


async def interrupt_kernels(
    guard: GuardService, holds: Callable[[str], Awaitable[bool]], why: str
) -> list[dict[str, Any]]:
    """Order every running server whose user ``holds`` to interrupt its busy kernels.

    One entry per server: ``{"server", "interrupted_kernels"}`` when it obeyed,
    ``{"server", "error"}`` when it could not be reached or refused. Failures
    are logged: the lock or revocation they follow is already in force.
    """
    try:
        running = await guard.hub.running_servers()
    except NBGuardError as error:
        guard.log.error("nbguard guard: cannot list servers to interrupt (%s): %s", why, error)
        return []
    chosen = [server for server in running if await holds(server.user)]
    return list(await asyncio.gather(*(send_order(guard, server, why) for server in chosen)))


async def send_order(guard: GuardService, server: RunningServer, why: str) -> dict[str, Any]:
    """Post one signed interrupt order to ``server``; what came of it."""
    name = server_name(server.user, server.name)
    if not server.url:
        return _failed(guard, name, why, "the hub keeps no address for this server")
    token = guard.entitlements.order(user=server.user, server=name, order="interrupt", reason=why)
    request = HTTPRequest(
        server.url.rstrip("/") + "/" + ORDER_PATH,
        method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        body=json.dumps({"order": token}),
        request_timeout=ORDER_TIMEOUT,
        connect_timeout=ORDER_TIMEOUT,
        follow_redirects=False,
    )
    try:
        response = await AsyncHTTPClient().fetch(request)
        answer = json.loads(response.body or b"{}")
    except HTTPClientError as error:
        return _failed(guard, name, why, f"the server answered HTTP {error.code}")
    except (OSError, ValueError) as error:
        return _failed(guard, name, why, f"the server could not be reached ({error})")
    kernels = answer.get("interrupted_kernels") if isinstance(answer, dict) else None
    if not isinstance(kernels, list):
        return _failed(guard, name, why, "the server's answer is not an order's")
    guard.log.info("nbguard guard: %s interrupted %d kernel(s) (%s)", name, len(kernels), why)
    return {"server": name, "interrupted_kernels": len(kernels)}


def _failed(guard: GuardService, name: str, why: str, error: str) -> dict[str, Any]:
    guard.log.error("nbguard guard: could not interrupt %s's kernels (%s): %s", name, why, error)
    return {"server": name, "error": error}


def ended_in_words(answer: dict[str, Any], asked: dict[str, Any]) -> str:
    """What a lock, revocation or terminate did to running servers, for the admin's page.

    ``answer`` is the API's (``stopped_servers``, ``interrupted_servers``); ``asked``
    the options it was given. Empty when nothing was asked of running servers.
    """
    words: list[str] = []
    stopped = [str(name) for name in answer.get("stopped_servers") or ()]
    if stopped:
        words.append(f"Stopped {_counted(len(stopped), 'server')}: {_names(stopped)}.")
    elif asked.get("stop_servers"):
        words.append("No running server to stop.")
    outcomes = list(answer.get("interrupted_servers") or ())
    obeyed = [o for o in outcomes if "error" not in o]
    failed = [o for o in outcomes if "error" in o]
    if obeyed:
        kernels = sum(int(o.get("interrupted_kernels") or 0) for o in obeyed)
        words.append(
            f"Interrupted {_counted(kernels, 'running kernel')} "
            f"on {_counted(len(obeyed), 'server')}."
        )
    if failed:
        reasons = "; ".join(f"{o['server']}: {o['error']}" for o in failed[:3])
        more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
        words.append(f"Could not interrupt {reasons}{more}. Stop the server to be sure.")
    if asked.get("interrupt_kernels") and not asked.get("stop_servers") and not outcomes:
        words.append("No running server to interrupt.")
    return " ".join(words)


def _counted(count: int, thing: str) -> str:
    return f"{count} {thing}" + ("" if count == 1 else "s")


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:5])
    return f"{shown} and {len(names) - 5} more" if len(names) > 5 else shown
