"""``NBGuardExtension``: nbguard's jupyter-server extension (user zone).

Enabled in every Jupyter server of the environment by
``etc/jupyter/jupyter_server_config.d/nbguard.json``. In a server spawned by an
nbguard hub (``NBGUARD_GUARD_URL`` and ``JUPYTERHUB_API_TOKEN`` set) it:

- sets :class:`~nbguard.server_extension.authorizer.NBGuardAuthorizer` as the
  server's ``Authorizer`` (terminals, contents writes and kernel execution as the
  guard's entitlement allows; ``POST /api/events`` never);
- sets :class:`~nbguard.server_extension.witness.WitnessConnection` as the kernel
  websocket connection, so every ``execute_request`` is witnessed and shipped to
  the guard from a durable spool;
- serves the JupyterLab panel's REST routes under ``/nbguard/api/``.

Anywhere else it stays idle: one warning, no routes, Jupyter's own behaviour.
Imports of its parts are deferred to the moment they are needed, so a server
that starts without nbguard pays nothing for them.
"""

from __future__ import annotations

import os
import re
import secrets
from typing import TYPE_CHECKING, Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Float, Integer, TraitError, Unicode, default, validate
from traitlets.config import Config

if TYPE_CHECKING:
    from nbguard.server_extension.entitlements import EntitlementCache
    from nbguard.server_extension.guard_client import GuardClient
    from nbguard.server_extension.orders import OrderBook
    from nbguard.server_extension.shipper import WitnessShipper

#: What a spool file name may carry of the server's name.
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def guard_base_url(value: str) -> str:
    """``value`` ending in ``/`` (empty stays empty); TraitError unless it is http(s)."""
    if value and not re.match(r"^https?://[^/]", value):
        raise TraitError(f"NBGuardExtension.guard_url must be an http(s) URL, not {value!r}")
    return value if not value or value.endswith("/") else value + "/"


class NBGuardExtension(ExtensionApp):
    """Mediates the lab panel's calls, witnesses executions, authorizes from entitlements."""

    name = "nbguard"
    description = "nbguard: zero-trust mediation and execution witness for this server"
    load_other_extensions = True

    guard_url = Unicode(
        help="""The guard service's URL, ending in ``/``.

        Default: ``$NBGUARD_GUARD_URL``, which the nbguard spawner sets
        (``.../services/nbguard-guard/``). Empty (the default outside an nbguard
        hub) leaves the extension idle: no authorizer, no witness, no routes.
        """,
    ).tag(config=True)

    api_token = Unicode(
        help="""The token the server calls the guard service with.

        Default: ``$JUPYTERHUB_API_TOKEN``, the server's own hub token (the guard
        recognises the server by it). Empty leaves the extension idle.
        """,
    ).tag(config=True)

    request_timeout = Float(
        10.0,
        help="""Seconds to wait for the guard service on each call (connect and answer).

        A call that takes longer is answered 503 (panel routes), retried later
        (witness records) or treated as no entitlement (the authorizer fails
        closed). Default 10 seconds.
        """,
    ).tag(config=True)

    witness_spool_file = Unicode(
        help="""The SQLite file witness records wait in until the guard has them.

        Default: ``nbguard-witness-<server name>.sqlite`` in the server's runtime
        directory (one file per named server, so two servers of one user never
        ship each other's records). Records left by an earlier run of the same
        server are shipped first, in order.
        """,
    ).tag(config=True)

    witness_batch_size = Integer(
        200,
        help="""Most records shipped in one ``POST api/v1/executions`` (1 to 500).

        The guard refuses batches over 500 records or 1 MiB; a witness record is
        a few hundred bytes. Default 200.
        """,
    ).tag(config=True)

    witness_retry_min = Float(
        0.5,
        help="""Seconds before the first retry after a failed shipment; doubled after each
        further failure up to ``NBGuardExtension.witness_retry_max``. Default 0.5.""",
    ).tag(config=True)

    witness_retry_max = Float(
        60.0,
        help="""Longest wait, in seconds, between retries while the guard cannot take
        witness records. Default 60.""",
    ).tag(config=True)

    entitlement_refresh_margin = Float(
        30.0,
        help="""Seconds before an entitlement token expires when it is fetched anew.

        The authorizer uses a cached entitlement until this long before its
        ``exp``; after that it asks the guard again, and denies terminals, writes
        and execution if it cannot get a valid one. Default 30 seconds.
        """,
    ).tag(config=True)

    entitlement_check_interval = Float(
        15.0,
        help="""Seconds between background checks of the entitlement while the server runs.

        Open kernel websockets stop forwarding execution requests (and close) as
        soon as the cached entitlement no longer allows execution, without waiting
        on the network. Each check asks the guard anew once the entitlement is
        within ``entitlement_refresh_margin`` of its expiry, so a lock or a lost
        permission reaches open notebooks at the next renewal: within the guard's
        ``GuardService.entitlement_ttl`` (default 300 s) plus this interval.
        Default 15 seconds.
        """,
    ).tag(config=True)

    #: Random per server process: the server witness's stream ``instance``.
    instance = Unicode()

    @default("instance")
    def _default_instance(self) -> str:
        return f"s-{secrets.token_hex(8)}"

    @default("guard_url")
    def _default_guard_url(self) -> str:
        return guard_base_url(os.environ.get("NBGUARD_GUARD_URL", ""))

    @default("api_token")
    def _default_api_token(self) -> str:
        return os.environ.get("JUPYTERHUB_API_TOKEN", "")

    @default("witness_spool_file")
    def _default_witness_spool_file(self) -> str:
        server = _UNSAFE.sub("_", os.environ.get("JUPYTERHUB_SERVER_NAME", "")) or "default"
        runtime = self.serverapp.runtime_dir if self.serverapp else "."
        return os.path.join(runtime, f"nbguard-witness-{server}.sqlite")

    @validate("guard_url")
    def _check_guard_url(self, proposal: Any) -> str:
        return guard_base_url(str(proposal["value"]))

    @validate("witness_batch_size")
    def _check_batch_size(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if not 1 <= value <= 500:
            raise TraitError(f"NBGuardExtension.witness_batch_size must be 1 to 500, not {value}")
        return value

    @validate("witness_retry_min", "witness_retry_max", "request_timeout")
    def _check_positive(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if value <= 0:
            raise TraitError(f"NBGuardExtension.{proposal['trait'].name} must be positive")
        return value

    guard: GuardClient | None = None
    shipper: WitnessShipper | None = None
    entitlements: EntitlementCache | None = None
    orders: OrderBook | None = None

    @property
    def server_log(self) -> Any:
        """The server's logger: nbguard's messages go where the server's go."""
        return self.serverapp.log if self.serverapp is not None else self.log

    @property
    def active(self) -> bool:
        """True in a server spawned by an nbguard hub (guard URL and token known)."""
        return bool(self.guard_url and self.api_token)

    def _link_jupyter_server_extension(self, serverapp: Any) -> None:
        """Link, then put nbguard's authorizer and witness in the server's config.

        Linking comes before the server creates its authorizer and web
        application, so both classes take effect for this server.
        """
        super()._link_jupyter_server_extension(serverapp)
        if not self.active:
            missing = [
                name
                for name, value in (
                    ("NBGUARD_GUARD_URL", self.guard_url),
                    ("JUPYTERHUB_API_TOKEN", self.api_token),
                )
                if not value
            ]
            self.server_log.warning(
                "nbguard | idle: %s not set (not a server spawned by an nbguard hub); "
                "nothing here is governed or witnessed",
                " and ".join(missing),
            )
            return
        from nbguard.server_extension.authorizer import NBGuardAuthorizer

        classes: dict[str, Any] = {"authorizer_class": NBGuardAuthorizer}
        if serverapp.config.GatewayClient.get("url") or os.environ.get("JUPYTER_GATEWAY_URL"):
            # Remote kernels use the gateway's own connection class: keep it working.
            self.server_log.error(
                "nbguard | kernels run through a kernel gateway: the server's execute "
                "witness is not installed, only the kernel hooks record executions"
            )
        else:
            from nbguard.server_extension.witness import WitnessConnection

            classes["kernel_websocket_connection_class"] = WitnessConnection
        serverapp.update_config(Config({"ServerApp": classes}))

    def initialize_settings(self) -> None:
        """Create the guard client, the entitlement cache and the witness shipper."""
        if not self.active:
            return
        from nbguard.server_extension.entitlements import EntitlementCache, server_name
        from nbguard.server_extension.guard_client import GuardClient
        from nbguard.server_extension.orders import OrderBook
        from nbguard.server_extension.shipper import WitnessShipper
        from nbguard.server_extension.spool import WitnessSpool

        self.guard = GuardClient(self.guard_url, self.api_token, timeout=self.request_timeout)
        self.entitlements = EntitlementCache(
            self.guard,
            server=server_name(
                os.environ.get("JUPYTERHUB_USER", ""),
                os.environ.get("JUPYTERHUB_SERVER_NAME", ""),
            ),
            refresh_margin=self.entitlement_refresh_margin,
            check_interval=self.entitlement_check_interval,
            log=self.server_log,
        )
        self.orders = OrderBook()
        self.shipper = WitnessShipper(
            WitnessSpool(self.witness_spool_file),
            self.guard,
            instance=self.instance,
            batch_size=self.witness_batch_size,
            retry_min=self.witness_retry_min,
            retry_max=self.witness_retry_max,
            log=self.server_log,
        )
        self.server_log.info(
            "nbguard | guard %s; witness instance %s, spool %s",
            self.guard_url,
            self.instance,
            self.witness_spool_file,
        )

    def initialize_handlers(self) -> None:
        """The panel's routes, only when active (no route that would pretend)."""
        if not self.active:
            return
        from nbguard.server_extension.handlers import ROUTES
        from nbguard.server_extension.orders import ROUTE

        self.handlers.extend((f"/{path}", handler) for path, handler in [*ROUTES, ROUTE])

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        """Start shipping witness records (those left by an earlier run first)."""
        if self.shipper is not None:
            self.shipper.start()

    async def stop_extension(self) -> None:
        """Try once more to ship what is spooled, then close the spool."""
        if self.entitlements is not None:
            self.entitlements.close()
        if self.shipper is not None:
            await self.shipper.stop()
