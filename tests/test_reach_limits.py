"""Abuse limits and client-address logic (pure units with an injected clock)."""

from __future__ import annotations

import ipaddress
import tracemalloc

import pytest

from nodereach.reach.limits import (
    DEFAULT_REFUSED_PORTS,
    Limiter,
    LimitsConfig,
    client_address,
    network_of,
    parse_networks,
    parse_port_ranges,
)

A = ipaddress.ip_address("198.51.100.7")
B = ipaddress.ip_address("198.51.100.8")


def cfg(**kw: object) -> LimitsConfig:
    base: dict[str, object] = {"address_rate": 1.0, "address_burst": 3, "network_rate": 2.0, "network_burst": 5,
                               "max_ports_per_window": 4, "port_window_s": 100, "max_in_flight_per_address": 2,
                               "max_in_flight": 3}
    base.update(kw)
    return LimitsConfig(**base)  # type: ignore[arg-type]


def admit_release(lim: Limiter, addr: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, t: float) -> str | None:
    r = lim.admit(addr, port, t)
    if r is None:
        lim.release(addr)
    return r


def test_default_refused_ports() -> None:
    refused = parse_port_ranges(DEFAULT_REFUSED_PORTS)
    assert {0, 22, 25, 53, 1023} <= refused
    assert not {80, 443, 1024, 30303, 65535} & refused


def test_parse_port_ranges_errors() -> None:
    assert parse_port_ranges("25, 100-102,") == {25, 100, 101, 102}
    for bad in ("x", "5-3", "70000", "1-2-3"):
        with pytest.raises(ValueError):
            parse_port_ranges(bad)


def test_address_bucket_and_refill() -> None:
    lim = Limiter(cfg())
    assert [admit_release(lim, A, 5000, 0.0) for _ in range(3)] == [None] * 3
    assert admit_release(lim, A, 5000, 0.0) == "rate-limited-address"
    assert lim.retry_after(A) >= 1.0
    assert admit_release(lim, A, 5000, 1.01) is None  # one token back after 1 s


def test_network_bucket_shared_by_neighbours() -> None:
    lim = Limiter(cfg(address_burst=100, network_burst=4, network_rate=0.001))
    neighbours = [ipaddress.ip_address(f"198.51.100.{i}") for i in range(10, 20)]
    results = [admit_release(lim, n, 5000, 0.0) for n in neighbours]
    assert results[:4] == [None] * 4
    assert set(results[4:]) == {"rate-limited-network"}
    assert admit_release(lim, ipaddress.ip_address("203.0.113.5"), 5000, 0.0) is None


def test_ipv6_network_is_slash_56() -> None:
    assert network_of(ipaddress.ip_address("2001:db8:0:12ff::1")) == "2001:db8:0:1200::/56"
    assert network_of(ipaddress.ip_address("::ffff:198.51.100.7")) == "198.51.100.0/24"


def test_port_scan_refused() -> None:
    lim = Limiter(cfg(address_burst=100, network_burst=100))
    assert [admit_release(lim, A, p, 0.0) for p in (5001, 5002, 5003, 5004)] == [None] * 4
    assert admit_release(lim, A, 5005, 0.0) == "too-many-ports"
    assert admit_release(lim, A, 5001, 0.0) is None  # a port already probed stays allowed
    assert admit_release(lim, A, 5005, 101.0) is None  # window passed


def test_in_flight_caps() -> None:
    lim = Limiter(cfg(address_burst=100, network_burst=100))
    assert lim.admit(A, 5000, 0) is None
    assert lim.admit(A, 5000, 0) is None
    assert lim.admit(A, 5000, 0) == "too-many-in-flight"
    assert lim.admit(B, 5000, 0) is None
    assert lim.admit(ipaddress.ip_address("203.0.113.9"), 5000, 0) == "busy"
    lim.release(A)
    assert lim.in_flight == 2
    assert lim.admit(ipaddress.ip_address("203.0.113.9"), 5000, 0) is None


def test_refused_port_checked_first() -> None:
    lim = Limiter(cfg())
    assert lim.admit(A, 25, 0) == "refused-port"
    assert lim.in_flight == 0


def test_memory_bounded_under_many_addresses() -> None:
    lim = Limiter(cfg(max_tracked=1000, network_burst=1e9, address_burst=5, max_in_flight=10**9))
    addrs = [ipaddress.ip_address(0x0A000000 + i) for i in range(20_000)]
    tracemalloc.start()
    for i, addr in enumerate(addrs[:1000]):
        assert admit_release(lim, addr, 5000, float(i)) is None
    at_cap = tracemalloc.get_traced_memory()[0]
    for i, addr in enumerate(addrs[1000:]):
        assert admit_release(lim, addr, 5000, 1000.0 + i) is None
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert lim.tracked_addresses == 1000
    assert lim.tracked_networks <= 1000
    assert lim.evictions >= 19_000
    assert after < at_cap * 1.5, (at_cap, after)


def test_client_address_xff_only_from_trusted() -> None:
    trusted = parse_networks(["10.0.0.0/8"])
    assert str(client_address("198.51.100.7", "203.0.113.99", trusted)) == "198.51.100.7"
    assert str(client_address("10.1.2.3", "203.0.113.99", trusted)) == "203.0.113.99"
    # spoofed left-most entries are ignored: the right-most untrusted hop is the client
    assert str(client_address("10.1.2.3", "1.2.3.4, 203.0.113.99, 10.9.9.9", trusted)) == "203.0.113.99"
    assert str(client_address("::ffff:10.1.2.3", "198.51.100.9", trusted)) == "198.51.100.9"
    assert str(client_address("10.1.2.3", None, trusted)) == "10.1.2.3"
    with pytest.raises(ValueError):
        client_address("10.1.2.3", "not-an-ip", trusted)
