"""Each scenario's ground truth, proven with raw sockets in a real lab (no STUN code).

Vocabulary: the client sends from an ephemeral port to the server; the server sees `ext` (the client's
public address and port). Then internet hosts send unsolicited datagrams to `ext` and we check what gets in.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import pytest

from nodereach.lab import SCENARIOS, Lab
from nodereach.lab import addresses as A
from nodereach.lab import probe as P

pytestmark = pytest.mark.lab


@dataclass
class UdpSetup:
    """Sockets for one filtering experiment."""

    lab: Lab
    client: object
    server: object       # server 203.0.113.10:p (contacted)
    server_port2: object  # server 203.0.113.10:q (same IP, other port)
    server_ip2: object   # server 203.0.113.11:p (other IP of the same host)
    peer: object         # peer 203.0.113.20 (a third party)
    ext: tuple[str, int]


@pytest.fixture
def udp_setup() -> Iterator[Callable[[Lab], UdpSetup]]:
    stack = ExitStack()

    def make(lab: Lab) -> UdpSetup:
        client = stack.enter_context(P.udp(lab, "client"))
        server, port2, ip2 = stack.enter_context(P.trio(lab))
        peer = stack.enter_context(P.udp(lab, "peer", A.PEER_IP, 0))
        ext = P.send_seen_as(client, server)
        assert ext is not None, f"{lab.scenario.name}: UDP from client to server did not arrive"
        return UdpSetup(lab, client, server, port2, ip2, peer, ext)

    with stack:
        yield make


def inbound(s: UdpSetup) -> dict[str, bool]:
    """Which unsolicited senders reach the client's external address."""
    return {
        "same": P.delivered(s.server, s.client, s.ext),
        "other-port": P.delivered(s.server_port2, s.client, s.ext),
        "other-ip": P.delivered(s.server_ip2, s.client, s.ext),
        "peer": P.delivered(s.peer, s.client, s.ext),
    }


EXPECTED_FILTERING = {
    "endpoint-independent": {"same": True, "other-port": True, "other-ip": True, "peer": True},
    "address-dependent": {"same": True, "other-port": True, "other-ip": False, "peer": False},
    "address-and-port-dependent": {"same": True, "other-port": False, "other-ip": False, "peer": False},
}

UDP_SCENARIOS = [n for n, s in SCENARIOS.items() if not s.udp_blocked]


@pytest.mark.parametrize("name", UDP_SCENARIOS)
def test_public_address_and_filtering(lab: Callable[..., Lab], udp_setup: Callable[[Lab], UdpSetup],
                                      name: str) -> None:
    net = lab(name)
    s = udp_setup(net)
    assert s.ext[0] == net.truth.client_public_ip
    assert inbound(s) == EXPECTED_FILTERING[net.truth.filtering]


@pytest.mark.parametrize("name", UDP_SCENARIOS)
def test_unsolicited_inbound_without_outbound(lab: Callable[..., Lab], name: str) -> None:
    """A listener that never sent anything is reachable only with no NAT and no firewall."""
    net = lab(name)
    with P.udp(net, "client") as client, P.udp(net, "peer", A.PEER_IP, 0) as peer:
        got_in = P.delivered(peer, client, (net.truth.client_public_ip, client.getsockname()[1]))
    assert got_in == net.truth.unsolicited_inbound


@pytest.mark.parametrize("name", UDP_SCENARIOS)
def test_mapping_behaviour(lab: Callable[..., Lab], name: str) -> None:
    """EIM: the same external port towards two destinations; symmetric: a different one per destination."""
    net = lab(name)
    with P.udp(net, "client") as client, P.udp(net, "server", A.SERVER_IP) as a, \
            P.udp(net, "server", A.SERVER_ALT_IP) as b, P.udp(net, "peer", A.PEER_IP) as c:
        seen = [P.send_seen_as(client, a), P.send_seen_as(client, b), P.send_seen_as(client, c)]
        assert None not in seen
        ports = {addr[1] for addr in seen if addr}
        local_port = client.getsockname()[1]
    if net.truth.mapping == "address-and-port-dependent":
        assert len(ports) == 3
    else:
        assert len(ports) == 1
        if net.truth.mapping == "no-nat":
            assert ports == {local_port}


def test_full_cone_peer_reaches_client_after_one_outbound_packet(lab: Callable[..., Lab],
                                                                 udp_setup: Callable[[Lab], UdpSetup]) -> None:
    s = udp_setup(lab("full-cone"))
    # A third party (another IP) that the client never contacted gets through, and the client's reply
    # leaves from the same external port (endpoint-independent both ways).
    assert P.delivered(s.peer, s.client, s.ext)
    with P.udp(s.lab, "peer", A.PEER_IP) as listener:
        assert P.send_seen_as(s.client, listener) == s.ext


def test_full_cone_without_outbound_nothing_gets_in(lab: Callable[..., Lab]) -> None:
    net = lab("full-cone")
    with P.udp(net, "client") as client, P.udp(net, "peer", A.PEER_IP, 0) as peer:
        port = client.getsockname()[1]
        assert not P.delivered(peer, client, (A.ROUTER_WAN_IP, port))


def test_open_unsolicited_tcp_reaches_client(lab: Callable[..., Lab]) -> None:
    net = lab("open")
    listener = P.tcp_listener(net, "client", port=0)
    try:
        port = listener.getsockname()[1]
        assert P.tcp_connects(net, "peer", (A.OPEN_CLIENT_IP, port))
        seen = P.tcp_accepts(listener, 1.0)
        assert seen is not None and seen[0] == A.PEER_IP
    finally:
        listener.close()


@pytest.mark.parametrize("name", ["open-firewalled", "port-restricted", "cgnat"])
def test_unsolicited_tcp_is_dropped(lab: Callable[..., Lab], name: str) -> None:
    net = lab(name)
    listener = P.tcp_listener(net, "client", port=0)
    try:
        port = listener.getsockname()[1]
        assert not P.tcp_connects(net, "peer", (net.truth.client_public_ip, port), timeout=0.5)
    finally:
        listener.close()


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_outbound_tcp_works_and_shows_public_address(lab: Callable[..., Lab], name: str) -> None:
    net = lab(name)
    listener = P.tcp_listener(net, "server", A.SERVER_IP, 0)
    try:
        port = listener.getsockname()[1]
        assert P.tcp_connects(net, "client", (A.SERVER_IP, port))
        seen = P.tcp_accepts(listener, 1.0)
        assert seen is not None and seen[0] == net.truth.client_public_ip
    finally:
        listener.close()


@pytest.mark.parametrize("name", ["double-nat", "cgnat"])
def test_two_layers_wan_address_and_private_hops(lab: Callable[..., Lab], name: str) -> None:
    net = lab(name)
    wan = net.exec("router", ["ip", "-4", "-o", "addr", "show", "dev", "wan"]).stdout.split()[3].split("/")[0]
    assert wan == net.truth.nat_wan_addresses[0]
    if name == "cgnat":
        assert ipaddress.ip_address(wan) in ipaddress.ip_network("100.64.0.0/10")
        assert net.truth.cgnat
    else:
        assert ipaddress.ip_address(wan).is_private and wan == A.DOUBLE_NAT_ROUTER_WAN
        assert not net.truth.cgnat
    hops = P.ttl_hops(net, "client", A.SERVER_IP)
    assert hops[:2] == list(net.truth.private_hops)
    assert hops[2:] == [A.INET_SUBSCRIBER_GW, A.SERVER_IP]
    assert net.truth.layers == 2


@pytest.mark.parametrize("name", ["port-restricted", "open"])
def test_hops_single_and_none(lab: Callable[..., Lab], name: str) -> None:
    net = lab(name)
    hops = P.ttl_hops(net, "client", A.SERVER_IP)
    assert hops == [*net.truth.private_hops, A.INET_SUBSCRIBER_GW, A.SERVER_IP]


def test_udp_blocked(lab: Callable[..., Lab]) -> None:
    net = lab("udp-blocked")
    assert net.truth.udp_blocked
    with P.udp(net, "client") as client, P.udp(net, "server", A.SERVER_IP) as server, \
            P.udp(net, "coturn", A.COTURN_IP) as other:
        assert P.send_seen_as(client, server) is None
        assert P.send_seen_as(client, other) is None
    listener = P.tcp_listener(net, "server", A.SERVER_IP, 0)
    try:
        assert P.tcp_connects(net, "client", (A.SERVER_IP, listener.getsockname()[1]))
    finally:
        listener.close()


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_p2p_filtered_ports(lab: Callable[..., Lab], proto: str) -> None:
    net = lab("p2p-filtered")
    assert net.truth.filtered_ports == A.DEFAULT_FILTERED_PORTS
    blocked, free = A.DEFAULT_FILTERED_PORTS[0], 0
    if proto == "udp":
        with P.udp(net, "client") as client, P.udp(net, "server", A.SERVER_IP, blocked) as bad, \
                P.udp(net, "server", A.SERVER_IP, free) as good:
            assert P.send_seen_as(client, bad) is None
            ext = P.send_seen_as(client, good)
            assert ext == (A.ROUTER_WAN_IP, client.getsockname()[1])
        # inbound: from a filtered source port, even to a forwarded port
        net.forward(5000, "udp")
        with P.udp(net, "client", port=5000) as client, P.udp(net, "peer", A.PEER_IP, blocked) as src_bad, \
                P.udp(net, "peer", A.PEER_IP, 0) as src_good:
            assert P.delivered(src_good, client, (A.ROUTER_WAN_IP, 5000))
            assert not P.delivered(src_bad, client, (A.ROUTER_WAN_IP, 5000))
    else:
        for port, ok in ((blocked, False), (free, True)):
            listener = P.tcp_listener(net, "server", A.SERVER_IP, port)
            try:
                assert P.tcp_connects(net, "client", listener.getsockname(), timeout=0.5) is ok
            finally:
                listener.close()


def test_p2p_filtered_custom_ports(lab: Callable[..., Lab]) -> None:
    net = lab("p2p-filtered", filtered_ports=[7777])
    assert net.truth.filtered_ports == (7777,)
    with P.udp(net, "client") as client, P.udp(net, "server", A.SERVER_IP, 7777) as bad, \
            P.udp(net, "server", A.SERVER_IP, A.DEFAULT_FILTERED_PORTS[0]) as now_free:
        assert P.send_seen_as(client, bad) is None
        assert P.send_seen_as(client, now_free) is not None


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_port_forward_carries_inbound(lab: Callable[..., Lab], proto: str) -> None:
    net = lab("port-restricted")
    net.forward(40000, proto, internal_port=40001)
    if proto == "udp":
        with P.udp(net, "client", port=40001) as client, P.udp(net, "peer", A.PEER_IP, 0) as peer:
            assert P.delivered(peer, client, (A.ROUTER_WAN_IP, 40000))
    else:
        listener = P.tcp_listener(net, "client", port=40001)
        try:
            assert P.tcp_connects(net, "peer", (A.ROUTER_WAN_IP, 40000))
        finally:
            listener.close()


def test_reset_removes_forwards_and_bindings(lab: Callable[..., Lab]) -> None:
    net = lab("full-cone")
    net.forward(40010, "udp")
    with P.udp(net, "client", port=40010) as client, P.udp(net, "peer", A.PEER_IP, 0) as peer, \
            P.udp(net, "server", A.SERVER_IP) as server:
        assert P.delivered(peer, client, (A.ROUTER_WAN_IP, 40010))
        net.reset()
        assert not P.delivered(peer, client, (A.ROUTER_WAN_IP, 40010))
        # a learned full-cone mapping is forgotten too
        ext = P.send_seen_as(client, server)
        assert ext is not None and P.delivered(peer, client, ext)
        net.flush_conntrack()
        assert not P.delivered(peer, client, ext)


@pytest.mark.parametrize("name", ["port-restricted", "full-cone", "cgnat"])
def test_no_hairpinning(lab: Callable[..., Lab], name: str) -> None:
    net = lab(name)
    assert net.truth.hairpinning is False
    with P.udp(net, "client") as a, P.udp(net, "client") as b, P.udp(net, "server", A.SERVER_IP) as server:
        ext_b = P.send_seen_as(b, server)
        assert ext_b is not None and P.delivered(server, b, ext_b)
        assert not P.delivered(a, b, ext_b)


@pytest.mark.parametrize("name", ["port-restricted", "full-cone", "double-nat"])
def test_binding_lifetime(lab: Callable[..., Lab], name: str) -> None:
    """With udp_timeout_s=1 a binding that saw one exchange is gone after ~1 s of silence."""
    import time

    net = lab(name, udp_timeout_s=1)
    assert net.truth.binding_lifetime_s == 1.0
    inbound = "peer" if name == "full-cone" else "server"
    with P.udp(net, "client") as client, P.udp(net, "server", A.SERVER_IP) as server, \
            P.udp(net, "peer", A.PEER_IP, 0) as peer:
        sender = peer if inbound == "peer" else server
        ext = P.send_seen_as(client, server)
        assert ext is not None
        time.sleep(0.3)
        assert P.delivered(sender, client, ext, tries=1)
        time.sleep(1.8)  # the binding's lifetime, measured: this wait IS the test
        assert not P.delivered(sender, client, ext, tries=1)


def test_default_binding_lifetime_in_truth(lab: Callable[..., Lab]) -> None:
    net = lab("symmetric")
    assert net.truth.binding_lifetime_s == 30.0 and net.truth.binding_lifetime_stream_s == 120.0
    out = net.exec("router", ["sysctl", "-n", "net.netfilter.nf_conntrack_udp_timeout"]).stdout.strip()
    assert out == "30"
    assert lab("open").truth.binding_lifetime_s is None
