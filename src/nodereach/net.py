"""Network values, defined once: transports, address families, endpoints, address kinds, name resolution.

Every package speaks of the same things (a port and its transport, an IP address and what kind it is, an
endpoint a NAT maps to); this module gives each one name and one type, so a report, a probe and a router
rule cannot disagree about what `"tcp"` or "a public address" means.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from dataclasses import dataclass
from typing import Literal, TypeGuard

Transport = Literal["tcp", "udp"]
TRANSPORTS: tuple[Transport, ...] = ("tcp", "udp")

Family = Literal[4, 6]
"""An IP address family as the reports write it: the integer 4 or 6."""
FAMILIES: tuple[Family, ...] = (4, 6)

SockAddr = tuple[str, int]
"""(ip, port) as asyncio and the socket module give and take it (IPv6 without brackets)."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

AddressKind = Literal[
    "global", "private", "shared", "loopback", "link-local", "documentation", "unique-local", "multicast",
    "unspecified", "reserved",
]
"""What an address is, in the terms a reachability diagnosis needs.

- global: routable on the internet (the only kind peers can dial from anywhere);
- private: RFC 1918 (10/8, 172.16/12, 192.168/16) — a home or company network behind a NAT;
- shared: RFC 6598 100.64.0.0/10 — the provider's carrier-grade NAT realm;
- loopback, link-local (169.254/16, fe80::/10), unique-local (IPv6 fc00::/7), multicast, unspecified;
- documentation: 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32 (RFC 5737/3849). Real
  networks never carry them; nodereach's lab uses them as its internet, so `is_public()` counts them as
  public while the kind still says what they are;
- reserved: anything else not routable (0/8, 240/4, 192.0.0.0/24 DS-Lite, benchmarking 198.18/15, ...).
"""

_SHARED4 = ipaddress.IPv4Network("100.64.0.0/10")
_PRIVATE4 = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_DOC4 = tuple(ipaddress.IPv4Network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"))
_DOC6 = ipaddress.IPv6Network("2001:db8::/32")
_ULA6 = ipaddress.IPv6Network("fc00::/7")
_LINK_LOCAL4 = ipaddress.IPv4Network("169.254.0.0/16")
_IETF4 = ipaddress.IPv4Network("192.0.0.0/24")
"""IETF protocol assignments (DS-Lite B4/AFTR, PCP anycast): never a host's public address (Python's
`is_global` disagrees for some of it, and differs between versions)."""


class ResolveError(Exception):
    """A host name did not resolve (or not in time); `str()` says which and why."""


def parse_ip(text: str) -> IPAddress:
    """An IP address from text, tolerating brackets and an IPv6 zone (`[fe80::1%eth0]`); ValueError else."""
    host = text.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return ipaddress.ip_address(host.split("%", 1)[0])


def is_ip(text: str) -> bool:
    try:
        parse_ip(text)
    except ValueError:
        return False
    return True


def unmap(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack socket reports for IPv4 peers) as the
    IPv4 address it stands for; any other address unchanged."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def canonical(text: str) -> str:
    """Canonical text of an address: IPv4-mapped unwrapped, IPv6 compressed and lower-case (RFC 5952).
    Raises ValueError for anything that is not an IP address."""
    return str(unmap(parse_ip(text)))


def family_of(address: str | IPAddress) -> Family:
    ip = unmap(parse_ip(address) if isinstance(address, str) else address)
    return 4 if ip.version == 4 else 6


def socket_family(family: Family) -> socket.AddressFamily:
    return socket.AF_INET if family == 4 else socket.AF_INET6


IPV6_ADDR_PREFERENCES = 72
"""Linux's per-socket source address preferences (RFC 5014; linux/in6.h; Python's socket module lacks it)."""
IPV6_PREFER_SRC_PUBLIC = 0x0002


def prefer_stable_source(sock: socket.socket) -> None:
    """An IPv6 socket sources from the host's stable (public, in RFC 5014's terms) address, not a temporary one.

    With privacy addresses on (RFC 8981; use_tempaddr=2, most desktops' default) the kernel picks a temporary
    source, which changes about daily. What the servers see must be the address peers are given, advertised
    and let in by a pinhole (`open` pins the stable one): probed from a temporary address, a dial-back would
    test a firewall rule nobody made. Nothing for IPv4 sockets or where the option is missing."""
    if sock.family == socket.AF_INET6:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_ADDR_PREFERENCES, IPV6_PREFER_SRC_PUBLIC)


def wildcard(family: Family) -> str:
    """The address that binds every interface of a family."""
    return "0.0.0.0" if family == 4 else "::"


def address_kind(address: str | IPAddress) -> AddressKind:
    """Classify an address (IPv4-mapped ones as their IPv4 address). Unlike `ipaddress.is_private`, which calls
    the documentation and shared ranges private, this keeps apart what a diagnosis must tell apart."""
    ip = unmap(parse_ip(address) if isinstance(address, str) else address)
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address):
        if ip in _SHARED4:
            return "shared"
        if any(ip in n for n in _PRIVATE4):
            return "private"
        if ip in _LINK_LOCAL4:
            return "link-local"
        if any(ip in n for n in _DOC4):
            return "documentation"
        return "global" if ip.is_global and ip not in _IETF4 else "reserved"
    if ip.is_link_local:
        return "link-local"
    if ip in _ULA6:
        return "unique-local"
    if ip in _DOC6:
        return "documentation"
    return "global" if ip.is_global else "reserved"


def is_public(address: str | IPAddress) -> bool:
    """Could a peer anywhere on the internet send to this address? Documentation ranges count (they are the
    lab's internet); link-local, unique-local, private and shared addresses never do."""
    return address_kind(address) in ("global", "documentation")


def nat_realm(address: str | IPAddress) -> str | None:
    """The address realm a NAT hides (the RFC 1918 / RFC 6598 block, or fc00::/7), None for other addresses."""
    ip = unmap(parse_ip(address) if isinstance(address, str) else address)
    if isinstance(ip, ipaddress.IPv4Address):
        if ip in _SHARED4:
            return str(_SHARED4)
        return next((str(n) for n in _PRIVATE4 if ip in n), None)
    return str(_ULA6) if ip in _ULA6 else None


@dataclass(frozen=True, slots=True, order=True)
class PortSpec:
    """A port of the node and its transport: what `--port 30303/tcp` names."""

    port: int
    transport: Transport

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is outside 1-65535")

    @property
    def protocol(self) -> Transport:
        """The same as `transport` (the reports call it `protocol`)."""
        return self.transport

    def __str__(self) -> str:
        return f"{self.port}/{self.transport}"

    @classmethod
    def parse_many(cls, text: str) -> list[PortSpec]:
        """`30303/tcp`, `30303/udp`, or `30303` (both transports). ValueError with the reason otherwise."""
        port_s, _, proto = text.strip().lower().partition("/")
        if not (port_s.isascii() and port_s.isdigit()):
            raise ValueError(f"bad port {text!r}: use PORT/tcp or PORT/udp, e.g. 30303/tcp")
        if proto and not is_transport(proto):
            raise ValueError(f"bad protocol in {text!r}: use tcp or udp")
        transports: tuple[Transport, ...] = (proto,) if is_transport(proto) else TRANSPORTS
        return [cls(int(port_s), t) for t in transports]


def is_transport(text: str) -> TypeGuard[Transport]:
    return text in TRANSPORTS


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An IP address and port (the address in canonical text). `str()` brackets IPv6: `[2001:db8::1]:30303`."""

    address: str
    port: int

    @property
    def family(self) -> Family:
        return family_of(self.address)

    @property
    def sockaddr(self) -> SockAddr:
        return (self.address, self.port)

    @classmethod
    def of(cls, sockaddr: tuple[str, int] | tuple[str, int, int, int]) -> Endpoint:
        """From a socket address as the socket module gives it (IPv6 4-tuples too; IPv4-mapped unwrapped)."""
        return cls(canonical(sockaddr[0]), int(sockaddr[1]))

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """`1.2.3.4:5`, `[2001:db8::1]:5`; ValueError otherwise."""
        host, sep, port_s = text.strip().rpartition(":")
        if not sep or not (port_s.isascii() and port_s.isdigit()) or not 0 <= int(port_s) <= 65535:
            raise ValueError(f"not an endpoint (ip:port): {text!r}")
        if ":" in host and not host.startswith("["):
            raise ValueError(f"an IPv6 endpoint needs brackets: {text!r}")
        return cls(canonical(host), int(port_s))

    def __str__(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"


async def resolve(host: str, port: int = 0, *, family: Family | None = None, transport: Transport = "udp",
                  timeout: float = 5.0) -> list[str]:  # noqa: ASYNC109
    """The host's addresses (canonical text, first answer first, no duplicates), or the IP itself.

    Raises ResolveError with what happened: the name does not exist, no answer in `timeout`, or no address
    of the asked family.
    """
    if is_ip(host):
        ip = canonical(host)
        if family is not None and family_of(ip) != family:
            raise ResolveError(f"{host} is not an IPv{family} address")
        return [ip]
    loop = asyncio.get_running_loop()
    af = socket_family(family) if family is not None else socket.AF_UNSPEC
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(host, port, family=af, type=kind)
    except TimeoutError:
        raise ResolveError(f"name lookup of {host!r} timed out after {timeout:.1f} s") from None
    except OSError as exc:
        raise ResolveError(f"name {host!r} not resolved ({exc.strerror or exc})") from None
    seen: list[str] = []
    for af_found, *_rest, sockaddr in infos:
        if af_found in (socket.AF_INET, socket.AF_INET6):
            ip = canonical(str(sockaddr[0]))
            if ip not in seen:
                seen.append(ip)
    if not seen:
        raise ResolveError(f"name {host!r} has no {'IPv' + str(family) if family else 'IP'} address")
    return seen
