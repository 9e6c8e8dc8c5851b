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
from nodereach.lab.scenarios import INTERNET_HOSTS, Scenario

INTERNET_HOST_ADDRS: dict[str, tuple[str, ...]] = {
    "server": (A.SERVER_IP, A.SERVER_ALT_IP),
    "peer": (A.PEER_IP,),
    "coturn": (A.COTURN_IP, A.COTURN_ALT_IP),
}
INTERNET_HOST_ADDRS6: dict[str, tuple[str, ...]] = {
    "server": (A.SERVER_IP6, A.SERVER_ALT_IP6),
    "peer": (A.PEER_IP6,),
    "coturn": (A.COTURN_IP6, A.COTURN_ALT_IP6),
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
# IPv6 where a host has it: static addresses only (no router advertisements, no SLAAC, no redirects), and no
# duplicate address detection: a tentative address cannot be bound (EADDRNOTAVAIL) for ~1-2 s, and every
# address in the lab is unique by construction. `default.*` is set before any link exists in the namespace,
# so link-local addresses skip DAD too; global addresses are added with `nodad` as well.
IPV6_SYSCTL = {
    **{f"net.ipv6.conf.{scope}.{key}": value for scope in ("all", "default") for key, value in (
        ("disable_ipv6", "0"), ("accept_dad", "0"), ("dad_transmits", "0"), ("accept_ra", "0"), ("autoconf", "0"),
        ("accept_redirects", "0"))},
    # Hop-limited probes must see every hop, as for IPv4.
    "net.ipv6.icmp.ratelimit": "0",
}
FORWARDING_SYSCTL = {"net.ipv4.ip_forward": "1"}
FORWARDING6_SYSCTL = {"net.ipv6.conf.all.forwarding": "1"}
HOME_LAN_NET = "192.168.1.0/24"
# Routed traffic only: bridged frames between internet hosts must not traverse inet's provider filter.
BRIDGE_SYSCTL = {"net.bridge.bridge-nf-call-iptables": "0", "net.bridge.bridge-nf-call-ip6tables": "0",
                 "net.bridge.bridge-nf-call-arptables": "0"}


@dataclass
class Built:
    subscriber: str
    """The host on the subscriber link (client, router or isp)."""
    subscriber_if: str
    forwarder: subprocess.Popen[str] | None


def subscriber_host(scenario: Scenario) -> str:
    return {"open": "client", "single": "router", "double": "isp"}[scenario.topology]


def has_ipv6(scenario: Scenario, host: str) -> bool:
    """The internet is always dual-stack; the subscriber's hosts only in an IPv6 scenario."""
    return host in INTERNET_HOSTS or scenario.has_ipv6


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
        if has_ipv6(scenario, host):
            sysctl |= IPV6_SYSCTL
            if host in ("inet", "router", "isp"):
                sysctl |= FORWARDING6_SYSCTL
        netns.write_sysctl(ns(host), sysctl)

    inet = ns("inet")
    cmds = ["link set lo up", "link add br0 type bridge", f"addr add {A.INET_SUBSCRIBER_GW}/24 dev br0",
            f"addr add {A.INET_SERVER_GW}/24 dev br0", f"addr add {A.INET6_SUBSCRIBER_GW}/64 dev br0 nodad",
            f"addr add {A.INET6_SERVER_GW}/64 dev br0 nodad", "link set br0 up",
            *_inet_routes6(scenario)]
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
        ip_batch(ns(host), ["link set lo up", *[f"addr add {a}/24 dev eth0" for a in addrs],
                            *[f"addr add {a}/64 dev eth0 nodad" for a in INTERNET_HOST_ADDRS6[host]],
                            "link set eth0 up", f"route add default via {A.INET_SERVER_GW}",
                            f"route add ::/0 via {A.INET6_SERVER_GW}"])

    v6 = scenario.ipv6
    if scenario.topology == "open":
        _iface(ns("client"), "eth0", A.OPEN_CLIENT_IP, A.INET_SUBSCRIBER_GW)
        if scenario.client_firewall:
            netns.nft(ns("client"), rules.host_firewall())
    else:
        router_wan, router_gw, _ = scenario.router_wan()
        lan_gw6 = A.NPT_LAN_GW6 if scenario.nptv6 else A.HOME_LAN_GW6
        _iface(ns("client"), "eth0", A.CLIENT_IP, A.HOME_LAN_GW,
               v6=(v6.client_address, lan_gw6) if v6 is not None else None)
        router_cmds = ["link set lo up", f"addr add {A.HOME_LAN_GW}/24 dev lan", "link set lan up",
                       f"addr add {router_wan}/24 dev wan", "link set wan up", f"route add default via {router_gw}"]
        if v6 is not None:
            wan6, gw6 = scenario.router_wan6()
            router_cmds += [f"addr add {lan_gw6}/64 dev lan nodad", f"addr add {wan6}/64 dev wan nodad",
                            f"route add ::/0 via {gw6}"]
        ip_batch(ns("router"), router_cmds)
        ruleset = rules.router(scenario.recipe or "port-restricted", HOME_LAN_NET, learn_timeout_s=udp_timeout_s)
        if v6 is not None:
            ruleset += rules.router6(firewall=v6.firewall)
            if scenario.nptv6:
                ruleset += rules.nptv6(A.NPT_LAN6_NET, A.HOME_LAN6_NET)
        netns.nft(ns("router"), ruleset)
        if scenario.topology == "double":
            isp_lan = router_gw
            isp_cmds = ["link set lo up", f"addr add {isp_lan}/24 dev lan", "link set lan up",
                        f"addr add {A.ISP_WAN_IP}/24 dev wan", "link set wan up",
                        f"route add default via {A.INET_SUBSCRIBER_GW}"]
            if v6 is not None:  # the provider routes IPv6 (no NAT66, no filter)
                isp_cmds += [f"addr add {A.ISP_LAN_IP6}/64 dev lan nodad", f"addr add {A.ISP_WAN_IP6}/64 dev wan nodad",
                             f"route add ::/0 via {A.INET6_SUBSCRIBER_GW}",
                             f"route add {A.DELEGATED_PREFIX6} via {A.CGNAT_ROUTER_WAN_IP6}"]
            ip_batch(ns("isp"), isp_cmds)
            isp_net = str(ipaddress.ip_network(f"{isp_lan}/24", strict=False))
            netns.nft(ns("isp"), rules.router("port-restricted", isp_net, learn_timeout_s=udp_timeout_s))
    netns.nft(inet, rules.provider(udp_blocked=scenario.udp_blocked,
                                   filtered_ports=filtered_ports if scenario.p2p_filter else ()))
    if forwarder is not None:
        pin_neighbours(ns, sub, sub_if, subscriber_ip(scenario), subscriber_ip6(scenario))
    return Built(subscriber=sub, subscriber_if=sub_if, forwarder=forwarder)


def _inet_routes6(scenario: Scenario) -> list[str]:
    """The internet core routes the subscriber's delegated prefix (and the provider's link) to it."""
    if scenario.ipv6 is None or scenario.topology == "open":
        return []
    if scenario.topology == "double":
        return [f"route add {A.DELEGATED_PREFIX6} via {A.ISP_WAN_IP6}",
                f"route add {A.ISP6_LINK_NET} via {A.ISP_WAN_IP6}"]
    return [f"route add {A.DELEGATED_PREFIX6} via {A.ROUTER_WAN_IP6}"]


def subscriber_ip(scenario: Scenario) -> str:
    return {"open": A.OPEN_CLIENT_IP, "single": A.ROUTER_WAN_IP, "double": A.ISP_WAN_IP}[scenario.topology]


def subscriber_ip6(scenario: Scenario) -> str | None:
    """The IPv6 address of the host on the subscriber link (None without IPv6)."""
    if scenario.ipv6 is None:
        return None
    return {"open": A.OPEN_CLIENT_IP6, "single": A.ROUTER_WAN_IP6, "double": A.ISP_WAN_IP6}[scenario.topology]


def _mac(ns_name: str, dev: str) -> str:
    out = netns.run(["ip", "-n", ns_name, "-j", "link", "show", "dev", dev]).stdout
    return str(json.loads(out)[0]["address"])


def pin_neighbours(ns: Callable[[str], str], sub: str, sub_if: str, sub_ip: str, sub_ip6: str | None = None) -> None:
    """Permanent ARP (and IPv6 neighbour) entries across an impaired link: with 100 ms RTT, resolving a
    neighbour would drop the first burst (the unresolved queue holds ~200 small packets) and blur the
    configured loss; neighbour solicitations are IP frames the forwarder may drop, too."""
    inet = ns("inet")
    inet_mac, sub_mac = _mac(inet, "br0"), _mac(ns(sub), sub_if)
    sub_cmds = [f"neigh replace {A.INET_SUBSCRIBER_GW} lladdr {inet_mac} dev {sub_if} nud permanent"]
    inet_cmds = [f"neigh replace {sub_ip} lladdr {sub_mac} dev br0 nud permanent"]
    if sub_ip6 is not None:
        sub_cmds.append(f"neigh replace {A.INET6_SUBSCRIBER_GW} lladdr {inet_mac} dev {sub_if} nud permanent")
        inet_cmds.append(f"neigh replace {sub_ip6} lladdr {sub_mac} dev br0 nud permanent")
    ip_batch(ns(sub), sub_cmds)
    ip_batch(inet, inet_cmds)


def _iface(ns_name: str, dev: str, addr: str, gw: str, v6: tuple[str, str] | None = None) -> None:
    cmds = ["link set lo up", f"addr add {addr}/24 dev {dev}", f"link set {dev} up", f"route add default via {gw}"]
    if v6 is not None:
        cmds[2:2] = [f"addr add {v6[0]}/64 dev {dev} nodad"]
        cmds.append(f"route add ::/0 via {v6[1]}")
    ip_batch(ns_name, cmds)


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
