"""``GuardService``: the trusted, hub-managed service that decides every governed access.

JupyterHub starts it (see :func:`~nbguard.hub_plugin.guard.hub_config.guard_service`)
with ``python -m nbguard.hub_plugin.guard --config jupyterhub_config.py``, so the
hub and the service read one configuration file: ``c.PolicyEngine`` and
``c.Ledger`` are shared, ``c.GuardService`` is the service's own. It holds the
storage credentials, the elevation and catalog database and its half of the
ledger; the user zone reaches it only with hub API tokens.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlparse

from traitlets import Dict, Float, Integer, List, Unicode, default, validate
from traitlets.config import Application, catch_config_error

from nbguard.elevation.changes import UNREAD, Version
from nbguard.errors import ConfigError, NBGuardError
from nbguard.hub_plugin.guard.mlflow.settings import MLflowSettings
from nbguard.policy import EntityRef

#: Where the service listens when JupyterHub does not say (JUPYTERHUB_SERVICE_URL).
DEFAULT_URL = "http://127.0.0.1:10101"


class GuardService(MLflowSettings, Application):  # type: ignore[misc]
    """nbguard's guard service: policy decisions, dataset broker, elevation, revocation."""

    name = "nbguard-guard"
    description = "nbguard's guard service (run by JupyterHub as a managed service)."
    aliases: ClassVar[dict[str, str]] = {
        "config": "GuardService.config_file",
        "log-level": "Application.log_level",
    }

    config_file = Unicode(
        "",
        help="""Configuration file to load (usually the hub's ``jupyterhub_config.py``,
        so that the policy engine and ledger settings are shared).""",
    ).tag(config=True)

    db_url = Unicode(
        "sqlite:///nbguard-guard.sqlite",
        help="""Database URL (SQLAlchemy) for elevation requests, approvals, grants, locks
        and the dataset catalog.

        The default is a SQLite file in the service's working directory (the
        hub's). Use PostgreSQL to run several replicas of the service: every
        state change is a locked transaction, so replicas agree. The hub reads
        active grants from the same database (``NBGuard.guard_db_url``).
        """,
    ).tag(config=True)

    storage_root = Unicode(
        "nbguard-datasets",
        help="""Default backing store for datasets: a local directory or an fsspec URL.

        A catalog entry without its own ``storage`` lives in ``<storage_root>/<name>``.
        Only the service's OS user should be able to read it: users reach data only
        through the broker. The default is a directory beside the service's
        database, created with mode 0700.
        """,
    ).tag(config=True)

    catalog_file = Unicode(
        "",
        help="""A catalog file (YAML, see docs/catalog.md) imported at start: its datasets
        are added or updated, never removed. Empty: none. Admins can also manage the
        catalog with ``nbguard catalog`` and the API.""",
    ).tag(config=True)

    approval_rules = List(
        Dict(),
        help="""Approval rules for elevation requests, first match wins; see
        docs/elevation.md. Each rule has ``match`` (kind, role, action, sensitivity,
        environment), ``approvals`` (how many distinct approvers), ``max_duration_seconds``
        and ``break_glass`` (whether break-glass may grant it). Who may approve is
        decided by the policy (``elevation.approve``).""",
    ).tag(config=True)

    default_approval_rule = Dict(
        help="""The rule for requests no ``approval_rules`` entry matches. Default: one
        approval, at most 8 hours, no break-glass.""",
    ).tag(config=True)

    request_ttl = Integer(
        86400,
        help="""Seconds an elevation request waits for approval before it expires.""",
    ).tag(config=True)

    webhook_url = Unicode(
        "",
        help="""URL that receives a JSON POST for each new request, approval, denial,
        break-glass, revocation and lock. Empty: no notifications. Delivery is
        retried a few times in the background; it never delays the API.""",
    ).tag(config=True)

    hub_state_ttl = Float(
        5.0,
        help="""Seconds a user's hub state (MFA time, device, zone, server leases) is
        cached. A denial re-reads it once, so a step-up counts at once.""",
    ).tag(config=True)

    token_cache_seconds = Integer(
        60,
        help="""Seconds the hub's answer about an API token is cached. Tokens the hub
        revokes stop working after at most this long; nbguard's own locks and
        revocations count on the next request regardless.""",
    ).tag(config=True)

    timezone = Unicode(
        help="""IANA time zone for ``context.hour`` and ``context.weekday``. Default:
        ``NBGuard.timezone`` from the same configuration file, else UTC.""",
    ).tag(config=True)

    service_name = Unicode(
        help="""The service's name at the hub. Default: ``$JUPYTERHUB_SERVICE_NAME``, else
        ``nbguard-guard``. Tokens need ``access:services!service=<name>``.""",
    ).tag(config=True)

    service_url = Unicode(
        help="""URL to listen on. Default: ``$JUPYTERHUB_SERVICE_URL``, else
        http://127.0.0.1:10101.""",
    ).tag(config=True)

    service_prefix = Unicode(
        help="""URL prefix of the service. Default: ``$JUPYTERHUB_SERVICE_PREFIX``, else
        ``/services/nbguard-guard/``.""",
    ).tag(config=True)

    hub_api_url = Unicode(
        help="""The hub's REST API. Default: ``$JUPYTERHUB_API_URL``.""",
    ).tag(config=True)

    hub_base_url = Unicode(
        help="""The hub's base URL (for the step-up page). Default: ``$JUPYTERHUB_BASE_URL``,
        else ``/``.""",
    ).tag(config=True)

    api_token = Unicode(
        help="""The service's hub API token. Default: ``$JUPYTERHUB_API_TOKEN``.""",
    ).tag(config=True)

    max_upload_bytes = Integer(
        10 * 1024**3,
        help="""Largest dataset file, in bytes, one upload may write (default 10 GiB).

        A request whose ``Content-Length`` is larger is refused with 413 before any
        byte is read; a streamed (chunked) body is counted and refused with 413 as
        soon as it passes the limit, and nothing of it is kept.""",
    ).tag(config=True)

    stream_chunk_bytes = Integer(
        4 * 1024**2,
        help="""Bytes the dataset broker reads from storage and sends at a time (default
        4 MiB), and buffers before writing an upload. Larger chunks cost memory per
        concurrent transfer; smaller ones cost throughput.""",
    ).tag(config=True)

    witness_grace_seconds = Float(
        60.0,
        help="""Seconds the cross-check waits for the second witness of an execution (and
        for records missing from a stream) before it raises an alert (default 60).

        An execution the kernel reported and the server did not (or the other
        way round) becomes a ``witness-mismatch`` alert, a gap in a stream's
        sequence numbers a ``kernel-seq-gap`` alert, once this long has passed
        since the record arrived. Shorter finds a silenced kernel sooner, but a
        witness whose shipper is backing off (the service was down) may then
        be alerted on although its records are on their way.""",
    ).tag(config=True)

    witness_check_interval = Float(
        15.0,
        help="""Seconds between two cross-check passes (default 15). Each replica runs
        passes; they take turns, so each alert is raised once. An alert is raised
        between ``witness_grace_seconds`` and that plus this interval after the
        record arrived.""",
    ).tag(config=True)

    entitlement_key_file = Unicode(
        help="""PEM file of the Ed25519 private key that signs entitlements (what a user
        may do in their server: terminals, writing files, running code).

        Default: ``nbguard-entitlement-key.pem`` beside the SQLite database
        (``db_url``); with another database, beside the ledger's signing key
        (``Ledger.signing_key_file``), else in the working directory. A missing
        file is created with mode 0600. Only the service's OS user may read it;
        servers get the public key from ``/api/v1/entitlements/key``. Replicas
        must share one key file (a Kubernetes secret, say): a server rejects an
        entitlement signed by a key it was not given, and fails closed.""",
    ).tag(config=True)

    entitlement_ttl = Integer(
        300,
        help="""Seconds an entitlement is valid (default 300). A server asks again
        shortly before it expires, so a revoked grant or a changed role stops
        counting in its Jupyter permissions within this time at the latest.""",
    ).tag(config=True)

    @default("entitlement_key_file")
    def _default_entitlement_key_file(self) -> str:
        from sqlalchemy.engine import make_url

        name = "nbguard-entitlement-key.pem"
        try:
            url = make_url(self.db_url)
        except Exception:  # the stores report a bad URL properly
            return name
        if url.get_backend_name() == "sqlite" and url.database:
            return str(Path(url.database).resolve().with_name(name))
        ledger_key = self.config.get("Ledger", {}).get("signing_key_file")
        if ledger_key:
            return str(Path(str(ledger_key)).resolve().with_name(name))
        return name

    @validate("entitlement_ttl")
    def _entitlement_ttl(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if not 10 <= value <= 86400:
            raise ConfigError(f"GuardService.entitlement_ttl must be 10 to 86400, not {value}")
        return value

    @validate("witness_grace_seconds", "witness_check_interval")
    def _witness_seconds(self, proposal: Any) -> float:
        value = float(proposal["value"])
        name = proposal["trait"].name
        low = 0.0 if name == "witness_grace_seconds" else 0.1
        if not value >= low:
            raise ConfigError(f"GuardService.{name} must be at least {low:g}, not {value}")
        return value

    @validate("max_upload_bytes", "stream_chunk_bytes")
    def _positive_bytes(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if value < 1:
            name = proposal["trait"].name
            raise ConfigError(f"GuardService.{name} must be 1 or more, not {value}")
        return value

    @default("log_level")
    def _default_log_level(self) -> int:
        return logging.INFO

    @default("timezone")
    def _default_timezone(self) -> str:
        configured = self.config.get("NBGuard", {}).get("timezone")
        return str(configured) if configured else "UTC"

    @default("service_name")
    def _default_service_name(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_NAME", "nbguard-guard")

    @default("service_url")
    def _default_service_url(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_URL", DEFAULT_URL)

    @default("service_prefix")
    def _default_service_prefix(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{self.service_name}/")

    @default("hub_api_url")
    def _default_hub_api_url(self) -> str:
        return os.environ.get("JUPYTERHUB_API_URL", "")

    @default("hub_base_url")
    def _default_hub_base_url(self) -> str:
        return os.environ.get("JUPYTERHUB_BASE_URL", "/")

    @default("api_token")
    def _default_api_token(self) -> str:
        return os.environ.get("JUPYTERHUB_API_TOKEN", "")

    @validate("service_prefix", "hub_base_url")
    def _slashes(self, proposal: Any) -> str:
        value = str(proposal["value"])
        return "/" + value.strip("/") + "/" if value.strip("/") else "/"

    @validate("hub_state_ttl")
    def _non_negative(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if value < 0:
            raise ConfigError(f"GuardService.hub_state_ttl must be 0 or more, not {value}")
        return value

    @catch_config_error  # type: ignore[misc]
    def initialize(self, argv: list[str] | None = None) -> None:
        """Read the command line and configuration file, then build the service."""
        self.parse_command_line(argv)
        if self.config_file:
            path = Path(self.config_file)
            self.load_config_file(path.name, path=str(path.parent.resolve()))
            # The command line wins over the file.
            self.parse_command_line(argv)
        self.init_components()

    def init_components(self) -> None:
        """Open the stores, the policy engine and the ledger; check the hub settings."""
        from nbguard.catalog.storage import DatasetStorage
        from nbguard.catalog.store import CatalogStore
        from nbguard.elevation.changes import ChangeWatch, StandingCache
        from nbguard.elevation.rules import ApprovalRules
        from nbguard.elevation.store import ElevationStore
        from nbguard.executions.store import ExecutionStore
        from nbguard.hub_plugin.guard.contexts import ContextResolver
        from nbguard.hub_plugin.guard.decisions import Decider
        from nbguard.hub_plugin.guard.hub_state import HubClient
        from nbguard.hub_plugin.guard.request_entities import RequestEntities
        from nbguard.ledger.ledger import open_configured_ledger
        from nbguard.policy import PolicyEngine

        if not self.hub_api_url or not self.api_token:
            raise ConfigError(
                "GuardService needs the hub's API URL and a token "
                "($JUPYTERHUB_API_URL, $JUPYTERHUB_API_TOKEN): run it as a JupyterHub "
                "service (nbguard.hub_plugin.guard.hub_config.guard_service)."
            )
        self.engine = PolicyEngine(parent=self)
        self.ledger = open_configured_ledger(self)
        self._check_ledger_apart()
        self.rules = ApprovalRules(self.approval_rules, default=self.default_approval_rule or None)
        self.elevations = ElevationStore(self.db_url, request_ttl_seconds=self.request_ttl)
        self.catalog = CatalogStore(self.db_url)
        # Lets every request skip re-reading grants, locks and the catalog generation
        # when nothing was committed to the database since (SQLite; exact).
        self.db_changes = ChangeWatch(self.elevations.url)
        self.executions = ExecutionStore(self.db_url)
        self.storage = DatasetStorage(self._storage_root())
        if self.catalog_file:
            from nbguard.catalog.files import load_catalog_file

            count = self.catalog.upsert(load_catalog_file(Path(self.catalog_file)))
            self.log.info("nbguard guard: imported %d datasets from %s", count, self.catalog_file)
        self._catalog_generation = -1
        self._catalog_version: int | None = None
        self.sync_catalog()
        self.hub = HubClient(self.hub_api_url, self.api_token, ttl=self.hub_state_ttl, log=self.log)
        self.resolver = ContextResolver(
            self.hub,
            self.engine,
            StandingCache(self.elevations, self.db_changes),
            timezone=self.timezone,
        )
        self.request_entities = RequestEntities(self.engine)
        self.decider = Decider(
            self.engine, self.resolver, self.ledger, step_up_url=self.step_up_url, log=self.log
        )
        from nbguard.hub_plugin.guard.notify import Notifier
        from nbguard.hub_plugin.guard.witness_check import WitnessChecker

        self.notifier = Notifier(self.webhook_url, log=self.log)
        self.witness_checker = WitnessChecker(self)
        self.mlflow = self.model_gateway()
        from nbguard.entitlements import EntitlementSigner, load_or_create_key

        self.entitlements = EntitlementSigner(
            load_or_create_key(self.entitlement_key_file),
            issuer=self.service_name,
            ttl=self.entitlement_ttl,
        )
        # Replicas must agree on this key id; the log shows which key each one holds.
        self.log.info(
            "nbguard guard: entitlements signed with key %s (%s)",
            self.entitlements.key_id,
            self.entitlement_key_file,
        )

    def _check_ledger_apart(self) -> None:
        """ConfigError if the ledger is the service's own SQLite file.

        Execution records are written to the ledger inside the transaction that
        stores them (so that a record is in both or in neither); on one SQLite
        file that transaction would hold the lock the ledger's writer waits for.
        """
        from sqlalchemy.engine import make_url

        own, ledger = make_url(self.db_url), make_url(self.ledger.url)
        if (
            own.get_backend_name() == ledger.get_backend_name() == "sqlite"
            and own.database
            and ledger.database
            and Path(own.database).resolve() == Path(ledger.database).resolve()
        ):
            self.ledger.close()
            raise ConfigError(
                "GuardService.db_url and Ledger.url name the same SQLite file; "
                "give the ledger a file of its own."
            )

    def _storage_root(self) -> str:
        root = self.storage_root
        if "://" in root:
            return root
        path = Path(root).resolve()
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return str(path)

    # -- shared helpers for handlers -------------------------------------------------------

    @property
    def step_up_url(self) -> str:
        """The hub's step-up page, where a denial that wants fresh MFA sends the user."""
        return f"{self.hub_base_url}hub/nbguard/mfa/step-up"

    def standing_roles(self, user: str) -> list[str]:
        """The roles the policy entities give ``user`` (without elevation)."""
        return self.engine.entities.roles_of(EntityRef.of("User", user))

    def sync_catalog(self, version: Version = UNREAD) -> None:
        """Load catalog changes (from any replica) into the policy entities.

        ``version``: the database's change version (``db_changes.version()``) if
        the caller read it already for this request, after anything it committed.
        """
        # Read before the generation, so that a change committed in between is
        # seen at the next call rather than hidden by a newer version.
        if version is UNREAD:
            version = self.db_changes.version()
        if version is not None and version == self._catalog_version:
            return
        generation = self.catalog.generation()
        if generation == self._catalog_generation:
            self._catalog_version = version
            return
        datasets = self.catalog.list()
        names = {d.name for d in datasets}
        stale = [
            ref
            for ref in self.engine.entities.refs("Dataset")
            if ref.id not in names and self._catalog_generation >= 0
        ]
        if stale:
            self.engine.remove_entities(stale)
        self.engine.upsert_entities([d.to_entity() for d in datasets])
        self._catalog_generation = generation
        self._catalog_version = version

    # -- running ------------------------------------------------------------------------------

    def listen(self) -> Any:
        """Start listening on ``service_url``; return the HTTP server."""
        from nbguard.hub_plugin.guard.web import make_web_app

        url = urlparse(self.service_url)
        self.web_app = make_web_app(self)
        self.http_server = self.web_app.listen(
            url.port or 80, url.hostname or "127.0.0.1", xheaders=False
        )
        self.log.info("nbguard guard: listening on %s%s", self.service_url, self.service_prefix)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self.log.warning("nbguard guard: no event loop yet; the witness cross-check waits")
        else:
            self.witness_checker.start()
            # The review index catches up with the ledger now rather than on the
            # first review page (a first pass over a million records takes ~30 s).
            self._review_warmup = asyncio.get_running_loop().create_task(self._warm_review())
        return self.http_server

    async def _warm_review(self) -> None:
        from nbguard.hub_plugin.guard.review import reviewer_of

        try:
            await reviewer_of(self, self.web_app.settings).refresh()
        except NBGuardError as error:  # the first review page retries and says so
            self.log.warning("nbguard guard: session index not brought up to date: %s", error)

    def close(self) -> None:
        """Stop listening, sign the ledger's final checkpoint, release the databases."""
        server = getattr(self, "http_server", None)
        if server is not None:
            server.stop()
        checker = getattr(self, "witness_checker", None)
        if checker is not None:
            checker.stop()
        for part in ("ledger", "elevations", "catalog", "executions", "db_changes"):
            component = getattr(self, part, None)
            if component is not None:
                component.close()

    async def aclose(self) -> None:
        """:meth:`close`, with the connections to the model registry closed once no new
        request can arrive (so none opens them again)."""
        server = getattr(self, "http_server", None)
        if server is not None:
            server.stop()
        gateway = getattr(self, "mlflow", None)
        if gateway is not None:
            await gateway.upstream.aclose()
        self.close()

    async def run(self) -> None:
        """Serve (and cross-check the witnesses) until SIGTERM or SIGINT."""
        self.listen()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await self.aclose()

    def start(self) -> None:
        """Run the service (the process's main)."""
        asyncio.run(self.run())


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m nbguard.hub_plugin.guard``."""
    app = GuardService.instance()
    app.initialize(argv)
    app.start()
