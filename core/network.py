"""Where a request comes from: the client address behind trusted proxies, and its zone.

Forwarding headers are believed only as far as they were written by hops the
admin trusts. ``X-Forwarded-For`` is read from the right: each proxy appends the
address it received the request from, so the rightmost entry was written by the
hop nearest to us. Walking left, every address is accepted while the hop that
wrote it is a trusted proxy; the first address written by a trusted hop but not
itself a trusted proxy is the client. An untrusted peer's headers are ignored
entirely, so a user cannot claim to be on the corporate network by sending the
header themselves.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from nbguard.errors import ConfigError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The zone of an address no configured zone contains.
UNKNOWN_ZONE = "unknown"
#: At most this many forwarded entries are read; a longer header is suspicious.
MAX_FORWARDED_HOPS = 20


def parse_networks(values: Iterable[str], *, setting: str) -> tuple[Network, ...]:
    """Parse CIDR strings (``10.0.0.0/8``, ``::1``); raise ConfigError naming ``setting``."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError as error:
            raise ConfigError(f"{setting}: {value!r} is not an address or CIDR network") from error
    return tuple(networks)


def _address(text: str) -> Address | None:
    """An address from a header entry or peer string, or None if it is not one."""
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "10.0.0.1:443"
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True, slots=True)
class ClientAddress:
    """The client address nbguard believes, and whether forwarding headers were used."""

    address: Address | None
    forwarded: bool

    def __str__(self) -> str:
        return str(self.address) if self.address is not None else "unknown"


class TrustedProxies:
    """Decides the client address from the TCP peer and ``X-Forwarded-For``."""

    def __init__(self, networks: Sequence[str] = (), *, setting: str = "trusted_proxies") -> None:
        self.networks = parse_networks(networks, setting=setting)

    def trusts(self, address: Address) -> bool:
        """True when ``address`` is one of the configured proxies."""
        return any(address in network for network in self.networks)

    def client_address(self, peer: str, forwarded_for: Sequence[str] = ()) -> ClientAddress:
        """The client address for a request from ``peer`` carrying these header values.

        ``forwarded_for`` holds every ``X-Forwarded-For`` header value as received
        (a header may be repeated; each value may list several addresses). A
        malformed entry stops the walk: the hop that wrote it is the client.
        """
        current = _address(peer)
        if current is None:
            return ClientAddress(None, False)
        entries = [item for value in forwarded_for for item in value.split(",") if item.strip()]
        forwarded = False
        for entry in reversed(entries[-MAX_FORWARDED_HOPS:]):
            if not self.trusts(current):
                break
            previous = _address(entry)
            if previous is None:
                break
            current, forwarded = previous, True
        return ClientAddress(current, forwarded)


class NetworkZones:
    """Named zones, each a list of networks; the first zone containing an address wins."""

    def __init__(
        self, zones: Mapping[str, Sequence[str]], *, setting: str = "network_zones"
    ) -> None:
        parsed: list[tuple[str, tuple[Network, ...]]] = []
        for name, networks in zones.items():
            if not isinstance(name, str) or not name or name == UNKNOWN_ZONE:
                raise ConfigError(f"{setting}: {name!r} cannot name a zone")
            if isinstance(networks, str):
                raise ConfigError(f"{setting}[{name!r}] must be a list of CIDR networks")
            parsed.append((name, parse_networks(networks, setting=f"{setting}[{name!r}]")))
        self.zones = tuple(parsed)

    @property
    def names(self) -> tuple[str, ...]:
        """Zone names in the order they are matched."""
        return tuple(name for name, _ in self.zones)

    def zone_of(self, address: Address | None) -> str:
        """The first zone containing ``address``; ``unknown`` if none does or it is unknown."""
        if address is None:
            return UNKNOWN_ZONE
        for name, networks in self.zones:
            if any(address in network for network in networks):
                return name
        return UNKNOWN_ZONE
