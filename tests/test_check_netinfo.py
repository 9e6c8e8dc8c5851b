"""The host's addresses and routes from /proc (nodereach.routes; diagnose.netinfo gathers them for the check):
parsers total on any text, and the same answers as the kernel gives through netlink (pyroute2's `ip route get`),
on this host and in a lab client behind NAT."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodereach import routes as R
from nodereach.diagnose import netinfo
from nodereach.lab import Lab
from nodereach.lab import addresses as A
from nodereach.routes import Route, Tables

ROUTE4 = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
wg0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
down0\t0000000B\t00000000\t0000\t0\t0\t0\t000000FF\t0\t0\t0
"""
ROUTE6 = ("20010db8000000000000000000000000 20 00000000000000000000000000000000 00 "
          "00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n"
          "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
          "fe800000000000000000000000000001 00000400 00000003 00000000 00000003     eth0\n")
FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 192.168.1.0/24 2 0 2
        |-- 192.168.1.0
           /24 link UNICAST
        |-- 192.168.1.10
           /32 host LOCAL
        |-- 192.168.1.255
           /32 link BROADCAST
"""
IF_INET6 = "20010db8000000000000000000000050 04 20 00 80     eth0\n"


def test_parsers_read_the_kernel_formats() -> None:
    routes = R.parse_route4(ROUTE4)
    assert [(str(r.network), r.gateway, r.interface, r.metric) for r in routes] == [
        ("0.0.0.0/0", "192.168.1.1", "eth0", 100), ("192.168.1.0/24", None, "eth0", 100),
        ("10.0.0.0/24", None, "wg0", 0)]  # a route that is not up is left out
    six = R.parse_route6(ROUTE6)
    assert [(str(r.network), r.gateway) for r in six] == [("2001:db8::/32", None), ("::/0", "fe80::1")]
    assert R.parse_fib_trie_locals(FIB_TRIE) == {"192.168.1.10"}
    assert R.parse_if_inet6(IF_INET6) == [("2001:db8::50", 32, "eth0")]
    best = R.best_route(routes + six, ipaddress.ip_address("192.168.1.77"))
    assert best is not None and (str(best.network), best.gateway) == ("192.168.1.0/24", None)
    best = R.best_route(routes, ipaddress.ip_address("203.0.113.10"))
    assert best is not None and best.gateway == "192.168.1.1"


def test_gather_from_given_tables() -> None:
    info = netinfo.gather(["203.0.113.10", "2001:db8::10", "127.0.0.1", "not-an-ip"],
                          Tables(ROUTE4, ROUTE6, FIB_TRIE, IF_INET6))
    assert info.addresses == {"192.168.1.10", "2001:db8::50"}
    assert (info.default_gateway4, info.default_gateway6) == ("192.168.1.1", "fe80::1")
    out = info.routes["203.0.113.10"]
    assert (out.gateway, out.interface) == ("192.168.1.1", "eth0")
    assert out.networks == ("192.168.1.0/24", "2001:db8::/32")
    assert info.routes["2001:db8::10"].gateway is None  # on-link
    assert info.routes["127.0.0.1"].interface == "lo"
    assert info.routes["not-an-ip"].error
    assert netinfo.gather(["203.0.113.10"], Tables("", "", "", "")).error


@given(st.text(max_size=400))
def test_parsers_are_total(text: str) -> None:
    for parse in (R.parse_route4, R.parse_route6, R.parse_if_inet6):
        assert all(isinstance(r, Route | tuple) for r in parse(text))
    assert all(isinstance(a, str) for a in R.parse_fib_trie_locals(text))


@given(st.lists(st.tuples(st.sampled_from(["eth0", "wg0"]), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
                          st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1), st.integers(0, 32)), max_size=6))
def test_route4_rows_roundtrip(rows: list[tuple[str, int, int, int, int, int]]) -> None:
    lines = ["Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask"]
    for iface, dest, gw, flags, metric, plen in rows:
        mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
        le = lambda v: int.from_bytes(v.to_bytes(4, "big"), "little")  # noqa: E731  (the kernel's byte order)
        lines.append(f"{iface}\t{le(dest):08X}\t{le(gw):08X}\t{flags:04X}\t0\t0\t{metric}\t{le(mask):08X}")
    parsed = R.parse_route4("\n".join(lines))
    assert len(parsed) == sum(1 for r in rows if r[3] & R.RTF_UP)
    for r in parsed:
        assert r.network.version == 4 and (r.gateway is None or ipaddress.ip_address(r.gateway).version == 4)


def _kernel_answer(dest: str) -> tuple[str | None, str | None, int | None]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        route = ipr.route("get", dst=dest)[0]
        return route.get_attr("RTA_PREFSRC"), route.get_attr("RTA_GATEWAY"), route.get_attr("RTA_OIF")


def test_same_as_netlink_on_this_host() -> None:
    for dest in ("127.0.0.1",):
        info = netinfo.gather([dest])
        route = info.routes[dest]
        source, gateway, index = _kernel_answer(dest)
        assert (route.source, route.gateway, route.index) == (source, gateway, index)
    assert "127.0.0.1" in netinfo.gather([]).addresses


def _both(dest: str) -> tuple[netinfo.NetInfo, tuple[str | None, str | None, int | None]]:
    return netinfo.gather([dest]), _kernel_answer(dest)


@pytest.mark.lab
@pytest.mark.parametrize("scenario", ["cgnat", "open"])
def test_same_as_netlink_in_a_lab_client(lab, scenario: str) -> None:  # type: ignore[no-untyped-def]
    net: Lab = lab(scenario)
    info, (source, gateway, index) = net.call_in("client", _both, A.SERVER_IP)
    route = info.routes[A.SERVER_IP]
    assert (route.source, route.gateway, route.index) == (source, gateway, index)
    assert route.gateway == (A.HOME_LAN_GW if scenario == "cgnat" else A.INET_SUBSCRIBER_GW)
    assert info.default_gateway4 == route.gateway
    client = A.CLIENT_IP if scenario == "cgnat" else A.OPEN_CLIENT_IP
    assert client in info.addresses and route.source == client
    assert any(ipaddress.ip_address(client) in ipaddress.ip_network(n) for n in route.networks)
