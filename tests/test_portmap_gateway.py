"""The keeper's gateway lookup from /proc (nodereach.routes): per family the default gateway, the source
address (IPv6: the stable global one, also behind a link-local gateway), the interface index and the on-link
networks, as netlink (pyroute2, which it replaced) gives them: from given tables, and in the lab's dual-stack
home network against the kernel's own answers."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lab_fixtures import Ipv6HomeRouter
from nodereach import routes
from nodereach.lab import addresses as A
from nodereach.portmap.errors import PortmapError
from nodereach.portmap.gateway import GLOBAL_PROBE6, Gateway, find_gateway_async, find_gateway_in

ROUTE4 = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
wlan0\t0001A8C0\t00000000\t0001\t0\t0\t600\t00FFFFFF\t0\t0\t0
wg0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
"""
# Default IPv6 route via the router's link-local address (what SLAAC gives), plus the LAN prefix.
ROUTE6 = ("20010db8000100010000000000000000 40 00000000000000000000000000000000 00 "
          "00000000000000000000000000000000 00000100 00000001 00000000 00000001    wlan0\n"
          "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
          "fe800000000000000000000000000001 00000400 00000003 00000000 00000003    wlan0\n")
# wlan0 (index 3): a temporary (RFC 8981) address the kernel prefers as source, the stable one, a tentative
# one, a unique-local one and the link-local one; wg0 (index 7) has no IPv6.
IF_INET6 = ("20010db800010001a1b2c3d4e5f60718 03 40 00 01    wlan0\n"
            "20010db8000100010000000000000010 03 40 00 00    wlan0\n"
            "20010db8000100010000000000000099 03 40 00 40    wlan0\n"
            "fd000000000000010000000000000010 03 40 00 00    wlan0\n"
            "fe800000000000000000000000000010 03 40 20 80    wlan0\n")
TABLES = routes.Tables(ROUTE4, ROUTE6, "", IF_INET6)
TEMPORARY = "2001:db8:1:1:a1b2:c3d4:e5f6:718"
STABLE = "2001:db8:1:1::10"


def kernel(answers: dict[str, str]) -> Callable[[str], tuple[str | None, str | None]]:
    """The kernel's source-address choice per destination, as a table (the lab test asks the real kernel)."""
    def source(dest: str) -> tuple[str | None, str | None]:
        return (answers[dest], None) if dest in answers else (None, "Network is unreachable")
    return source


def test_ipv4_default_gateway_source_and_lan() -> None:
    gw = find_gateway_in(TABLES, family=4, source=kernel({"192.168.1.1": "192.168.1.20"}))
    assert (gw.address, gw.local_address) == ("192.168.1.1", "192.168.1.20")
    assert [str(n) for n in gw.networks] == ["192.168.1.0/24", "2001:db8:1:1::/64", "fd00:0:0:1::/64",
                                             "fe80::/64"]
    assert gw.interface_index == 3  # wlan0's index, named by if_inet6
    assert gw.on_link("192.168.1.77") and not gw.on_link("10.0.0.5") and not gw.on_link("203.0.113.1")


def test_ipv6_link_local_gateway_gives_the_stable_global_source() -> None:
    # Toward fe80::1 the kernel would answer with a link-local source; toward the internet with the temporary
    # address: the pinhole is for the stable one on the same interface (not tentative, not unique-local).
    gw = find_gateway_in(TABLES, family=6, source=kernel({GLOBAL_PROBE6: TEMPORARY}))
    assert (gw.address, gw.local_address, gw.interface_index) == ("fe80::1", STABLE, 3)
    assert gw.on_link("fe80::1") and gw.on_link("2001:db8:1:1::99") and not gw.on_link("2001:db8:2::1")


def test_given_gateway_and_errors() -> None:
    gw = find_gateway_in(TABLES, "192.168.1.1", 4, source=kernel({"192.168.1.1": "192.168.1.20"}))
    assert gw.address == "192.168.1.1"
    with pytest.raises(PortmapError, match="not an IPv6 address"):
        find_gateway_in(TABLES, "192.168.1.1", 6)
    with pytest.raises(PortmapError, match="no route to the gateway"):
        find_gateway_in(routes.Tables(ROUTE4.splitlines()[0] + "\n", "", "", ""), "10.9.9.9", 4)
    with pytest.raises(PortmapError, match="no IPv4 default gateway"):
        find_gateway_in(routes.Tables(ROUTE4.splitlines()[0] + "\n" + ROUTE4.splitlines()[2], ROUTE6, "", ""))
    with pytest.raises(PortmapError, match="no IPv6 default gateway"):
        find_gateway_in(routes.Tables(ROUTE4, ROUTE6.splitlines()[0], "", IF_INET6), family=6)
    with pytest.raises(PortmapError, match="cannot read the routing table"):
        find_gateway_in(routes.Tables("", "", "", ""))
    with pytest.raises(PortmapError, match="no source address"):
        find_gateway_in(TABLES, family=4, source=kernel({}))
    # Only unique-local and link-local addresses: no pinhole can make the host reachable.
    ula_only = routes.Tables(ROUTE4, ROUTE6, "", "\n".join(IF_INET6.splitlines()[3:]))
    with pytest.raises(PortmapError, match=r"no global IPv6 address .*unique-local"):
        find_gateway_in(ula_only, family=6, source=kernel({GLOBAL_PROBE6: "fd00:0:0:1::10"}))


def test_if_inet6_fields() -> None:
    first = routes.parse_addresses6(IF_INET6)[0]
    assert (first.address, first.index, first.prefixlen, first.scope, first.flags, first.interface) == \
        (TEMPORARY, 3, 64, 0, routes.IFA_F_TEMPORARY, "wlan0")
    assert routes.parse_addresses6(IF_INET6)[-1].scope == 0x20


@given(st.text(max_size=400))
def test_if_inet6_parser_is_total(text: str) -> None:
    assert all(isinstance(a, routes.Address6) for a in routes.parse_addresses6(text))


def _netlink_truth(family: int) -> tuple[str, str, int, set[str]]:
    """What the former netlink lookup answered: the default gateway, the preferred source toward it (IPv6:
    toward the internet), the outgoing interface and that interface's prefixes."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        fam = socket.AF_INET if family == 4 else socket.AF_INET6
        gateway = next(r.get_attr("RTA_GATEWAY") for r in ipr.get_default_routes(family=fam)
                       if r.get_attr("RTA_GATEWAY"))
        toward = ipr.route("get", dst=gateway if family == 4 else GLOBAL_PROBE6)[0]
        index = toward.get_attr("RTA_OIF")
        nets = {str(ipaddress.ip_network(f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}", strict=False))
                for m in ipr.get_addr(index=index)}
        return str(gateway), str(toward.get_attr("RTA_PREFSRC")), int(index), nets


def _both(family: int) -> tuple[Gateway, tuple[str, str, int, set[str]]]:
    return asyncio.run(find_gateway_async(family=family)), _netlink_truth(family)  # type: ignore[arg-type]


@pytest.mark.lab
def test_same_as_netlink_in_the_dual_stack_home_network(ipv6_home_router: Callable[..., Ipv6HomeRouter]) -> None:
    gw6 = ipv6_home_router("ipv6-firewalled")
    for family, gateway, local in ((4, A.HOME_LAN_GW, A.CLIENT_IP), (6, A.HOME_LAN_GW6, A.CLIENT_IP6)):
        found, (nl_gateway, nl_source, nl_index, nl_nets) = gw6.lab.call_in("client", _both, family)
        assert (found.address, found.local_address, found.interface_index) == (gateway, local, nl_index)
        assert (nl_gateway, nl_source) == (gateway, local)
        assert {str(n) for n in found.networks} == nl_nets


@pytest.mark.lab
def test_link_local_ipv6_gateway_in_the_lab(ipv6_home_router: Callable[..., Ipv6HomeRouter]) -> None:
    """The usual RA default route, via the router's link-local address: the source is still the client's
    global address, on the right interface (the lab's route is put back after)."""
    net = ipv6_home_router("ipv6-firewalled").lab
    router_ll = net.exec("router", ["ip", "-o", "-6", "addr", "show", "dev", "lan", "scope", "link"]
                         ).stdout.split()[3].split("/")[0]
    net.exec("client", ["ip", "-6", "route", "replace", "default", "via", router_ll, "dev", "eth0"])
    try:
        ll, (nl_gateway, nl_source, nl_index, _n) = net.call_in("client", _both, 6)
        assert (nl_gateway, nl_source) == (router_ll, A.CLIENT_IP6)
        assert (ll.address, ll.local_address, ll.interface_index) == (router_ll, A.CLIENT_IP6, nl_index)
        assert ll.on_link(router_ll) and ll.on_link(A.HOME_LAN_GW6)
    finally:
        net.exec("client", ["ip", "-6", "route", "replace", "default", "via", A.HOME_LAN_GW6, "dev", "eth0"])
    assert net.call_in("client", _both, 6)[0].address == A.HOME_LAN_GW6


def test_stable_address6_choice() -> None:
    """One choice for the pinhole (`open`) and the check's advice: the stable global address on the source's
    interface; the source itself when it is stable or has no usable stable neighbour."""
    found = routes.parse_addresses6(IF_INET6)
    assert routes.stable_address6(found, TEMPORARY) == STABLE  # interface looked up from the source
    assert routes.stable_address6(found, TEMPORARY, 3) == STABLE
    assert routes.stable_address6(found, STABLE) == STABLE
    assert routes.stable_address6(found, TEMPORARY, 7) == TEMPORARY  # wg0 has no IPv6
    assert routes.stable_address6(found, "2001:db8:5::1") == "2001:db8:5::1"  # not this host's: unchanged
    only_temporary = [a for a in found if a.address != STABLE]
    assert routes.stable_address6(only_temporary, TEMPORARY) == TEMPORARY  # tentative/ULA/link-local never
