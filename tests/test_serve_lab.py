"""`nodereach serve` in the lab: dial-back through real kernel NAT and firewalls, and no reflection/scanning.

The server runs exactly `nodereach serve --address 203.0.113.10 --alt-address 203.0.113.11` (default ports)
in the lab's `server` host; clients ask from behind the scenario's NAT.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest

from nodereach.lab import Lab, netns
from nodereach.lab import addresses as A
from nodereach.stun.message import parse_message
from serve_lab_helpers import http_in, nft_counters, probe_from, serving

pytestmark = pytest.mark.lab


def stun_binding(dst: tuple[str, int]) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """(XOR-MAPPED-ADDRESS, OTHER-ADDRESS) of one Binding request, from the calling namespace."""
    txid = os.urandom(12)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        s.sendto(b"\x00\x01\x00\x00\x21\x12\xa4\x42" + txid, dst)
        msg = parse_message(s.recv(2048))
    assert msg.transaction_id == txid
    return msg.xor_mapped_address, msg.other_address


def node_listener(lab: Lab, kind: socket.SocketKind, port: int = 0) -> socket.socket:
    s = lab.socket("client", socket.AF_INET, kind)
    s.bind(("0.0.0.0", port))
    if kind == socket.SOCK_STREAM:
        s.listen(8)
    return s


def free_client_port(lab: Lab, kind: socket.SocketKind) -> int:
    with node_listener(lab, kind) as s:
        return s.getsockname()[1]


async def test_open_host_default_ports(private_lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lab = private_lab("open")
    with serving(lab, tmp_path):
        mapped, other = lab.call_in("client", stun_binding, (A.SERVER_IP, 3478))
        assert mapped is not None and mapped[0] == A.OPEN_CLIENT_IP
        assert other == (A.SERVER_ALT_IP, 3479)  # full RFC 5780 with no flag but the two addresses
        status, info = http_in(lab, "client", "/v1/info")
        assert status == 200 and info["stun"]["rfc5780"] is True  # type: ignore[index]

        port = free_client_port(lab, socket.SOCK_STREAM)
        r = await probe_from(lab, "client", port, "tcp")
        assert (r.reachable, r.reason, r.listener, r.observed_address) == (True, "ok", "nodereach", A.OPEN_CLIENT_IP)
        r = await probe_from(lab, "client", port, "tcp", listen=False)
        assert (r.reachable, r.reason) == (False, "refused")
        with node_listener(lab, socket.SOCK_STREAM) as node:
            r = await probe_from(lab, "client", node.getsockname()[1], "tcp")
        assert (r.reachable, r.reason, r.listener) == (True, "ok", "node")

        uport = free_client_port(lab, socket.SOCK_DGRAM)
        r = await probe_from(lab, "client", uport, "udp")
        assert (r.reachable, r.reason, r.received) == (True, "ok", True)
        r = await probe_from(lab, "client", uport, "udp", listen=False)
        assert (r.reachable, r.reason) == (False, "refused")


async def test_firewalled_host_times_out_with_reason(private_lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lab = private_lab("open-firewalled")
    with serving(lab, tmp_path):
        for proto, kind in (("tcp", socket.SOCK_STREAM), ("udp", socket.SOCK_DGRAM)):
            start = time.monotonic()
            r = await probe_from(lab, "client", free_client_port(lab, kind), proto, timeout=2.0)
            took = time.monotonic() - start
            assert (r.reachable, r.reason, r.received) == (False, "timeout", False), r
            assert took < 2.5


async def test_port_restricted_nat_then_forward(private_lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lab = private_lab("port-restricted")
    with serving(lab, tmp_path):
        tport = free_client_port(lab, socket.SOCK_STREAM)
        uport = free_client_port(lab, socket.SOCK_DGRAM)
        r = await probe_from(lab, "client", tport, "tcp", timeout=2.0)
        assert (r.reachable, r.reason, r.observed_address) == (False, "timeout", A.ROUTER_WAN_IP), r
        r = await probe_from(lab, "client", uport, "udp", timeout=2.0)
        assert (r.reachable, r.reason, r.received) == (False, "timeout", False), r
        lab.forward(tport, "tcp")
        lab.forward(uport, "udp")
        r = await probe_from(lab, "client", tport, "tcp")
        assert (r.reachable, r.reason, r.received) == (True, "ok", True), r
        r = await probe_from(lab, "client", uport, "udp")
        assert (r.reachable, r.reason, r.received) == (True, "ok", True), r
        # A forward to where nothing listens: the NAT passes the SYN, the client's kernel refuses.
        closed = free_client_port(lab, socket.SOCK_STREAM)
        lab.forward(closed, "tcp")
        r = await probe_from(lab, "client", closed, "tcp", listen=False)
        assert (r.reachable, r.reason) == (False, "refused"), r


# IPv6 neighbour discovery and MLD reports are the kernel's own (the lab is dual-stack: after its addresses
# come up it repeats an MLDv2 report of their solicited-node groups, 116 bytes, at random within a second or
# so), never a probe: one was counted as "other" once in a reruns-off full run. Everything else counts.
COUNT_RULES = """
table inet nrtest {{
    counter other {{}}
    counter to_requester_udp {{}}
    counter to_requester_syn {{}}
    set kernel6 {{
        type icmpv6_type
        elements = {{ nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-report,
                      mld2-listener-report }}
    }}
    chain out {{
        type filter hook output priority 0; policy accept;
        ip daddr != {req} counter name other
        ip6 daddr != ::1 meta l4proto != ipv6-icmp counter name other
        ip6 daddr != ::1 icmpv6 type != @kernel6 counter name other
        ip daddr {req} udp sport != {{3478, 3479}} counter name to_requester_udp
        ip daddr {req} tcp flags & (syn | ack) == syn counter name to_requester_syn
    }}
}}
"""
PEER_RULES = """
table inet nrtest {
    counter from_server {}
    chain in {
        type filter hook input priority 0; policy accept;
        ip saddr { 203.0.113.10, 203.0.113.11 } counter name from_server
    }
}
"""


async def test_foreign_address_and_scan_refused_no_packet_elsewhere(private_lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lab = private_lab("open")
    with serving(lab, tmp_path):
        netns.nft(lab.ns("server"), COUNT_RULES.format(req=A.OPEN_CLIENT_IP))
        netns.nft(lab.ns("peer"), PEER_RULES)
        thrown = {"foreign-field": 0, "forwarded-for": 0, "scan": 0}
        for field in ("address", "host", "ip", "target", "destination"):
            status, doc = http_in(lab, "client", "/v1/probe", {"port": 30303, "protocol": "tcp", field: A.PEER_IP})
            thrown["foreign-field"] += 1
            assert status == 403 and doc["error"] == "foreign-address"  # type: ignore[index]
        # X-Forwarded-For from an untrusted client is ignored: the probe goes to the requester, not the peer.
        status, doc = http_in(lab, "client", "/v1/probe", {"port": 30303, "protocol": "tcp"},
                              headers={"X-Forwarded-For": A.PEER_IP})
        thrown["forwarded-for"] += 1
        assert status == 200 and doc["address"] == A.OPEN_CLIENT_IP  # type: ignore[index]
        # A scan: many distinct UDP ports. The server stops after max_ports_per_window (16).
        admitted, datagrams = 0, 0
        for port in range(41000, 41040):
            status, doc = http_in(lab, "client", "/v1/probe", {"port": port, "protocol": "udp"})
            thrown["scan"] += 1
            if status == 200:
                admitted += 1
                datagrams += doc["bytes_sent"] // 51  # type: ignore[index]  # 23-byte probe + 28 header
                assert doc["bytes_sent"] <= doc["request_bytes"]  # type: ignore[index]
            else:
                assert status == 429 and doc["error"] in ("too-many-ports", "rate-limited-address")  # type: ignore[index]
        srv = nft_counters(lab, "server", "nrtest")
        peer = nft_counters(lab, "peer", "nrtest")
        print(f"\nthrown: {thrown}; admitted scan probes: {admitted}; server counters: {srv}; peer: {peer}")
        assert 0 < admitted <= 16
        assert srv["other"][0] == 0, "a packet left the server toward someone other than the requester"
        assert peer["from_server"][0] == 0
        assert srv["to_requester_udp"][0] == datagrams  # exactly the probes the answers account for
        assert srv["to_requester_syn"][0] == 1  # only the one admitted TCP probe (the XFF request)


async def test_cgnat_home_forward_does_not_help(private_lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Behind CGNAT the server sees the provider's address; a forward on the home router cannot make the port
    reachable, and the dial-back says so (timeout), instead of a false 'reachable'."""
    lab = private_lab("cgnat")
    with serving(lab, tmp_path) as proc:
        tport = free_client_port(lab, socket.SOCK_STREAM)
        uport = free_client_port(lab, socket.SOCK_DGRAM)
        lab.forward(tport, "tcp")
        lab.forward(uport, "udp")
        r = await probe_from(lab, "client", tport, "tcp", timeout=2.0)
        assert (r.reachable, r.reason, r.observed_address) == (False, "timeout", A.ISP_WAN_IP), r
        r = await probe_from(lab, "client", uport, "udp", timeout=2.0)
        assert (r.reachable, r.reason, r.received) == (False, "timeout", False), r

        # SIGTERM while a probe is in flight (the CGNAT drops it: it runs to its deadline): answered, exit 0.
        pending = asyncio.ensure_future(probe_from(lab, "client", tport, "tcp", timeout=3.0))
        await asyncio.sleep(0.5)
        proc.terminate()
        r = await pending
        assert (r.reachable, r.reason) == (False, "timeout"), r
        assert await asyncio.to_thread(proc.wait, 10) == 0
