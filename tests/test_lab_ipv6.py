"""The IPv6 half of each scenario's ground truth, proven with raw sockets in a real lab (no STUN code).

The internet is dual-stack in every scenario; the subscriber side has IPv6 only in the IPv6 scenarios
(`truth.ipv6` is None elsewhere). The IPv4 truth of the IPv6 scenarios is proven by test_lab_scenarios.py,
which runs over every scenario.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
from collections.abc import Callable
from contextlib import ExitStack

import pytest

from lab_fixtures import Ipv6HomeRouter
from nodereach.errors import UsageError
from nodereach.lab import SCENARIOS, Lab
from nodereach.lab import addresses as A
from nodereach.lab import probe as P
from nodereach.lab.scenarios import Ipv6Truth

pytestmark = pytest.mark.lab

V6_SCENARIOS = [n for n, s in SCENARIOS.items() if s.has_ipv6]
V4_ONLY = [n for n, s in SCENARIOS.items() if not s.has_ipv6]
EXPECTED_FILTERING = {
    "endpoint-independent": {"same": True, "other-port": True, "other-ip": True, "peer": True},
    "address-and-port-dependent": {"same": True, "other-port": False, "other-ip": False, "peer": False},
}
LAB_NETS6 = [ipaddress.ip_network(n) for n in ("2001:db8::/32", "fd00::/8", "fe80::/10", "ff00::/8", "::1/128")]


def _v6(net: Lab) -> Ipv6Truth:
    assert net.truth.ipv6 is not None
    return net.truth.ipv6


def test_the_ipv6_scenarios_exist() -> None:
    assert {"cgnat-ipv6", "ipv6-firewalled", "ipv6-open", "nptv6"} <= set(V6_SCENARIOS)
    assert all(SCENARIOS[n].truth().ipv6 is None for n in V4_ONLY)


@pytest.mark.parametrize("name", V6_SCENARIOS)
def test_public_address_mapping_and_filtering(lab: Callable[..., Lab], name: str) -> None:
    """The server sees the public address (the client's own one unless translated), with the local port;
    then which unsolicited senders reach that address (RFC 4787 filtering)."""
    net = lab(name)
    truth = _v6(net)
    with ExitStack() as stack:
        client = stack.enter_context(P.udp(net, "client", "::"))
        server, other_port, other_ip = stack.enter_context(P.trio(net, "server", A.SERVER_IP6, A.SERVER_ALT_IP6))
        peer = stack.enter_context(P.udp(net, "peer", A.PEER_IP6))
        ext = P.send_seen_as(client, server)
        assert ext == (truth.public_address, P.sockname(client)[1])
        got = {"same": P.delivered(server, client, ext), "other-port": P.delivered(other_port, client, ext),
               "other-ip": P.delivered(other_ip, client, ext), "peer": P.delivered(peer, client, ext)}
    assert got == EXPECTED_FILTERING[truth.filtering]


@pytest.mark.parametrize("name", V6_SCENARIOS)
def test_mapping_keeps_the_port_toward_every_destination(lab: Callable[..., Lab], name: str) -> None:
    net = lab(name)
    with P.udp(net, "client", "::") as client, P.udp(net, "server", A.SERVER_IP6) as a, \
            P.udp(net, "server", A.SERVER_ALT_IP6) as b, P.udp(net, "peer", A.PEER_IP6) as c:
        seen = {P.send_seen_as(client, dst) for dst in (a, b, c)}
        local_port = P.sockname(client)[1]
    assert seen == {(_v6(net).public_address, local_port)}
    assert _v6(net).mapping in ("no-nat", "endpoint-independent")


@pytest.mark.parametrize("proto", ["udp", "tcp"])
@pytest.mark.parametrize("name", V6_SCENARIOS)
def test_unsolicited_inbound(lab: Callable[..., Lab], name: str, proto: str) -> None:
    """A listener that never sent anything: reachable at the public address exactly when nothing filters."""
    net = lab(name)
    truth = _v6(net)
    port = 47000 if proto == "udp" else 47001
    assert P.inbound_reaches(net, "client", (truth.public_address, port), proto) == truth.unsolicited_inbound
    assert truth.firewall != truth.unsolicited_inbound


@pytest.mark.parametrize("name", V6_SCENARIOS)
def test_outbound_tcp_shows_the_public_address(lab: Callable[..., Lab], name: str) -> None:
    net = lab(name)
    listener = P.tcp_listener(net, "server", A.SERVER_IP6)
    try:
        assert P.tcp_connects(net, "client", P.sockname(listener))
        seen = P.tcp_accepts(listener, 1.0)
    finally:
        listener.close()
    assert seen is not None and seen[0] == _v6(net).public_address


@pytest.mark.parametrize("name", V6_SCENARIOS)
def test_hop_limited_probes_see_every_hop(lab: Callable[..., Lab], name: str) -> None:
    net = lab(name)
    assert P.ttl_hops(net, "client", A.SERVER_IP6) == list(_v6(net).hops)


def test_nptv6_translates_the_ula_prefix_one_to_one(lab: Callable[..., Lab]) -> None:
    net = lab("nptv6")
    truth = _v6(net)
    own = net.exec("client", ["ip", "-6", "-o", "addr", "show", "scope", "global"]).stdout
    assert [line.split()[3] for line in own.splitlines()] == [f"{A.NPT_CLIENT_IP6}/64"]
    assert ipaddress.ip_address(truth.client_address) in ipaddress.ip_network(A.NPT_LAN6_NET)
    assert truth.translation == "nptv6" and truth.public_address == A.CLIENT_IP6
    # 1:1: the interface identifier survives the translation
    assert int(ipaddress.ip_address(truth.client_address)) & (2**64 - 1) == \
        int(ipaddress.ip_address(truth.public_address)) & (2**64 - 1)


@pytest.mark.parametrize("name", ["ipv6-firewalled", "cgnat-ipv6", "ipv6-open"])
def test_no_translation_the_client_owns_its_public_address(lab: Callable[..., Lab], name: str) -> None:
    net = lab(name)
    own = net.exec("client", ["ip", "-6", "-o", "addr", "show", "scope", "global"]).stdout
    assert [line.split()[3] for line in own.splitlines()] == [f"{A.CLIENT_IP6}/64"]
    assert _v6(net).translation == "none" and _v6(net).public_address == A.CLIENT_IP6


@pytest.mark.parametrize("name", V4_ONLY)
def test_ipv4_only_scenarios_have_no_ipv6_on_the_subscriber_side(lab: Callable[..., Lab], name: str) -> None:
    net = lab(name)
    assert net.truth.ipv6 is None and net.truth.families == (4,)
    for host in net.hosts:
        out = net.exec(host, ["ip", "-6", "-o", "addr", "show"]).stdout
        if host in ("inet", "server", "peer", "coturn"):
            assert A.INET6_SUBSCRIBER_GW in out or "2001:db8:203::" in out, host  # the internet is dual-stack
        else:
            assert out.strip() == "", (host, out)  # IPv6 disabled: not even ::1 or link-local
    with net.socket("client", socket.AF_INET6, socket.SOCK_DGRAM) as sock, pytest.raises(OSError):
        sock.sendto(b"x", (A.SERVER_IP6, 9))


def test_internet_hosts_talk_ipv6_from_both_server_addresses(lab: Callable[..., Lab]) -> None:
    """`server` has two IPv6 addresses (RFC 5780 over IPv6, dial-back from a second address)."""
    net = lab("port-restricted")
    assert net.addresses("server", 6) == (A.SERVER_IP6, A.SERVER_ALT_IP6)
    with P.udp(net, "peer", A.PEER_IP6) as peer:
        for addr in (A.SERVER_IP6, A.SERVER_ALT_IP6):
            with P.udp(net, "server", addr) as server:
                assert P.send_seen_as(server, peer) == (addr, P.sockname(server)[1])


def test_static_pinhole_opens_the_firewall_and_reset_closes_it(lab: Callable[..., Lab]) -> None:
    net = lab("ipv6-firewalled")
    assert not P.inbound_reaches(net, "client", (A.CLIENT_IP6, 47010), "udp")
    net.open_pinhole(47010, "udp")
    net.open_pinhole(47011, "tcp")
    assert P.inbound_reaches(net, "client", (A.CLIENT_IP6, 47010), "udp")
    assert P.inbound_reaches(net, "client", (A.CLIENT_IP6, 47011), "tcp")
    assert not P.inbound_reaches(net, "client", (A.CLIENT_IP6, 47012), "udp")  # only the opened port
    net.reset()
    assert not P.inbound_reaches(net, "client", (A.CLIENT_IP6, 47010), "udp")
    with pytest.raises(UsageError):
        lab("port-restricted").open_pinhole(47010)


@pytest.mark.parametrize("name", ["cgnat-ipv6", "nptv6"])
def test_no_ipv6_route_off_the_lab(lab: Callable[..., Lab], name: str) -> None:
    net = lab(name)
    for host in net.hosts:
        routes = json.loads(net.exec(host, ["ip", "-j", "-6", "route", "show", "table", "all"]).stdout)
        for route in routes:
            dst = route["dst"]
            if dst == "default":
                assert host != "inet", "the internet core must have no default route"
                assert ipaddress.ip_address(route["gateway"]) in LAB_NETS6[0] or \
                    ipaddress.ip_address(route["gateway"]) in LAB_NETS6[1], (host, route)
                continue
            prefix = ipaddress.ip_network(dst if "/" in dst else f"{dst}/128", strict=False)
            assert any(prefix.subnet_of(n) for n in LAB_NETS6), (host, route)  # type: ignore[arg-type]
    assert net.exec("inet", ["ip", "-6", "route", "get", "2001:4860::1"], check=False).returncode != 0


@pytest.mark.parametrize("name", ["cgnat-ipv6", "nptv6", "port-restricted"])
def test_ipv6_addresses_match_the_interfaces(lab: Callable[..., Lab], name: str) -> None:
    net = lab(name)
    for host in net.hosts:
        out = net.exec(host, ["ip", "-6", "-o", "addr", "show", "scope", "global"]).stdout
        assert {line.split()[3].split("/")[0] for line in out.splitlines()} == set(net.addresses(host, 6)), host


def test_impaired_link_carries_ipv6(lab: Callable[..., Lab]) -> None:
    """Across the TAP forwarder the IPv6 neighbours are pinned like ARP: no solicitation to lose."""
    net = lab("ipv6-firewalled", delay_ms=10)
    with P.udp(net, "client", "::") as client, P.udp(net, "server", A.SERVER_IP6) as server:
        assert P.send_seen_as(client, server, timeout=1.0) == (A.CLIENT_IP6, P.sockname(client)[1])
    neigh = net.exec("router", ["ip", "-6", "neigh", "show", "dev", "wan"]).stdout
    assert A.INET6_SUBSCRIBER_GW in neigh and "PERMANENT" in neigh


# --- the IPv6 home router: miniupnpd opens pinholes (UPnP WANIPv6FirewallControl, PCP MAP) ---------------
def _pcp_map6(internal_port: int, lifetime: int, nonce: bytes, proto: int = 17) -> bytes:
    """A PCP MAP request (RFC 6887 section 11.1) for the client's IPv6 address, built by hand."""
    header = bytes([2, 1, 0, 0]) + lifetime.to_bytes(4, "big") + socket.inet_pton(socket.AF_INET6, A.CLIENT_IP6)
    port = internal_port.to_bytes(2, "big")
    return header + nonce + bytes([proto, 0, 0, 0]) + port + port + b"\x00" * 16


@pytest.mark.parametrize("scenario", ["ipv6-firewalled", "cgnat-ipv6"])
def test_pcp_map_opens_an_ipv6_pinhole(ipv6_home_router: Callable[..., Ipv6HomeRouter], scenario: str) -> None:
    gw = ipv6_home_router(scenario)
    assert gw.lab.truth.ipv6 is not None and gw.lab.truth.ipv6.pinholes_work
    assert not gw.inbound(45000)
    nonce = os.urandom(12)
    with P.udp(gw.lab, "client", "::") as sock:
        sock.sendto(_pcp_map6(45000, 120, nonce), gw.pcp_server)
        got = P.recv(sock, 2.0)
        assert got is not None and got[1] == gw.pcp_server
        reply = got[0]
        assert len(reply) >= 60 and reply[:2] == b"\x02\x81" and reply[3] == 0, reply[:4].hex()
        assert reply[24:36] == nonce
        assert int.from_bytes(reply[42:44], "big") == 45000
        assert socket.inet_ntop(socket.AF_INET6, reply[44:60]) == A.CLIENT_IP6  # no translation: own address
        try:
            assert gw.inbound(45000) and len(gw.pinhole_rules()) == 1
        finally:
            sock.sendto(_pcp_map6(45000, 0, nonce), gw.pcp_server)  # delete
            deleted = P.recv(sock, 2.0)
    assert deleted is not None and deleted[0][3] == 0
    assert not gw.inbound(45000) and gw.pinhole_rules() == []


@pytest.mark.parametrize("scenario", ["ipv6-firewalled", "cgnat-ipv6"])
def test_upnp_addpinhole_opens_an_ipv6_pinhole(ipv6_home_router: Callable[..., Ipv6HomeRouter],
                                               scenario: str) -> None:
    if shutil.which("upnpc") is None:
        pytest.skip("upnpc not installed")
    gw = ipv6_home_router(scenario)
    upnpc = ["upnpc", "-6", "-u", gw.upnp_location6]
    out = gw.lab.exec("client", [*upnpc, "-A", "", "0", gw.client_ip6, "44000", "tcp", "600"], timeout=20).stdout
    assert f"AddPinhole: ([]:0 -> [{gw.client_ip6}]:44000) / Pinhole ID = " in out
    uid = out.rsplit("Pinhole ID = ", 1)[1].split()[0]
    try:
        assert gw.inbound(44000, "tcp")
        assert not gw.inbound(44000, "udp")  # the pinhole is for TCP only
    finally:
        gw.lab.exec("client", [*upnpc, "-D", uid], timeout=20, check=False)
    assert not gw.inbound(44000, "tcp")


def test_ipv6_home_router_truth(ipv6_home_router: Callable[..., Ipv6HomeRouter]) -> None:
    gw = ipv6_home_router()
    v6 = gw.lab.truth.ipv6
    assert v6 is not None and v6.pinholes == ("upnp", "pcp") and v6.pinholes_work
    assert gw.lab.truth.port_mapping_works  # IPv4 mappings too: a single public NAT
    with pytest.raises(UsageError, match="nptv6"):
        Lab("nptv6", home_router=True)
    with pytest.raises(ValueError):
        ipv6_home_router("port-restricted")
