"""What nbguard observes about a hub request: client address, zone, device, time.

The observation is made from the raw TCP peer, never from Tornado's
``remote_ip``: JupyterHub runs Tornado with ``xheaders=True``, which believes
``X-Forwarded-For`` from anyone. Only hops in ``NBGuard.trusted_proxies`` are
believed here.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nbguard.devices import DeviceAssertionVerifier
from nbguard.errors import ConfigError, DeviceAssertionError
from nbguard.network import ClientAddress, NetworkZones, TrustedProxies
from nbguard.policy import RequestContext
from nbguard.policy.vocabulary import MFA_NEVER

#: Longest User-Agent kept; longer ones are cut (they are attacker-controlled).
MAX_USER_AGENT = 512


@dataclass(frozen=True, slots=True)
class Observation:
    """One request as nbguard sees it, before any second factor."""

    client: ClientAddress
    zone: str
    device_trusted: bool
    device_id: str
    device_problem: str
    user_agent: str
    hour: int
    weekday: int

    @property
    def client_ip(self) -> str:
        """The believed client address as text (``unknown`` if there is none)."""
        return str(self.client)

    @property
    def network_fingerprint(self) -> str:
        """The client's network: its /24 (IPv4) or /48 (IPv6), or ``unknown``."""
        address = self.client.address
        if address is None:
            return "unknown"
        prefix = 24 if address.version == 4 else 48
        return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))

    @property
    def device_fingerprint(self) -> str:
        """A verified device id, else a digest of the browser's User-Agent."""
        if self.device_trusted:
            return f"device:{self.device_id}"
        digest = hashlib.sha256(self.user_agent.encode("utf-8", "replace")).hexdigest()[:32]
        return f"ua:{digest}"

    def context(
        self, *, mfa_method: str = "none", mfa_age: int = MFA_NEVER, risk: str = "low"
    ) -> RequestContext:
        """The policy context for this request with the given second-factor state."""
        return RequestContext(
            network_zone=self.zone,
            device_trusted=self.device_trusted,
            device_id=self.device_id,
            mfa_method=mfa_method,
            mfa_age_seconds=max(0, min(int(mfa_age), MFA_NEVER)),
            hour=self.hour,
            weekday=self.weekday,
            risk=risk,
        )


def risk_level(*, new_device: bool, new_network: bool) -> str:
    """``high`` for a new device on a new network, ``medium`` for one of them, else ``low``."""
    if new_device and new_network:
        return "high"
    if new_device or new_network:
        return "medium"
    return "low"


class ContextBuilder:
    """Turns a Tornado request into an :class:`Observation`."""

    def __init__(
        self,
        *,
        proxies: TrustedProxies,
        zones: NetworkZones,
        devices: DeviceAssertionVerifier,
        device_header: str,
        device_cookie: str,
        timezone: str,
    ) -> None:
        self.proxies = proxies
        self.zones = zones
        self.devices = devices
        self.device_header = device_header
        self.device_cookie = device_cookie
        try:
            self.tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ConfigError(f"NBGuard.timezone: unknown time zone {timezone!r}") from error

    def observe(self, request: Any, username: str, *, now: datetime | None = None) -> Observation:
        """Observe ``request`` (a ``tornado.httputil.HTTPServerRequest``) made for ``username``."""
        client = self.proxies.client_address(
            tcp_peer(request), request.headers.get_list("X-Forwarded-For")
        )
        trusted, device_id, problem = self._device(request, username)
        moment = (now or datetime.now(self.tz)).astimezone(self.tz)
        return Observation(
            client=client,
            zone=self.zones.zone_of(client.address),
            device_trusted=trusted,
            device_id=device_id,
            device_problem=problem,
            user_agent=request.headers.get("User-Agent", "")[:MAX_USER_AGENT],
            hour=moment.hour,
            weekday=moment.weekday(),
        )

    def _device(self, request: Any, username: str) -> tuple[bool, str, str]:
        token = request.headers.get(self.device_header, "")
        if not token:
            morsel = request.cookies.get(self.device_cookie)
            token = morsel.value if morsel is not None else ""
        if not token:
            return False, "", ""
        try:
            assertion = self.devices.verify(token, username)
        except DeviceAssertionError as error:
            return False, "", error.reason
        return True, assertion.device_id, ""


def tcp_peer(request: Any) -> str:
    """The address of the TCP peer of a Tornado request, ignoring forwarding headers."""
    context = getattr(getattr(request, "connection", None), "context", None)
    family = getattr(context, "address_family", None)
    address = getattr(context, "address", None)
    if family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple) and address:
        return str(address[0])
    return ""
