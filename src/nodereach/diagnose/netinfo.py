"""This host's addresses, and the route (source, gateway, interface, on-link networks) toward each server.

Read from the kernel's /proc tables, which every user may read: /proc/net/route and /proc/net/ipv6_route
(the main routing table), /proc/net/fib_trie (IPv4 addresses of this host) and /proc/net/if_inet6 (IPv6
ones); the source address the kernel picks comes from connecting a UDP socket (sends nothing, and it follows
policy routing, which the main table alone does not show). Why not netlink through pyroute2 (which the
port-mapping package uses): importing it costs ~0.25 s of CPU, more than a second on a loaded host, and
the check needs the gateway in its first milliseconds (the gateway's port-mapping probe waits for it).
The parsers are pure and total: any text gives entries or nothing, never an error.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from nodereach.net import IPAddress, canonical

PROC_NET = Path("/proc/thread-self/net")
"""This thread's network namespace (/proc/net is the process's: a thread moved into a lab namespace by setns
reads its own tables only through thread-self)."""
MAX_TABLE_BYTES = 1 << 20
"""A routing table larger than this is read only this far (a router with a full table is not a node)."""
RTF_UP, RTF_GATEWAY = 0x1, 0x2


@dataclass(frozen=True, slots=True)
class RouteInfo:
    source: str | None = None
    gateway: str | None = None
    interface: str | None = None
    index: int | None = None
    networks: tuple[str, ...] = ()
    """Prefixes on the outgoing interface (what is on-link toward the gateway)."""
    error: str | None = None


@dataclass(frozen=True, slots=True)
class NetInfo:
    addresses: frozenset[str] = frozenset()
    """Every address configured on this host."""
    routes: Mapping[str, RouteInfo] = field(default_factory=dict)
    """Route toward each server address."""
    default_gateway4: str | None = None
    default_gateway6: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """One entry of the main routing table."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    gateway: str | None
    """None: on-link (no gateway)."""
    interface: str
    metric: int


def source_toward(dest: str | None) -> tuple[str | None, str | None]:
    """(source address the kernel picks toward dest, error): a connect() on a UDP socket sends nothing."""
    if dest is None:
        return None, "no destination"
    family = socket.AF_INET6 if ":" in dest else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((dest, 9))
            return canonical(str(s.getsockname()[0])), None
    except OSError as exc:
        return None, exc.strerror or str(exc)


def _hex4(text: str) -> ipaddress.IPv4Address:
    """/proc/net/route writes IPv4 addresses as host-order (little-endian) hex."""
    return ipaddress.IPv4Address(int(text, 16).to_bytes(4, "little"))


def parse_route4(text: str) -> list[Route]:
    """/proc/net/route: Iface Destination Gateway Flags RefCnt Use Metric Mask ... (header line first)."""
    routes = []
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 8:
            continue
        try:
            flags = int(cols[3], 16)
            net = ipaddress.IPv4Network(f"{_hex4(cols[1])}/{_hex4(cols[7])}", strict=False)
            gateway = _hex4(cols[2])
            metric = int(cols[6])
        except ValueError:
            continue
        if flags & RTF_UP:
            routes.append(Route(net, str(gateway) if flags & RTF_GATEWAY else None, cols[0], metric))
    return routes


def _hex6(text: str) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(bytes.fromhex(text))


def parse_route6(text: str) -> list[Route]:
    """/proc/net/ipv6_route: dest plen src plen nexthop metric refcnt use flags iface (hex, no header)."""
    routes = []
    for line in text.splitlines():
        cols = line.split()
        if len(cols) < 10 or len(cols[0]) != 32 or len(cols[4]) != 32:
            continue
        try:
            net = ipaddress.IPv6Network(f"{_hex6(cols[0])}/{int(cols[1], 16)}", strict=False)
            nexthop = _hex6(cols[4])
            metric = int(cols[5], 16)
            flags = int(cols[8], 16)
        except ValueError:
            continue
        if flags & RTF_UP and cols[9] != "lo":
            routes.append(Route(net, str(nexthop) if flags & RTF_GATEWAY and not nexthop.is_unspecified else None,
                                cols[9], metric))
    return routes


def parse_fib_trie_locals(text: str) -> frozenset[str]:
    """IPv4 addresses of this host from /proc/net/fib_trie: a `|-- ADDRESS` leaf whose next line says
    `/32 host LOCAL`."""
    found: set[str] = set()
    leaf: str | None = None
    for line in text.splitlines():
        item = line.strip()
        if item.startswith("|-- "):
            leaf = item[4:].strip()
        elif leaf is not None and item.startswith("/32 host LOCAL"):
            with contextlib.suppress(ValueError):
                found.add(str(ipaddress.IPv4Address(leaf)))
            leaf = None
    return frozenset(found)


def parse_if_inet6(text: str) -> list[tuple[str, int, str]]:
    """/proc/net/if_inet6: (address, prefix length, interface) per line: address index plen scope flags iface."""
    out = []
    for line in text.splitlines():
        cols = line.split()
        if len(cols) < 6 or len(cols[0]) != 32:
            continue
        try:
            out.append((str(_hex6(cols[0])), int(cols[2], 16), cols[5]))
        except ValueError:
            continue
    return out


def best_route(routes: Iterable[Route], dest: IPAddress) -> Route | None:
    """Longest prefix, then lowest metric: the main table's answer for `dest`."""
    fits = [r for r in routes if r.network.version == dest.version and dest in r.network]
    return max(fits, key=lambda r: (r.network.prefixlen, -r.metric), default=None)


def _read(name: str) -> str:
    try:
        with (PROC_NET / name).open("rb") as fh:
            return fh.read(MAX_TABLE_BYTES).decode("ascii", "replace")
    except OSError:
        return ""


@dataclass(frozen=True, slots=True)
class Tables:
    """The kernel tables the check reads, as text (tests pass their own)."""

    route4: str
    route6: str
    fib_trie: str
    if_inet6: str

    @classmethod
    def read(cls) -> Tables:
        return cls(_read("route"), _read("ipv6_route"), _read("fib_trie"), _read("if_inet6"))


def _index(interface: str | None) -> int | None:
    if interface is None:
        return None
    try:
        return socket.if_nametoindex(interface)
    except OSError:
        return None


def gather(destinations: Iterable[str], tables: Tables | None = None) -> NetInfo:
    """This host's addresses, default gateways, and the route toward each destination."""
    t = tables or Tables.read()
    if not t.route4 and not t.route6:
        return NetInfo(error="cannot read the routing table (/proc/net/route)")
    routes = parse_route4(t.route4) + parse_route6(t.route6)
    v6 = parse_if_inet6(t.if_inet6)
    addresses = parse_fib_trie_locals(t.fib_trie) | {a for a, _plen, _iface in v6}
    # Connected networks per interface: IPv4's on-link routes; IPv6's from the addresses' prefixes.
    onlink: dict[str, list[str]] = {}
    for r in routes:
        if r.gateway is None and r.network.prefixlen > 0 and r.network.version == 4:
            onlink.setdefault(r.interface, []).append(str(r.network))
    for address, plen, iface in v6:
        onlink.setdefault(iface, []).append(str(ipaddress.ip_network(f"{address}/{plen}", strict=False)))
    found: dict[str, RouteInfo] = {}
    for dest in destinations:
        try:
            ip = ipaddress.ip_address(dest)
        except ValueError:
            found[dest] = RouteInfo(error=f"not an IP address: {dest!r}")
            continue
        source, error = source_toward(str(ip))
        if ip.is_loopback or str(ip) in addresses:  # the local table's, not the main table's
            found[dest] = RouteInfo(source=source, interface="lo", index=_index("lo"), error=error)
            continue
        route = best_route(routes, ip)
        if route is None:
            found[dest] = RouteInfo(source=source, error=error or "no route")
            continue
        networks = tuple(dict.fromkeys(onlink.get(route.interface, [])))
        found[dest] = RouteInfo(source=source, gateway=route.gateway, interface=route.interface,
                                index=_index(route.interface), networks=networks, error=error)
    defaults = {family: best_route((r for r in routes if r.network.prefixlen == 0), ipaddress.ip_address(any_ip))
                for family, any_ip in ((4, "0.0.0.0"), (6, "::"))}
    gw4, gw6 = defaults[4], defaults[6]
    return NetInfo(addresses=frozenset(addresses), routes=found,
                   default_gateway4=gw4.gateway if gw4 is not None else None,
                   default_gateway6=gw6.gateway if gw6 is not None else None)
