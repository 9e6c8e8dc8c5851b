"""`nodereach watch` on a dual-stack line: the IPv6 home router of the lab (RFC 6092 firewall dropping
unsolicited inbound IPv6, miniupnpd with PCP and UPnP WANIPv6FirewallControl), `nodereach serve` with two
addresses per family, a real Prometheus scraping the watcher.

`--keep-mapped` runs a keeper per family: an IPv4 port mapping and an IPv6 pinhole for the same port, each with
its own lease series (`family` label) and its own events; a router that restarts and forgets both gets both
back within 5 s of answering again.
"""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from lab_fixtures import Ipv6HomeRouter
from nodereach.lab import Lab
from nodereach.lab import addresses as A
from nodereach.lab import probe as P
from nodereach.lab.rules import MINIUPNPD_CHAIN6, TABLE6
from portmap_helpers import EPOCH_VISIBLE_S, WAN, restart_miniupnpd_losing_state
from serve_lab_helpers import IPV6_PAIR, serving
from watch_lab_helpers import FAST, WATCH_METRICS, Prometheus, TcpNode, Watching

pytestmark = pytest.mark.lab

SLACK_S = 3.0
"""Two shared cores: what a process may wait for the CPU (only added to what the test waits for scrapes and
checks, never to the 5 s the feature promises)."""


def lease(port: int, family: int) -> str:
    return f'nodereach_mapping_lease_remaining_seconds{{port="{port}",protocol="tcp",family="{family}"}}'


def connects(gw: Ipv6HomeRouter, address: str, port: int) -> bool:
    """A TCP connection from the internet (`peer`) to address:port completes (the node's backlog accepts it)."""
    src = A.PEER_IP6 if ":" in address else A.PEER_IP
    return P.tcp_connects(gw.lab, "peer", (address, port), timeout=1.0, src=src)


async def test_keep_mapped_per_family_router_restart(ipv6_home_router: Callable[..., Ipv6HomeRouter],
                                                     tmp_path: Path) -> None:
    gw = ipv6_home_router("ipv6-firewalled")
    net = gw.lab
    port = 31601
    c = {"server": [A.SERVER_IP, A.SERVER_IP6], "port": [f"{port}/tcp"], **FAST, "keep-mapped": True, "lease": 120}
    node = TcpNode(net, "client", port, dual_stack=True)
    try:
        assert not await asyncio.to_thread(connects, gw, gw.client_ip6, port)  # the IPv6 firewall drops it
        with serving(net, tmp_path, *IPV6_PAIR):
            prom = Prometheus(net, "client", tmp_path)
            w = Watching(net, "client", tmp_path, c)
            try:
                for family in (4, 6):
                    prom.wait(lease(port, family), 30, lambda r: len(r) == 1 and r[0][1] > 60)
                    [(labels, _)] = prom.query(lease(port, family))
                    assert labels["method"] == "pcp", labels
                assert await asyncio.to_thread(connects, gw, gw.client_ip6, port), "the pinhole carries no traffic"
                # Both families reachable through what the keepers opened: the check's verdict is `reachable`.
                prom.wait('nodereach_port_reachable{family="6"}', 30 + SLACK_S, lambda r: len(r) == 1 and r[0][1] == 1)
                prom.wait("nodereach_reachable", 30, lambda r: len(r) == 1 and r[0][1] == 1)
                await asyncio.sleep(EPOCH_VISIBLE_S)  # until the epoch rules can see a restart
                t0 = time.time()
                await asyncio.to_thread(restart_miniupnpd_losing_state, net)  # returns once it answers
                answering = time.time()
                for family, external in ((4, f"{WAN}:{port}"), (6, f"[{gw.client_ip6}]:{port}")):
                    def of(e: dict[str, object], f: int = family) -> bool:
                        return e.get("family") == f
                    lost = w.wait_event("mapping-lost", 5 + SLACK_S, after=t0, pred=of)
                    back = w.wait_event("mapping-restored", 5 + SLACK_S, after=t0, pred=of)
                    assert (lost["port"], lost["protocol"], lost["before"], lost["after"]) == (port, "tcp", external,
                                                                                                None)
                    assert (back["after"], back["method"]) == (external, "pcp")
                    restored_after = back["time"] - answering
                    print(f"\nIPv{family}: restored {restored_after:.2f} s after the router answered again")
                    assert restored_after <= 5.0, (family, restored_after)
                    assert ("pinhole" in lost["message"]) == (family == 6), lost["message"]
                assert await asyncio.to_thread(connects, gw, gw.client_ip6, port)
                for family in (4, 6):
                    prom.wait(lease(port, family), 1 + SLACK_S, lambda r: len(r) == 1 and r[0][1] > 60)
                assert prom.query('ALERTS{alertname="NodereachMappingLost",alertstate="firing"}') == []
                assert w.kinds(after=t0).count("mapping-lost") == 2  # one per family, no more
            finally:
                code = w.stop()
                prom.stop()
        assert code == 0
        assert w.events()[-1]["kind"] == "stopped"
        assert gw.pinhole_rules() == []  # the pinhole is deleted on stop
        assert not await asyncio.to_thread(connects, gw, gw.client_ip6, port)
    finally:
        node.close()
        net.exec("router", ["nft", "flush", "chain", "inet", TABLE6, MINIUPNPD_CHAIN6], check=False)


def metrics(net: Lab) -> dict[str, float]:
    """The watcher's exporter, read in the node's namespace: series text -> value."""
    def get() -> str:
        with urllib.request.urlopen(f"http://{WATCH_METRICS}/metrics", timeout=3) as r:
            return str(r.read().decode())

    out: dict[str, float] = {}
    for line in net.call_in("client", get).splitlines():
        if line.startswith("nodereach_") and " " in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def test_ipv4_only_node_on_a_dual_stack_line(lab: Callable[..., Lab], tmp_path: Path) -> None:
    """Servers of both families, a node that listens on IPv4 only: its IPv6 port is no port of the node (the
    check says `ipv4-only`), so no `port-unreachable`, no IPv6 series, `nodereach_reachable` 1. When the node
    also listens on IPv6 (no firewall here), the IPv6 port appears as reachable, announced as good news."""
    net = lab("ipv6-open")
    port = 31611
    c = {"server": [A.SERVER_IP, A.SERVER_IP6], "port": [f"{port}/tcp"], **FAST, "check-interval": 10}
    net.forward(port, "tcp")  # IPv4 is NATed: the node's port is forwarded (IPv6 has no filter here)
    node = TcpNode(net, "client", port)
    six: socket.socket | None = None
    with serving(net, tmp_path, *IPV6_PAIR):
        w = Watching(net, "client", tmp_path, c)
        try:
            first = w.wait_event("started", 15)["time"]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # two checks: the baseline and the periodic one after it
                m = await asyncio.to_thread(metrics, net)
                if m.get("nodereach_check_duration_seconds_count", 0) >= 2:
                    break
                await asyncio.sleep(0.5)
            m = await asyncio.to_thread(metrics, net)
            assert m["nodereach_check_duration_seconds_count"] >= 2, m
            assert m["nodereach_reachable"] == 1, (m, w.kinds())
            assert m[f'nodereach_port_reachable{{family="4",port="{port}",protocol="tcp"}}'] == 1
            assert not any('family="6"' in k for k in m if k.startswith("nodereach_port_reachable")), m
            assert "port-unreachable" not in w.kinds(after=first) and "reachability-changed" not in w.kinds()
            # the node listens on IPv6 too now (its IPv4 socket stays): reachable over both families
            six = net.socket("client", socket.AF_INET6, socket.SOCK_STREAM)
            six.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            six.bind(("::", port))
            six.listen(16)
            t0 = time.time()
            ev = w.wait_event("port-reachable", 2 * 11 + 2 + SLACK_S, after=t0)  # two periodic checks agree
            assert (ev["family"], ev["before"], ev["after"]) == (6, None, True)
            m = await asyncio.to_thread(metrics, net)
            assert m[f'nodereach_port_reachable{{family="6",port="{port}",protocol="tcp"}}'] == 1
            assert "port-unreachable" not in w.kinds()
        finally:
            code = w.stop()
            node.close()
            if six is not None:
                six.close()
    assert code == 0
