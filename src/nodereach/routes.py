"""This host's routing table and addresses, read from the kernel's /proc tables (every user may read them).

/proc/net/route and /proc/net/ipv6_route (the main routing table), /proc/net/fib_trie (IPv4 addresses of this
host) and /proc/net/if_inet6 (IPv6 ones, with their interface, prefix and flags); the source address the
kernel picks comes from connecting a UDP socket (sends nothing, and it follows policy routing, which the main
table alone does not show). Shared by the check (`diagnose.netinfo`) and the port-mapping keeper
(`portmap.gateway`). Why not netlink through pyroute2: importing it costs ~0.25 s of CPU (more than a second
on a loaded host), which the check cannot spend in its first milliseconds, and ~9.5 MiB of resident memory,
which a watcher that runs for months should not carry.
The parsers are pure and total: any text gives entries or nothing, never an error.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterable
from pathlib import Path

import msgspec

from nodereach.net import IPAddress, canonical, is_public, prefer_stable_source

PROC_NET = Path("/proc/thread-self/net")
"""This thread's network namespace (/proc/net is the process's: a thread moved into a lab namespace by setns
reads its own tables only through thread-self)."""
MAX_TABLE_BYTES = 1 << 20
"""A routing table larger than this is read only this far (a router with a full table is not a node)."""
RTF_UP, RTF_GATEWAY = 0x1, 0x2

# IPv6 address flags (linux/if_addr.h); /proc/net/if_inet6 shows their low byte, which holds all of these.
IFA_F_TEMPORARY = 0x01
IFA_F_DADFAILED = 0x08
IFA_F_DEPRECATED = 0x20
IFA_F_TENTATIVE = 0x40


class Route(msgspec.Struct, frozen=True):
    """One entry of the main routing table."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    gateway: str | None
    """None: on-link (no gateway)."""
    interface: str
    metric: int


class Address6(msgspec.Struct, frozen=True):
    """One line of /proc/net/if_inet6: an IPv6 address of this host."""

    address: str
    index: int
    """The interface's index (as `ip link` numbers it)."""
    prefixlen: int
    scope: int
    """0 global, 0x20 link, 0x10 host (the kernel's IPV6_ADDR_* scope bits)."""
    flags: int
    """IFA_F_* (low byte): temporary, tentative, deprecated, DAD failed, ..."""
    interface: str


def source_toward(dest: str | None) -> tuple[str | None, str | None]:
    """(source address the kernel picks toward dest, error): a connect() on a UDP socket sends nothing."""
    if dest is None:
        return None, "no destination"
    family = socket.AF_INET6 if ":" in dest else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            prefer_stable_source(s)  # the source the check's own sockets use (never a temporary address)
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


def parse_addresses6(text: str) -> list[Address6]:
    """/proc/net/if_inet6: address index plen scope flags iface per line (the numbers in hex)."""
    out = []
    for line in text.splitlines():
        cols = line.split()
        if len(cols) < 6 or len(cols[0]) != 32:
            continue
        try:
            out.append(Address6(str(_hex6(cols[0])), int(cols[1], 16), int(cols[2], 16), int(cols[3], 16),
                                int(cols[4], 16), cols[5]))
        except ValueError:
            continue
    return out


def parse_if_inet6(text: str) -> list[tuple[str, int, str]]:
    """/proc/net/if_inet6 as (address, prefix length, interface) per line."""
    return [(a.address, a.prefixlen, a.interface) for a in parse_addresses6(text)]


def stable_address6(addresses6: Iterable[Address6], preferred: str, index: int | None = None) -> str:
    """The stable global IPv6 address to give peers instead of `preferred`, the kernel's source.

    With privacy addresses on (RFC 8981; NetworkManager's and most desktops' default) the kernel sources
    outgoing traffic from a temporary address, which changes about daily and is then deprecated and removed.
    A pinhole, a firewall rule or an advertised address must name the stable one on the same interface
    (`index`; None: the interface that holds `preferred`). `preferred` when it is stable itself, or when the
    interface has no other usable global address."""
    found = list(addresses6)
    if index is None:
        index = next((a.index for a in found if a.address == preferred), None)
        if index is None:
            return preferred
    unusable = IFA_F_DADFAILED | IFA_F_TENTATIVE | IFA_F_DEPRECATED
    stable = [a.address for a in found if a.index == index and is_public(a.address)
              and not a.flags & (unusable | IFA_F_TEMPORARY)]
    if preferred in stable or not stable:
        return preferred
    return stable[0]


def best_route(routes: Iterable[Route], dest: IPAddress) -> Route | None:
    """Longest prefix, then lowest metric: the main table's answer for `dest`."""
    fits = [r for r in routes if r.network.version == dest.version and dest in r.network]
    return max(fits, key=lambda r: (r.network.prefixlen, -r.metric), default=None)


def default_route(routes: Iterable[Route], family: int) -> Route | None:
    """The main table's default route of `family` (4 or 6): the one a packet to the internet takes."""
    return best_route((r for r in routes if r.network.prefixlen == 0),
                      ipaddress.ip_address("0.0.0.0" if family == 4 else "::"))


def onlink_networks(routes: Iterable[Route], addresses6: Iterable[Address6], interface: str) -> tuple[str, ...]:
    """The networks directly connected on `interface`: IPv4's on-link routes, IPv6's address prefixes."""
    nets = [str(r.network) for r in routes
            if r.interface == interface and r.gateway is None and r.network.prefixlen > 0 and r.network.version == 4]
    nets += [str(ipaddress.ip_network(f"{a.address}/{a.prefixlen}", strict=False))
             for a in addresses6 if a.interface == interface]
    return tuple(dict.fromkeys(nets))


def interface_index(interface: str | None) -> int | None:
    if interface is None:
        return None
    try:
        return socket.if_nametoindex(interface)
    except OSError:
        return None


def _read(name: str) -> str:
    try:
        with (PROC_NET / name).open("rb") as fh:
            return fh.read(MAX_TABLE_BYTES).decode("ascii", "replace")
    except OSError:
        return ""


class Tables(msgspec.Struct, frozen=True):
    """The kernel tables, as text (tests pass their own)."""

    route4: str
    route6: str
    fib_trie: str
    if_inet6: str

    @classmethod
    def read(cls) -> Tables:
        return cls(_read("route"), _read("ipv6_route"), _read("fib_trie"), _read("if_inet6"))

    def routes(self) -> list[Route]:
        return parse_route4(self.route4) + parse_route6(self.route6)
