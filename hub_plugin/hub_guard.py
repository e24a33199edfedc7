"""``NBGuard``: nbguard's settings and services inside the JupyterHub process.

One instance per hub, owned by the wrapped authenticator and reached by the
spawner mixin through ``spawner.authenticator.nbguard``. It holds the policy
engine, the ledger, the MFA store, the sealed-secret box, the request-context
builder and the pending logins. Configure it as ``c.NBGuard.<setting>``; the
policy engine and the ledger keep their own sections (``c.PolicyEngine``,
``c.Ledger``).
"""

from __future__ import annotations

import atexit
import logging
import os
import weakref
from typing import Any

from traitlets import Bool, Dict, Integer, List, TraitError, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from nbguard.devices import DeviceAssertionVerifier
from nbguard.encryption import SecretBox
from nbguard.errors import ConfigError, NBGuardError
from nbguard.hub_plugin.mfa.lockout import LockoutPolicy
from nbguard.hub_plugin.mfa.store import MFAStore
from nbguard.hub_plugin.mfa.totp import TOTPSettings
from nbguard.hub_plugin.pending import PendingLogins
from nbguard.hub_plugin.request_context import ContextBuilder
from nbguard.ledger.ledger import open_configured_ledger
from nbguard.network import NetworkZones, TrustedProxies
from nbguard.policy import PolicyEngine

#: Environment variable holding ``NBGuard.secret_keys`` (``;``-separated), like
#: JupyterHub's ``JUPYTERHUB_CRYPT_KEY``.
SECRET_KEYS_ENV = "NBGUARD_SECRET_KEYS"  # noqa: S105 (a variable name, not a secret)


class NBGuard(LoggingConfigurable):
    """nbguard's hub-side settings and the services built from them."""

    mfa_db_url = Unicode(
        "sqlite:///nbguard-hub.sqlite",
        help="""Database URL (SQLAlchemy) for second-factor enrolments, recovery-code
        hashes, failure counters and the devices and networks each user was seen from.

        TOTP secrets are stored sealed with ``NBGuard.secret_keys``; recovery codes
        only as salted scrypt hashes. The default is a SQLite file in the hub's
        working directory, beside ``jupyterhub.sqlite``; PostgreSQL works too.
        """,
    ).tag(config=True)

    secret_keys = List(
        Unicode(),
        help="""Fernet keys that seal TOTP secrets at rest. The first key seals; every
        key opens, so keys rotate by putting a new key first (stored secrets are
        re-sealed under it as users log in) and removing the old one later.

        Defaults to the ``;``-separated keys in the ``NBGUARD_SECRET_KEYS``
        environment variable. Make one with
        ``python -c 'from nbguard.encryption import SecretBox; print(SecretBox.generate_key())'``.
        Required: the hub refuses to start without a key.
        """,
    ).tag(config=True)

    trusted_proxies = List(
        Unicode(),
        help="""Networks (CIDR) of the proxies whose ``X-Forwarded-For`` is believed.

        The client address is the TCP peer, unless the peer is a trusted proxy, in
        which case the header is walked right to left through trusted hops. With
        the default (empty) every request's address is its TCP peer, which behind
        configurable-http-proxy is the proxy itself: add the proxy's address
        (``127.0.0.1/32`` when it runs beside the hub) to see real clients.
        """,
    ).tag(config=True)

    network_zones = Dict(
        help="""Named network zones: ``{"office": ["10.0.0.0/8"], "vpn": [...]}``.

        Policies see the zone of the client address as ``context.network_zone``;
        the first zone that contains the address wins, and an address in no zone is
        in zone ``unknown``. Default: no zones.
        """,
    ).tag(config=True)

    device_assertion_keys = Dict(
        help="""Public keys that sign device assertions: ``{key_id: PEM text or path}``.

        A device-trust agent or MDM gives the browser a short-lived signed JWT
        (EdDSA, ES256 or RS256; ``aud`` = ``NBGuard.device_assertion_audience``,
        ``sub`` = the hub user name, a ``device_id`` claim). A valid one marks the
        device trusted (``context.device_trusted``). Default: none, so no device
        is trusted.
        """,
    ).tag(config=True)

    device_assertion_issuers = List(
        Unicode(),
        help="""Accepted ``iss`` values of device assertions; empty accepts any issuer
        whose key is configured.""",
    ).tag(config=True)

    device_assertion_audience = Unicode(
        "nbguard", help="""The ``aud`` a device assertion must carry. Default ``nbguard``."""
    ).tag(config=True)

    device_assertion_header = Unicode(
        "X-Device-Assertion",
        help="""Request header that carries the device assertion (checked first).""",
    ).tag(config=True)

    device_assertion_cookie = Unicode(
        "nbguard-device",
        help="""Cookie that carries the device assertion when the header is absent.""",
    ).tag(config=True)

    timezone = Unicode(
        "UTC",
        help="""IANA time zone in which policies see ``context.hour`` and
        ``context.weekday`` (for working-hours rules). Default UTC.""",
    ).tag(config=True)

    totp_issuer = Unicode(
        "nbguard",
        help="""Issuer name shown in authenticator apps next to the user's TOTP entry.""",
    ).tag(config=True)

    totp_valid_window = Integer(
        1,
        help="""TOTP steps (30 s each) accepted before and after now, for clock skew.""",
    ).tag(config=True)

    recovery_code_count = Integer(
        10, help="""How many one-time recovery codes a user gets at enrolment."""
    ).tag(config=True)

    lockout_free_attempts = Integer(
        5,
        help="""Wrong second-factor codes allowed before back-off starts. Counted per user
        and per client address; a correct code resets the user's counter.""",
    ).tag(config=True)

    lockout_base_delay = Integer(
        30,
        help="""Seconds locked after the first failure past the free attempts; each
        further failure doubles it, up to ``NBGuard.lockout_max_delay``.""",
    ).tag(config=True)

    lockout_max_delay = Integer(
        3600, help="""Longest lockout, in seconds. Default one hour."""
    ).tag(config=True)

    pending_login_ttl = Integer(
        300,
        help="""Seconds a primary login waits for its second factor. The pending login
        lives only in the hub's memory, bound to the browser by a signed cookie;
        after this (or a hub restart) the user logs in again.""",
    ).tag(config=True)

    pending_login_attempts = Integer(
        5,
        help="""Wrong codes one pending login may try before it is discarded and the
        primary login (password, IdP) must be repeated.""",
    ).tag(config=True)

    trust_idp_mfa = Bool(
        False,
        help="""Accept the identity provider's own MFA as the second factor.

        When on, an OIDC ID token (or userinfo) whose ``amr`` contains one of
        ``NBGuard.idp_mfa_amr``, or whose ``acr`` is one of ``NBGuard.idp_mfa_acr``,
        satisfies the second factor (method ``idp``) and no TOTP is asked. Turn it on
        only for an IdP that enforces MFA itself. Default off.
        """,
    ).tag(config=True)

    idp_mfa_amr = List(
        Unicode(),
        ["mfa", "otp", "hwk", "swk"],
        help="""``amr`` values (RFC 8176) that count as MFA done by the IdP.""",
    ).tag(config=True)

    idp_mfa_acr = List(
        Unicode(),
        help="""``acr`` values that count as MFA done by the IdP (IdP-specific).""",
    ).tag(config=True)

    guard_service_url = Unicode(
        "",
        help="""URL of the guard service as single-user servers reach it. Handed to each
        server (never with a secret); empty until the guard service is configured.""",
    ).tag(config=True)

    guard_db_url = Unicode(
        "sqlite:///nbguard-guard.sqlite",
        help="""Database URL of the guard service (``GuardService.db_url``), from which the
        hub reads active elevation grants and locks when it decides a spawn.

        ``guard_service(c, ...)`` sets both to the same value. The default is the
        guard service's default SQLite file in the hub's working directory.
        """,
    ).tag(config=True)

    @default("secret_keys")
    def _default_secret_keys(self) -> list[str]:
        return [k.strip() for k in os.environ.get(SECRET_KEYS_ENV, "").split(";") if k.strip()]

    @validate("pending_login_ttl", "pending_login_attempts", "recovery_code_count")
    def _positive(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if value < 1:
            raise TraitError(f"NBGuard.{proposal['trait'].name} must be at least 1, not {value}")
        return value

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        try:
            self.secrets = SecretBox(self.secret_keys, setting="NBGuard.secret_keys")
            self.proxies = TrustedProxies(self.trusted_proxies, setting="NBGuard.trusted_proxies")
            self.zones = NetworkZones(self.network_zones, setting="NBGuard.network_zones")
            devices = DeviceAssertionVerifier(
                self.device_assertion_keys,
                audience=self.device_assertion_audience,
                issuers=tuple(self.device_assertion_issuers),
                setting="NBGuard.device_assertion_keys",
            )
        except NBGuardError as error:
            raise ConfigError(str(error)) from error
        self.context = ContextBuilder(
            proxies=self.proxies,
            zones=self.zones,
            devices=devices,
            device_header=self.device_assertion_header,
            device_cookie=self.device_assertion_cookie,
            timezone=self.timezone,
        )
        self.totp = TOTPSettings(issuer=self.totp_issuer, valid_window=self.totp_valid_window)
        self.lockout = LockoutPolicy(
            free_attempts=self.lockout_free_attempts,
            base_delay=self.lockout_base_delay,
            max_delay=self.lockout_max_delay,
        )
        self.pending = PendingLogins(ttl=self.pending_login_ttl)
        self.store = MFAStore(self.mfa_db_url, self.secrets)
        self.engine = PolicyEngine(parent=self)
        self.ledger = open_configured_ledger(self)
        # JupyterHub gives an authenticator no shutdown hook. Its own exit handling
        # stops the servers (recording their stops) before the interpreter exits, so
        # closing then signs a final checkpoint over every record the hub wrote.
        atexit.register(_close_at_exit, weakref.ref(self))
        if not self.proxies.networks:
            self.log.info(
                "NBGuard.trusted_proxies is empty: client addresses are TCP peers "
                "(behind a proxy, configure its address to see real clients)"
            )

    @property
    def elevations(self) -> Any:
        """The guard service's elevation store (grants and locks), opened on first use."""
        store = getattr(self, "_elevations", None)
        if store is None:
            from nbguard.elevation.store import ElevationStore

            store = self._elevations = ElevationStore(self.guard_db_url)
        return store

    def close(self) -> None:
        """Sign the ledger's final checkpoint and release the databases."""
        self.ledger.close()
        self.store.close()
        if getattr(self, "_elevations", None) is not None:
            self._elevations.close()


def _close_at_exit(ref: weakref.ref[NBGuard]) -> None:
    """Close an NBGuard still alive when the hub process exits; never raise."""
    guard = ref()
    if guard is None:
        return
    try:
        guard.close()
    except Exception:  # exiting anyway: say so, do not mask the exit
        logging.getLogger(__name__).exception("nbguard: closing at exit failed")
