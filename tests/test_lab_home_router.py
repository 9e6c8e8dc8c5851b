"""The --home-router variant: miniupnpd on `router` maps ports for real clients (upnpc, natpmpc), and the
mappings carry inbound traffic from the internet."""

from __future__ import annotations

import os
import re
import shutil
import socket
from collections.abc import Callable

import pytest

from nodereach.lab import Lab
from nodereach.lab import addresses as A
from nodereach.lab import probe as P
from nodereach.lab.daemons import MINIUPNPD_HTTP_PORT, NATPMP_PORT

pytestmark = pytest.mark.lab
ROOT_DESC = f"http://{A.HOME_LAN_GW}:{MINIUPNPD_HTTP_PORT}/rootDesc.xml"
UPNPC = ["upnpc", "-i", "-u", ROOT_DESC]  # the description URL skips SSDP (tested on its own below)


def _need(binary: str) -> None:
    if shutil.which(binary) is None:
        pytest.skip(f"{binary} not installed")


def test_upnpc_maps_udp_and_inbound_arrives(lab: Callable[..., Lab]) -> None:
    _need("upnpc")
    net = lab("port-restricted", home_router=True)
    out = net.exec("client", ["upnpc", "-i", "-e", "nrl-test", "-a", A.CLIENT_IP, "41000", "41000", "UDP"],
                   timeout=20).stdout
    assert "is redirected to internal 192.168.1.10:41000" in out
    assert f"ExternalIPAddress = {A.ROUTER_WAN_IP}" in out
    try:
        with P.udp(net, "client", port=41000) as client, P.udp(net, "peer", A.PEER_IP, 0) as peer:
            assert P.delivered(peer, client, (A.ROUTER_WAN_IP, 41000))
    finally:
        net.exec("client", [*UPNPC, "-d", "41000", "UDP"], timeout=20, check=False)
    with P.udp(net, "client", port=41000) as client, P.udp(net, "peer", A.PEER_IP, 0) as peer:
        assert not P.delivered(peer, client, (A.ROUTER_WAN_IP, 41000))


def test_upnpc_maps_tcp(lab: Callable[..., Lab]) -> None:
    _need("upnpc")
    net = lab("port-restricted", home_router=True)
    net.exec("client", [*UPNPC, "-a", A.CLIENT_IP, "41001", "41001", "TCP"], timeout=20)
    listener = P.tcp_listener(net, "client", port=41001)
    try:
        assert P.tcp_connects(net, "peer", (A.ROUTER_WAN_IP, 41001))
        seen = P.tcp_accepts(listener, 1.0)
        assert seen is not None and seen[0] == A.PEER_IP
    finally:
        listener.close()
        net.exec("client", [*UPNPC, "-d", "41001", "TCP"], timeout=20, check=False)


def test_natpmp_mapping_survives_miniupnpd_restart(lab: Callable[..., Lab]) -> None:
    _need("natpmpc")
    net = lab("port-restricted", home_router=True)
    out = net.exec("client", ["natpmpc", "-g", A.HOME_LAN_GW, "-a", "42000", "42000", "udp", "600"], timeout=20).stdout
    assert re.search(r"Mapped public port 42000 protocol UDP to local port 42000", out)
    assert f"Public IP address : {A.ROUTER_WAN_IP}" in out
    net.restart_miniupnpd()  # mid-lease: the lease file brings the mapping back
    with P.udp(net, "client", port=42000) as client, P.udp(net, "peer", A.PEER_IP, 0) as peer:
        assert P.delivered(peer, client, (A.ROUTER_WAN_IP, 42000))
    net.exec("client", ["natpmpc", "-g", A.HOME_LAN_GW, "-a", "42000", "42000", "udp", "0"], timeout=20)


def test_protocol_subsets(lab: Callable[..., Lab]) -> None:
    net = lab("port-restricted", home_router=True)
    net.start_miniupnpd(upnp=False, natpmp=True)
    assert not P.tcp_connects(net, "client", (A.HOME_LAN_GW, MINIUPNPD_HTTP_PORT), timeout=0.5)
    net.start_miniupnpd(upnp=True, natpmp=False)
    assert P.tcp_connects(net, "client", (A.HOME_LAN_GW, MINIUPNPD_HTTP_PORT))
    with P.udp(net, "client") as sock:
        sock.sendto(b"\x00\x00", (A.HOME_LAN_GW, NATPMP_PORT))
        assert P.recv(sock, 0.5) is None
    net.stop_miniupnpd()
    assert not P.tcp_connects(net, "client", (A.HOME_LAN_GW, MINIUPNPD_HTTP_PORT), timeout=0.5)


def test_ssdp_discovery_from_client(lab: Callable[..., Lab]) -> None:
    net = lab("port-restricted", home_router=True)
    with P.udp(net, "client") as sock:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
        msearch = (b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\n"
                   b"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n")
        sock.sendto(msearch, ("239.255.255.250", 1900))
        got = P.recv(sock, 2.0)
    assert got is not None
    assert f"http://{A.HOME_LAN_GW}:{MINIUPNPD_HTTP_PORT}/rootDesc.xml".encode() in got[0]


def test_set_router_wan_address(private_lab: Callable[..., Lab]) -> None:
    net = private_lab("port-restricted")
    net.set_router_wan_address("198.51.100.7")
    assert net.truth.client_public_ip == "198.51.100.7"
    with P.udp(net, "client") as client, P.udp(net, "server", A.SERVER_IP) as server:
        seen = P.send_seen_as(client, server)
    assert seen is not None and seen[0] == "198.51.100.7"


def test_home_router_needs_a_router() -> None:
    from nodereach.errors import UsageError

    with pytest.raises(UsageError):
        Lab("open", home_router=True)


def test_home_router_truth_fields(lab: Callable[..., Lab]) -> None:
    net = lab("port-restricted", home_router=True)
    assert net.truth.port_mapping == ("upnp", "natpmp", "pcp") and net.truth.port_mapping_works
    assert lab("port-restricted").truth.port_mapping == ()


def test_udp_blocked_has_no_home_router() -> None:
    from nodereach.errors import UsageError

    with pytest.raises(UsageError, match="STUN"):
        Lab("udp-blocked", home_router=True)


def test_behind_cgnat_mappings_are_refused(lab: Callable[..., Lab]) -> None:
    """miniupnpd's STUN check sees the provider NAT and disables forwarding: the protocols answer, the
    external address is the provider's, and mapping requests fail (UPnP 501, NAT-PMP error)."""
    _need("upnpc")
    _need("natpmpc")
    net = lab("cgnat", home_router=True)
    assert not net.truth.port_mapping_works
    up = net.exec("client", [*UPNPC, "-a", A.CLIENT_IP, "41002", "41002", "UDP"], timeout=20, check=False)
    assert f"ExternalIPAddress = {A.ISP_WAN_IP}" in up.stdout
    assert "failed with code 501" in up.stdout
    pmp = net.exec("client", ["natpmpc", "-g", A.HOME_LAN_GW, "-a", "42002", "42002", "udp", "60"], timeout=20,
                   check=False)
    assert f"Public IP address : {A.ISP_WAN_IP}" in pmp.stdout
    assert "Mapped public port" not in pmp.stdout
    with P.udp(net, "client", port=41002) as client, P.udp(net, "peer", A.PEER_IP, 0) as peer:
        assert not P.delivered(peer, client, (A.ISP_WAN_IP, 41002))


def _pcp_map(internal_port: int, lifetime: int, nonce: bytes) -> bytes:
    """A PCP MAP request (RFC 6887 section 11.1) for UDP, built by hand: the lab test needs no PCP client."""
    client = b"\x00" * 10 + b"\xff\xff" + socket.inet_aton(A.CLIENT_IP)
    header = bytes([2, 1, 0, 0]) + lifetime.to_bytes(4, "big") + client
    body = nonce + bytes([17, 0, 0, 0]) + internal_port.to_bytes(2, "big") + internal_port.to_bytes(2, "big")
    return header + body + b"\x00" * 10 + b"\xff\xff" + b"\x00" * 4


def test_pcp_map_and_inbound_arrives(lab: Callable[..., Lab]) -> None:
    net = lab("port-restricted", home_router=True)
    nonce = os.urandom(12)
    with P.udp(net, "client", port=43000) as client, P.udp(net, "peer", A.PEER_IP, 0) as peer:
        client.sendto(_pcp_map(43000, 120, nonce), (A.HOME_LAN_GW, NATPMP_PORT))
        got = P.recv(client, 2.0)
        assert got is not None
        reply = got[0]
        assert len(reply) >= 60 and reply[0] == 2 and reply[1] == 0x81
        assert reply[3] == 0, f"PCP result code {reply[3]}"
        assert reply[24:36] == nonce
        external_port = int.from_bytes(reply[42:44], "big")
        assert socket.inet_ntoa(reply[56:60]) == A.ROUTER_WAN_IP
        assert P.delivered(peer, client, (A.ROUTER_WAN_IP, external_port))
        client.sendto(_pcp_map(43000, 0, nonce), (A.HOME_LAN_GW, NATPMP_PORT))  # delete
        deleted = P.recv(client, 2.0)
        assert deleted is not None and deleted[0][3] == 0
