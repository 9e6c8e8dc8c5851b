"""WireGuard configuration for a way out of carrier-grade NAT: a tunnel to a rented host with a public address.

Behind CGNAT without IPv6, no setting on the operator's side makes the node reachable. What operators do is
rent a small host with a public IPv4 address, tunnel to it, and forward the node's ports there. This module
writes that setup, filled in, for both ends (pure text; keys come from `keys.py`):

- **public host**: WireGuard listening on UDP `listen_port`; destination NAT of the node's ports to the
  node's own address through the tunnel, and *no masquerade*: the node sees every peer's own address (many
  node programs allow one connection per address and rate-limit per address, so a tunnel that hides them
  behind one address breaks them);
- **node**: the tunnel with `Table = off` (its normal traffic keeps its normal route) and policy routing by
  connection mark: packets of connections that came in through the tunnel leave through it, whatever the
  socket is bound to. Routing replies by source address alone fails for UDP sockets bound to 0.0.0.0 (the
  kernel picks the LAN address as the source of their replies), so the public host forwards to the node's LAN
  address, the node marks connections arriving on the tunnel and routes marked packets back into it;
  `PersistentKeepalive` keeps the CGNAT's mapping of the tunnel open (CGNAT UDP timeouts can be 30 s).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from nodereach.net import PortSpec, family_of, is_ip

DEFAULT_LISTEN_PORT = 51820
"""WireGuard's customary port."""
DEFAULT_TUNNEL_NETWORK = "10.77.0.0/30"
"""A /30 for the two tunnel ends (host .1, node .2); pick another if it collides with a network you use."""
CONNMARK = 0x4E52
"""Marks connections that arrived through the tunnel ('NR')."""
ROUTE_TABLE = 51820
KEEPALIVE_S = 25
"""Below the shortest UDP binding lifetime seen on CGNATs (30 s), as WireGuard's documentation suggests."""


class TunnelConfigError(ValueError):
    """The requested tunnel cannot work as asked; `str()` says why and what to change."""


@dataclass(frozen=True)
class KeyPair:
    private: str
    """Base64 of the 32-byte Curve25519 private key (WireGuard's format)."""
    public: str


@dataclass(frozen=True)
class TunnelPlan:
    public_host: str
    """The rented host's public IPv4 address: where peers will dial the node, and the tunnel's endpoint."""
    node_address: str
    """The node's own IPv4 address on its LAN (the public host forwards to it through the tunnel)."""
    ports: tuple[PortSpec, ...]
    node_keys: KeyPair
    host_keys: KeyPair
    listen_port: int = DEFAULT_LISTEN_PORT
    tunnel_network: str = DEFAULT_TUNNEL_NETWORK
    node_interface: str = "wg-nodereach"
    host_interface: str = "wg-nodereach"
    node_rules_path: str = "/etc/wireguard/nodereach-node.nft"
    host_rules_path: str = "/etc/wireguard/nodereach-host.nft"
    keepalive_s: int = KEEPALIVE_S
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def host_tunnel_address(self) -> str:
        return str(ipaddress.IPv4Network(self.tunnel_network)[1])

    @property
    def node_tunnel_address(self) -> str:
        return str(ipaddress.IPv4Network(self.tunnel_network)[2])

    @property
    def prefix(self) -> int:
        return ipaddress.IPv4Network(self.tunnel_network).prefixlen


@dataclass(frozen=True)
class TunnelFiles:
    """What to install where; names are suggestions (wg-quick names the interface after the file)."""

    node_conf: str
    node_rules: str
    host_conf: str
    host_rules: str
    steps: str


def plan(public_host: str, node_address: str, ports: list[PortSpec] | tuple[PortSpec, ...],
         node_keys: KeyPair, host_keys: KeyPair, *, listen_port: int = DEFAULT_LISTEN_PORT,
         tunnel_network: str = DEFAULT_TUNNEL_NETWORK, node_interface: str = "wg-nodereach",
         host_interface: str = "wg-nodereach", node_rules_path: str | None = None,
         host_rules_path: str | None = None) -> TunnelPlan:
    """Check the inputs against what would break the tunnel, and fix them into a plan."""
    if not is_ip(public_host) or family_of(public_host) != 4:
        raise TunnelConfigError(f"--public-host must be the rented host's public IPv4 address, not {public_host!r}")
    if not is_ip(node_address) or family_of(node_address) != 4:
        raise TunnelConfigError(f"the node's LAN address must be an IPv4 address, not {node_address!r}")
    if not ports:
        raise TunnelConfigError("no ports to forward: give the node's P2P ports, e.g. --port 18080/tcp")
    try:
        net = ipaddress.IPv4Network(tunnel_network)
    except ValueError as exc:
        raise TunnelConfigError(f"bad tunnel network {tunnel_network!r}: {exc}") from None
    if net.num_addresses < 4:
        raise TunnelConfigError(f"tunnel network {tunnel_network} is too small: use a /30 or larger")
    if ipaddress.IPv4Address(node_address) in net or ipaddress.IPv4Address(public_host) in net:
        raise TunnelConfigError(f"tunnel network {tunnel_network} overlaps the node's or the host's address: "
                                "pick another with --tunnel-network")
    for name in (node_interface, host_interface):
        if not 1 <= len(name) <= 15 or not all(c.isalnum() or c in "-_." for c in name):
            raise TunnelConfigError(f"interface name {name!r}: 1-15 letters, digits, '-', '_' or '.'")
    unique = tuple(dict.fromkeys(ports))
    if PortSpec(listen_port, "udp") in unique:
        raise TunnelConfigError(f"UDP port {listen_port} is the tunnel's own port on the public host: "
                                "choose another with --listen-port")
    warnings: list[str] = []
    if PortSpec(22, "tcp") in unique:
        warnings.append("forwarding 22/tcp takes SSH on the public host away from you")
    return TunnelPlan(public_host=public_host, node_address=node_address, ports=unique, node_keys=node_keys,
                      host_keys=host_keys, listen_port=listen_port, tunnel_network=str(net),
                      node_interface=node_interface, host_interface=host_interface,
                      node_rules_path=node_rules_path or f"/etc/wireguard/{node_interface}.nft",
                      host_rules_path=host_rules_path or f"/etc/wireguard/{host_interface}.nft",
                      warnings=tuple(warnings))


def _ports_text(p: TunnelPlan) -> str:
    return ", ".join(str(s) for s in p.ports)


def node_conf(p: TunnelPlan) -> str:
    t = ROUTE_TABLE
    return "\n".join([
        f"# nodereach tunnel, node end: inbound {_ports_text(p)} through {p.public_host}",
        f"# install as /etc/wireguard/{p.node_interface}.conf (mode 600), then: wg-quick up {p.node_interface}",
        "[Interface]",
        f"PrivateKey = {p.node_keys.private}",
        f"Address = {p.node_tunnel_address}/{p.prefix}",
        "# Table = off: only connections that came in through the tunnel use it; the rest keeps its route",
        "Table = off",
        f"PostUp = nft -f {p.node_rules_path}",
        f"PostUp = ip -4 rule add fwmark {CONNMARK:#x} lookup {t} priority 10000",
        f"PostUp = ip -4 route add default dev %i table {t}",
        "# peers' packets arrive with their own source address: reverse-path filtering must be loose here",
        "PostUp = sysctl -qw net.ipv4.conf.%i.rp_filter=2",
        f"PreDown = ip -4 rule del fwmark {CONNMARK:#x} lookup {t} priority 10000",
        f"PreDown = ip -4 route flush table {t}",
        "PreDown = nft delete table inet nodereach_tunnel",
        "",
        "[Peer]",
        f"# the public host {p.public_host}",
        f"PublicKey = {p.host_keys.public}",
        f"Endpoint = {p.public_host}:{p.listen_port}",
        "# any source: forwarded packets keep each peer's own address",
        "AllowedIPs = 0.0.0.0/0",
        "# keeps the carrier-grade NAT's mapping of the tunnel open (its UDP timeout can be 30 s)",
        f"PersistentKeepalive = {p.keepalive_s}",
        "",
    ])


def node_rules(p: TunnelPlan) -> str:
    m = f"{CONNMARK:#x}"
    return "\n".join([
        "# nodereach tunnel, node end: packets of connections that came in through the tunnel go back through it",
        "table inet nodereach_tunnel {",
        "\tchain prerouting {",
        "\t\ttype filter hook prerouting priority mangle; policy accept;",
        f"\t\tiifname \"{p.node_interface}\" ct mark set {m}",
        "\t}",
        "\tchain output {",
        "\t\t# a route chain: changing the mark here makes the kernel route the packet again",
        "\t\ttype route hook output priority mangle; policy accept;",
        f"\t\tct mark {m} meta mark set {m}",
        "\t}",
        "}",
        "",
    ])


def host_conf(p: TunnelPlan) -> str:
    return "\n".join([
        f"# nodereach tunnel, public host end ({p.public_host}): forwards {_ports_text(p)} to the node",
        f"# install as /etc/wireguard/{p.host_interface}.conf (mode 600), then: wg-quick up {p.host_interface}",
        "[Interface]",
        f"PrivateKey = {p.host_keys.private}",
        f"Address = {p.host_tunnel_address}/{p.prefix}",
        f"ListenPort = {p.listen_port}",
        "PostUp = sysctl -qw net.ipv4.ip_forward=1",
        f"PostUp = nft -f {p.host_rules_path}",
        "PreDown = nft delete table ip nodereach_tunnel",
        "",
        "[Peer]",
        "# the node (behind carrier-grade NAT; it connects to us and keeps the tunnel open)",
        f"PublicKey = {p.node_keys.public}",
        f"AllowedIPs = {p.node_tunnel_address}/32, {p.node_address}/32",
        "",
    ])


def host_rules(p: TunnelPlan) -> str:
    dnat = [f"\t\tiifname != \"{p.host_interface}\" fib daddr type local {s.transport} dport {s.port} "
            f"dnat to {p.node_address}" for s in p.ports]
    return "\n".join([
        "# nodereach tunnel, public host end: destination NAT of the node's ports into the tunnel.",
        "# No masquerade: the node sees each peer's own address.",
        "table ip nodereach_tunnel {",
        "\tchain prerouting {",
        "\t\ttype nat hook prerouting priority dstnat; policy accept;",
        *dnat,
        "\t}",
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter - 1; policy accept;",
        "\t\t# the tunnel's MTU is smaller than the internet's: let TCP peers know",
        f"\t\toifname \"{p.host_interface}\" tcp flags syn tcp option maxseg size set rt mtu",
        "\t}",
        "}",
        "# If this host's own firewall drops forwarded traffic by default, also accept there:",
        f"#   ct status dnat oifname \"{p.host_interface}\" accept",
        f"#   iifname \"{p.host_interface}\" ct state established,related accept",
        "",
    ])


def steps(p: TunnelPlan) -> str:
    lines = [
        f"1. Rent a small host with a public IPv4 address ({p.public_host}). Open UDP {p.listen_port} in its "
        "provider's firewall, and the node's ports: " + _ports_text(p) + ".",
        f"2. On the public host: apt install wireguard-tools nftables; save the host files as "
        f"/etc/wireguard/{p.host_interface}.conf and {p.host_rules_path}; "
        f"systemctl enable --now wg-quick@{p.host_interface}.",
        f"3. On the node: apt install wireguard-tools nftables; save the node files as "
        f"/etc/wireguard/{p.node_interface}.conf and {p.node_rules_path}; "
        f"systemctl enable --now wg-quick@{p.node_interface}.",
        f"4. Make the node advertise {p.public_host} (e.g. Bitcoin Core externalip={p.public_host}, geth "
        f"--nat extip:{p.public_host}, monerod needs nothing: peers learn the address they connect from) and "
        f"keep it listening on 0.0.0.0 or {p.node_address}.",
        f"5. Prove it from outside: nodereach check --server <a nodereach server> --port ... and a dial-back "
        f"to {p.public_host}.",
    ]
    lines += [f"Warning: {w}" for w in p.warnings]
    return "\n".join(lines) + "\n"


def render(p: TunnelPlan) -> TunnelFiles:
    return TunnelFiles(node_conf=node_conf(p), node_rules=node_rules(p), host_conf=host_conf(p),
                       host_rules=host_rules(p), steps=steps(p))
