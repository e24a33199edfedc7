"""Client address and zones: forwarding headers count only when a trusted proxy wrote them."""

from __future__ import annotations

import ipaddress

import pytest

from nbguard.errors import ConfigError
from nbguard.network import UNKNOWN_ZONE, NetworkZones, TrustedProxies

PROXIES = TrustedProxies(["127.0.0.1", "10.0.0.0/24", "::1"])
ZONES = NetworkZones({"corporate": ["192.168.10.0/24", "2001:db8::/32"], "vpn": ["172.16.0.0/12"]})


@pytest.mark.parametrize(
    ("peer", "headers", "client", "forwarded"),
    [
        pytest.param("127.0.0.1", ["192.168.10.7"], "192.168.10.7", True, id="one-trusted-hop"),
        pytest.param(
            "127.0.0.1", ["203.0.113.9, 10.0.0.5"], "203.0.113.9", True, id="two-trusted-hops"
        ),
        pytest.param(
            "127.0.0.1", ["203.0.113.9", "10.0.0.5"], "203.0.113.9", True, id="repeated-header"
        ),
        pytest.param(
            "203.0.113.9",
            ["192.168.10.7"],
            "203.0.113.9",
            False,
            id="untrusted-peer-header-ignored",
        ),
        pytest.param(
            "127.0.0.1",
            ["192.168.10.7, 203.0.113.9"],
            "203.0.113.9",
            True,
            id="spoofed-left-entry-ignored",
        ),
        pytest.param("127.0.0.1", ["not-an-ip"], "127.0.0.1", False, id="malformed-entry-stops"),
        pytest.param("127.0.0.1", [], "127.0.0.1", False, id="no-header"),
        pytest.param(
            "::ffff:127.0.0.1", ["192.168.10.7"], "192.168.10.7", True, id="ipv4-mapped-peer"
        ),
        pytest.param("::1", ["[2001:db8::5]:4431"], "2001:db8::5", True, id="ipv6-with-port"),
        pytest.param("127.0.0.1", ["192.168.10.7:5555"], "192.168.10.7", True, id="ipv4-with-port"),
        pytest.param("garbage", ["192.168.10.7"], "unknown", False, id="bad-peer"),
    ],
)
def test_client_address(peer: str, headers: list[str], client: str, forwarded: bool) -> None:
    """The client address walks X-Forwarded-For from the right, only through trusted proxies."""
    result = PROXIES.client_address(peer, headers)
    assert (str(result), result.forwarded) == (client, forwarded)


def test_overlong_header_is_cut() -> None:
    """A header with thousands of entries is read only to its last MAX_FORWARDED_HOPS."""
    headers = [", ".join(["10.0.0.9"] * 5000 + ["10.0.0.8"])]
    assert str(PROXIES.client_address("127.0.0.1", headers)) == "10.0.0.9"


def test_user_cannot_claim_corporate_zone_from_outside() -> None:
    """A user at home sending X-Forwarded-For with a corporate address stays in zone unknown."""
    via_proxy = PROXIES.client_address("127.0.0.1", ["192.168.10.7, 198.51.100.4"])
    assert ZONES.zone_of(via_proxy.address) == UNKNOWN_ZONE


@pytest.mark.parametrize(
    ("address", "zone"),
    [
        pytest.param("192.168.10.200", "corporate", id="v4-corporate"),
        pytest.param("2001:db8:1::1", "corporate", id="v6-corporate"),
        pytest.param("172.20.1.1", "vpn", id="vpn"),
        pytest.param("8.8.8.8", UNKNOWN_ZONE, id="internet"),
    ],
)
def test_zone_of(address: str, zone: str) -> None:
    """An address belongs to the first zone containing it, else to zone unknown."""
    assert ZONES.zone_of(ipaddress.ip_address(address)) == zone


@pytest.mark.parametrize(
    ("zones", "message"),
    [
        pytest.param({"corp": ["10.0.0.0/33"]}, "not an address", id="bad-cidr"),
        pytest.param({"corp": "10.0.0.0/8"}, "must be a list", id="string-not-list"),
        pytest.param({"unknown": ["10.0.0.0/8"]}, "cannot name a zone", id="reserved-name"),
    ],
)
def test_bad_zone_configuration(zones: dict[str, object], message: str) -> None:
    """Bad zone settings raise ConfigError naming the setting."""
    with pytest.raises(ConfigError, match=message):
        NetworkZones(zones)  # type: ignore[arg-type]


def test_bad_proxy_configuration_names_setting() -> None:
    """A bad trusted proxy is refused with the setting's name."""
    with pytest.raises(ConfigError, match=r"MFAAuthenticator\.trusted_proxies"):
        TrustedProxies(["localhost"], setting="MFAAuthenticator.trusted_proxies")
