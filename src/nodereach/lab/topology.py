"""Build a scenario's namespaces, links, addresses, routes and nftables rules (no API here: see core.py).

Every internet-side host hangs off bridge br0 in `inet` through a veth created directly between lab
namespaces; the subscriber link (open client, router or isp <-> inet) is a veth, or two TAP devices and
the impairment forwarder when delay/loss is set. Nothing is ever created in the root namespace.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nodereach.lab import addresses as A
from nodereach.lab import netns, rules
from nodereach.lab.netns import LabError, ip_batch
from nodereach.lab.scenarios import Scenario

INTERNET_HOST_ADDRS: dict[str, tuple[str, ...]] = {
    "server": (A.SERVER_IP, A.SERVER_ALT_IP),
    "peer": (A.PEER_IP,),
    "coturn": (A.COTURN_IP, A.COTURN_ALT_IP),
}

BASE_SYSCTL = {
    "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.disable_ipv6": "1",
    "net.ipv4.conf.all.accept_redirects": "0",
    "net.ipv4.conf.default.accept_redirects": "0",
    "net.ipv4.conf.all.send_redirects": "0",
    "net.ipv4.conf.default.send_redirects": "0",
    # TTL-limited probes must see every hop: no ICMP rate limit inside the lab.
    "net.ipv4.icmp_ratelimit": "0",
}
FORWARDING_SYSCTL = {"net.ipv4.ip_forward": "1"}
HOME_LAN_NET = "192.168.1.0/24"
# Routed traffic only: bridged frames between internet hosts must not traverse inet's provider filter.
BRIDGE_SYSCTL = {"net.bridge.bridge-nf-call-iptables": "0", "net.bridge.bridge-nf-call-arptables": "0"}


@dataclass
class Built:
    subscriber: str
    """The host on the subscriber link (client, router or isp)."""
    subscriber_if: str
    forwarder: subprocess.Popen[str] | None


def subscriber_host(scenario: Scenario) -> str:
    return {"open": "client", "single": "router", "double": "isp"}[scenario.topology]


def build(scenario: Scenario, ns: Callable[[str], str], *, delay_ms: float, loss: float,
          filtered_ports: tuple[int, ...], owner_pid: int, impair_log: Path, udp_timeout_s: int,
          udp_stream_timeout_s: int,
          on_spawn: Callable[[subprocess.Popen[str]], None]) -> Built:
    hosts = scenario.hosts
    for host in hosts:
        netns.run(["ip", "netns", "add", ns(host)])
        sysctl = dict(BASE_SYSCTL)
        if host in ("inet", "router", "isp"):
            sysctl |= FORWARDING_SYSCTL
        if host in ("router", "isp", "client"):
            # NAT binding / firewall state lifetime for UDP, explicit so the ground truth does not depend on
            # the host: `udp` for a flow that saw one exchange, `stream` once it carried traffic for > 2 s.
            sysctl |= {"net.netfilter.nf_conntrack_udp_timeout": str(udp_timeout_s),
                       "net.netfilter.nf_conntrack_udp_timeout_stream": str(udp_stream_timeout_s)}
        if host == "inet":
            sysctl |= BRIDGE_SYSCTL
        netns.write_sysctl(ns(host), sysctl)

    inet = ns("inet")
    cmds = ["link set lo up", "link add br0 type bridge", f"addr add {A.INET_SUBSCRIBER_GW}/24 dev br0",
            f"addr add {A.INET_SERVER_GW}/24 dev br0", "link set br0 up"]
    for host in INTERNET_HOST_ADDRS:
        cmds += [f"link add v-{host} type veth peer name eth0 netns {ns(host)}",
                 f"link set v-{host} master br0", f"link set v-{host} up"]

    sub = subscriber_host(scenario)
    sub_if = "eth0" if sub == "client" else "wan"
    forwarder = None
    if delay_ms > 0 or loss > 0:
        forwarder = _start_forwarder(ns(sub), sub_if, inet, f"v-{sub}", delay_ms, loss, owner_pid, impair_log)
        on_spawn(forwarder)
    else:
        cmds.append(f"link add v-{sub} type veth peer name {sub_if} netns {ns(sub)}")
    cmds += [f"link set v-{sub} master br0", f"link set v-{sub} up"]
    if scenario.topology == "single":
        netns.run(["ip", "-n", ns("router"), "link", "add", "lan", "type", "veth", "peer", "name", "eth0",
                   "netns", ns("client")])
    elif scenario.topology == "double":
        netns.run(["ip", "-n", ns("isp"), "link", "add", "lan", "type", "veth", "peer", "name", "wan",
                   "netns", ns("router")])
        netns.run(["ip", "-n", ns("router"), "link", "add", "lan", "type", "veth", "peer", "name", "eth0",
                   "netns", ns("client")])
    ip_batch(inet, cmds)

    for host, addrs in INTERNET_HOST_ADDRS.items():
        ip_batch(ns(host), ["link set lo up", *[f"addr add {a}/24 dev eth0" for a in addrs], "link set eth0 up",
                            f"route add default via {A.INET_SERVER_GW}"])

    if scenario.topology == "open":
        _iface(ns("client"), "eth0", A.OPEN_CLIENT_IP, A.INET_SUBSCRIBER_GW)
        if scenario.client_firewall:
            netns.nft(ns("client"), rules.host_firewall())
    else:
        router_wan, router_gw, _ = scenario.router_wan()
        _iface(ns("client"), "eth0", A.CLIENT_IP, A.HOME_LAN_GW)
        ip_batch(ns("router"), ["link set lo up", f"addr add {A.HOME_LAN_GW}/24 dev lan", "link set lan up",
                                f"addr add {router_wan}/24 dev wan", "link set wan up",
                                f"route add default via {router_gw}"])
        netns.nft(ns("router"), rules.router(scenario.recipe or "port-restricted", HOME_LAN_NET,
                                                 learn_timeout_s=udp_timeout_s))
        if scenario.topology == "double":
            isp_lan = router_gw
            ip_batch(ns("isp"), ["link set lo up", f"addr add {isp_lan}/24 dev lan", "link set lan up",
                                 f"addr add {A.ISP_WAN_IP}/24 dev wan", "link set wan up",
                                 f"route add default via {A.INET_SUBSCRIBER_GW}"])
            isp_net = str(ipaddress.ip_network(f"{isp_lan}/24", strict=False))
            netns.nft(ns("isp"), rules.router("port-restricted", isp_net, learn_timeout_s=udp_timeout_s))
    netns.nft(inet, rules.provider(udp_blocked=scenario.udp_blocked,
                                   filtered_ports=filtered_ports if scenario.p2p_filter else ()))
    if forwarder is not None:
        pin_neighbours(ns, sub, sub_if, subscriber_ip(scenario))
    return Built(subscriber=sub, subscriber_if=sub_if, forwarder=forwarder)


def subscriber_ip(scenario: Scenario) -> str:
    return {"open": A.OPEN_CLIENT_IP, "single": A.ROUTER_WAN_IP, "double": A.ISP_WAN_IP}[scenario.topology]


def _mac(ns_name: str, dev: str) -> str:
    out = netns.run(["ip", "-n", ns_name, "-j", "link", "show", "dev", dev]).stdout
    return str(json.loads(out)[0]["address"])


def pin_neighbours(ns: Callable[[str], str], sub: str, sub_if: str, sub_ip: str) -> None:
    """Permanent ARP entries across an impaired link: with 100 ms RTT, resolving a neighbour would drop
    the first burst (the unresolved queue holds ~200 small packets) and blur the configured loss."""
    inet = ns("inet")
    ip_batch(ns(sub), [f"neigh replace {A.INET_SUBSCRIBER_GW} lladdr {_mac(inet, 'br0')} dev {sub_if} "
                       "nud permanent"])
    ip_batch(inet, [f"neigh replace {sub_ip} lladdr {_mac(ns(sub), sub_if)} dev br0 nud permanent"])


def _iface(ns_name: str, dev: str, addr: str, gw: str) -> None:
    ip_batch(ns_name, ["link set lo up", f"addr add {addr}/24 dev {dev}", f"link set {dev} up",
                       f"route add default via {gw}"])


def _start_forwarder(sub_ns: str, sub_if: str, inet_ns: str, inet_if: str, delay_ms: float, loss: float,
                     owner_pid: int, log_path: Path) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "nodereach.lab.impair", "--ns-a", sub_ns, "--tap-a", sub_if, "--ns-b", inet_ns,
            "--tap-b", inet_if, "--delay-ms", str(delay_ms), "--loss", str(loss), "--owner-pid", str(owner_pid)]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 10.0
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == "ready" or proc.poll() is not None:
            break
    if line.strip() != "ready":
        proc.kill()
        err = log_path.read_text()
        raise LabError(f"link impairment forwarder did not start: {err.strip()[-300:]}")
    return proc
