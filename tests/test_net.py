"""nodereach.net: one classification of addresses, endpoints and ports for every package."""

from __future__ import annotations

import ipaddress
import typing

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodereach import net


@pytest.mark.parametrize(("address", "kind"), [
    ("8.8.8.8", "global"),
    ("2a00:1450::1", "global"),
    ("192.168.1.10", "private"),
    ("10.0.0.2", "private"),
    ("172.31.255.1", "private"),
    ("172.32.0.1", "global"),
    ("100.64.0.1", "shared"),
    ("100.127.255.254", "shared"),
    ("100.128.0.1", "global"),
    ("127.0.0.1", "loopback"),
    ("::1", "loopback"),
    ("169.254.3.4", "link-local"),
    ("fe80::1", "link-local"),
    ("fd00::1", "unique-local"),
    ("fc12::1", "unique-local"),
    ("198.51.100.3", "documentation"),
    ("203.0.113.10", "documentation"),
    ("192.0.2.1", "documentation"),
    ("2001:db8::10", "documentation"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("192.0.0.8", "reserved"),
    ("198.18.0.1", "reserved"),
    ("::ffff:192.168.1.10", "private"),
    ("::ffff:100.64.0.2", "shared"),
    ("[fe80::1%eth0]", "link-local"),
])
def test_address_kind(address: str, kind: str) -> None:
    assert net.address_kind(address) == kind


@pytest.mark.parametrize(("address", "public"), [
    ("8.8.8.8", True), ("203.0.113.10", True), ("2001:db8::1", True), ("2a00:1450::1", True),
    ("192.168.1.10", False), ("100.64.0.1", False), ("fe80::1", False), ("fd00::1", False), ("::1", False),
    ("0.0.0.0", False), ("::", False),
])
def test_only_routable_addresses_are_public(address: str, public: bool) -> None:
    assert net.is_public(address) is public


def test_unmap_and_canonical() -> None:
    assert net.canonical("::ffff:198.51.100.3") == "198.51.100.3"
    assert net.canonical("2001:DB8:0:0::1") == "2001:db8::1"
    assert net.canonical("[2001:db8::1]") == "2001:db8::1"
    assert net.family_of("::ffff:1.2.3.4") == 4
    assert net.family_of("2001:db8::1") == 6
    with pytest.raises(ValueError):
        net.canonical("example.org")


def test_nat_realm() -> None:
    assert net.nat_realm("100.64.0.2") == "100.64.0.0/10"
    assert net.nat_realm("192.168.1.10") == "192.168.0.0/16"
    assert net.nat_realm("fd00::1") == "fc00::/7"
    assert net.nat_realm("198.51.100.3") is None


def test_endpoint_text_round_trip() -> None:
    e = net.Endpoint.parse("[2001:db8::1]:30303")
    assert (e.address, e.port, e.family) == ("2001:db8::1", 30303, 6)
    assert str(e) == "[2001:db8::1]:30303"
    assert str(net.Endpoint.of(("::ffff:198.51.100.3", 5, 0, 0))) == "198.51.100.3:5"
    for bad in ("2001:db8::1:5", "1.2.3.4", "1.2.3.4:99999", "host:5"):
        with pytest.raises(ValueError):
            net.Endpoint.parse(bad)


def test_port_spec_parse() -> None:
    assert net.PortSpec.parse_many("30303") == [net.PortSpec(30303, "tcp"), net.PortSpec(30303, "udp")]
    assert net.PortSpec.parse_many("8333/TCP") == [net.PortSpec(8333, "tcp")]
    assert str(net.PortSpec(9000, "udp")) == "9000/udp"
    for bad in ("0/tcp", "70000", "x/tcp", "30303/sctp", ""):
        with pytest.raises(ValueError):
            net.PortSpec.parse_many(bad)


@given(st.ip_addresses())
def test_every_address_has_one_kind_and_public_means_routable(ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
                                                               ) -> None:
    kind = net.address_kind(str(ip))
    assert kind in typing.get_args(net.AddressKind)
    assert net.is_public(str(ip)) == (kind in ("global", "documentation"))
    if kind == "global":
        assert net.unmap(ip).is_global
    assert net.canonical(str(ip)) == str(net.unmap(ip))


@given(st.text(max_size=60))
def test_endpoint_parse_raises_only_value_error(text: str) -> None:
    try:
        e = net.Endpoint.parse(text)
    except ValueError:
        return
    assert net.Endpoint.parse(str(e)) == e


async def test_resolve_literal_and_family_mismatch() -> None:
    assert await net.resolve("::ffff:127.0.0.1") == ["127.0.0.1"]
    assert await net.resolve("127.0.0.1", family=4) == ["127.0.0.1"]
    with pytest.raises(net.ResolveError, match="not an IPv6"):
        await net.resolve("127.0.0.1", family=6)


async def test_resolve_localhost_name() -> None:
    found = await net.resolve("localhost", 80, timeout=2.0)
    assert found and all(net.address_kind(a) == "loopback" for a in found)


def test_ipv6_sockets_prefer_the_stable_source() -> None:
    """The kernel keeps the preference (RFC 5014 IPV6_PREFER_SRC_PUBLIC) on the socket; IPv4 gets nothing."""
    import socket

    from nodereach.net import IPV6_ADDR_PREFERENCES, IPV6_PREFER_SRC_PUBLIC, prefer_stable_source

    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s6, socket.socket(socket.AF_INET) as s4:
        before = s6.getsockopt(socket.IPPROTO_IPV6, IPV6_ADDR_PREFERENCES)
        prefer_stable_source(s6)
        prefer_stable_source(s4)  # no IPv6 option on an IPv4 socket, and no error
        after = s6.getsockopt(socket.IPPROTO_IPV6, IPV6_ADDR_PREFERENCES)
    assert not before & IPV6_PREFER_SRC_PUBLIC and after & IPV6_PREFER_SRC_PUBLIC
