"""Text forms of the addresses nodes advertise: multiaddr strings (`/ip4/1.2.3.4/tcp/4001/p2p/...`), enode URLs
(`enode://<id>@1.2.3.4:30303?discport=30301`), `host:port` and `[v6]:port`. Pure; ValueError on anything else.

ENRs (binary RLP) and binary multiaddrs are the protocol decoders' job (`nodereach.p2p`); what the node RPCs
return as text is read here.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from nodereach.net import Transport, canonical

MAX_TEXT = 1024


@dataclass(frozen=True, slots=True)
class HostPort:
    address: str
    """Canonical IP text, or a DNS name as written (`/dns4/node.example/...`)."""
    port: int | None
    protocol: Transport | None
    is_ip: bool = True


def parse_multiaddr(text: str) -> HostPort:
    """The network part of a multiaddr: `/ip4|ip6|dns|dns4|dns6/<host>/tcp|udp/<port>/...`. QUIC, WebRTC,
    WebTransport ride on UDP; `/p2p/<id>` and anything after the transport is ignored."""
    if len(text) > MAX_TEXT or not text.startswith("/"):
        raise ValueError(f"not a multiaddr: {text[:80]!r}")
    parts = text.split("/")[1:]
    if len(parts) < 2:
        raise ValueError(f"multiaddr without an address: {text[:80]!r}")
    proto, host = parts[0], parts[1]
    if proto in ("ip4", "ip6"):
        address, is_ip = canonical(host), True
        if (proto == "ip4") != ("." in address and ":" not in address):
            raise ValueError(f"/{proto} with {host!r}")
    elif proto in ("dns", "dns4", "dns6", "dnsaddr"):
        address, is_ip = host, False
    else:
        raise ValueError(f"multiaddr starts with /{proto}, not an address")
    port: int | None = None
    transport: Transport | None = None
    if len(parts) >= 4 and parts[2] in ("tcp", "udp"):
        if not parts[3].isdigit() or not 0 <= int(parts[3]) <= 65535:
            raise ValueError(f"bad port in {text[:80]!r}")
        port, transport = int(parts[3]), parts[2]  # type: ignore[assignment]
    return HostPort(address, port, transport, is_ip)


@dataclass(frozen=True, slots=True)
class Enode:
    node_id: str
    address: str
    tcp_port: int
    udp_port: int


def parse_enode(text: str) -> Enode:
    """`enode://<128 hex>@<ip>:<tcp port>[?discport=<udp port>]` (devp2p); the UDP port is the TCP one unless
    `discport` says otherwise."""
    if len(text) > MAX_TEXT:
        raise ValueError("enode URL too long")
    parts = urlsplit(text)
    if parts.scheme != "enode" or not parts.username or not parts.hostname:
        raise ValueError(f"not an enode URL: {text[:80]!r}")
    node_id = parts.username
    if len(node_id) != 128 or any(c not in "0123456789abcdefABCDEF" for c in node_id):
        raise ValueError("enode id is not 64 bytes of hex")
    try:
        tcp = parts.port
    except ValueError:
        raise ValueError(f"bad port in {text[:80]!r}") from None
    if tcp is None:
        raise ValueError(f"enode URL without a port: {text[:80]!r}")
    disc = parse_qs(parts.query).get("discport", [str(tcp)])[0]
    if not disc.isdigit() or not 0 <= int(disc) <= 65535:
        raise ValueError(f"bad discport in {text[:80]!r}")
    return Enode(node_id.lower(), canonical(parts.hostname), tcp, int(disc))


def parse_host_port(text: str) -> tuple[str, int | None]:
    """`1.2.3.4:5`, `[2001:db8::1]:5`, `2001:db8::1` (no port), `1.2.3.4`, or a name (`node.example:9735`, kept
    as written). ValueError on an empty host or a bad port."""
    text = text.strip()
    if len(text) > MAX_TEXT or not text:
        raise ValueError("empty address")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"unclosed bracket in {text[:80]!r}")
        port_s = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"bad address {text[:80]!r}")
        return canonical(host), _port(port_s, text)
    if text.count(":") > 1:
        return canonical(text), None
    host, _, port_s = text.partition(":")
    if not host:
        raise ValueError(f"bad address {text[:80]!r}")
    with contextlib.suppress(ValueError):  # else a name, kept as written
        host = canonical(host)
    return host, _port(port_s, text)


def _port(text: str, whole: str) -> int | None:
    if not text:
        return None
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ValueError(f"bad port in {whole[:80]!r}")
    return int(text)
