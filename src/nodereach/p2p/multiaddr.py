"""libp2p multiaddrs, text (`/ip4/203.0.113.5/udp/9000/quic-v1/p2p/12D3Koo...`) and binary forms.

https://github.com/multiformats/multiaddr and the code table https://github.com/multiformats/multicodec
(table.csv, tag `multiaddr`). Only the protocols a node's advertised addresses use are known here (IP, DNS,
TCP/UDP, QUIC, WebSocket, WebTransport, WebRTC, TLS/Noise, p2p, p2p-circuit); any other code or name is a
`MultiaddrError`, as is anything over the size bounds. The PyPI `multiaddr` package was not used: it pulls
trio, psutil, dnspython and five multiformats packages for what is a table and two loops.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass

from nodereach.net import Family, Transport
from nodereach.p2p import base58, varint
from nodereach.p2p.advertised import Advertised
from nodereach.p2p.errors import MultiaddrError, P2PDecodeError

MAX_TEXT = 1024
MAX_BYTES = 512
MAX_COMPONENTS = 32
MAX_VALUE = 255
"""Bytes a length-prefixed value may have (DNS names, peer ids, cert hashes are far shorter)."""

VAR = -1
# name -> (code, value size in bytes: 0 none, VAR length-prefixed)
PROTOCOLS: dict[str, tuple[int, int]] = {
    "ip4": (0x04, 4), "tcp": (0x06, 2), "ip6": (0x29, 16), "ip6zone": (0x2A, VAR), "dns": (0x35, VAR),
    "dns4": (0x36, VAR), "dns6": (0x37, VAR), "dnsaddr": (0x38, VAR), "udp": (0x0111, 2),
    "webrtc-direct": (0x0118, 0), "webrtc": (0x0119, 0), "p2p-circuit": (0x0122, 0), "p2p": (0x01A5, VAR),
    "https": (0x01BB, 0), "tls": (0x01C0, 0), "sni": (0x01C1, VAR), "noise": (0x01C6, 0), "quic": (0x01CC, 0),
    "quic-v1": (0x01CD, 0), "webtransport": (0x01D1, 0), "certhash": (0x01D2, VAR), "ws": (0x01DD, 0),
    "wss": (0x01DE, 0), "http": (0x01E0, 0),
}
ALIASES = {"ipfs": "p2p"}
_BY_CODE = {code: name for name, (code, _size) in PROTOCOLS.items()}
_DNS = re.compile(r"[A-Za-z0-9._-]{1,253}")
_LIBP2P_KEY = 0x72
_MULTIHASHES = {0x00: None, 0x12: 32}
"""identity (inlined ed25519/secp256k1 keys: any length) and sha2-256 (RSA keys: 32-byte digest)."""


@dataclass(frozen=True, slots=True)
class Component:
    name: str
    value: str | None = None
    """Text form of the value (canonical: IPv6 compressed, peer id in base58), None for value-less ones."""


@dataclass(frozen=True, slots=True)
class Multiaddr:
    components: tuple[Component, ...]

    @property
    def text(self) -> str:
        return "".join(f"/{c.name}" + (f"/{c.value}" if c.value is not None else "") for c in self.components)

    def __str__(self) -> str:
        return self.text

    def value(self, name: str) -> str | None:
        return next((c.value for c in self.components if c.name == name), None)

    def has(self, name: str) -> bool:
        return any(c.name == name for c in self.components)

    @property
    def peer_id(self) -> str | None:
        """The node's own peer id: the last /p2p (after /p2p-circuit it is the relayed node, before it the
        relay)."""
        ids = [c.value for c in self.components if c.name == "p2p"]
        return ids[-1] if ids else None

    @property
    def relayed(self) -> bool:
        """Reached through a relay (/p2p-circuit): the address is the relay's, not the node's."""
        return self.has("p2p-circuit")

    def endpoint(self) -> Advertised | None:
        """The host, port and transport this address dials (None without both, or for relayed addresses)."""
        if self.relayed or len(self.components) < 2:
            return None
        host, proto = self.components[0], self.components[1]
        if proto.name not in ("tcp", "udp") or proto.value is None or host.value is None:
            return None
        family: Family | None = None
        if host.name in ("ip4", "dns4"):
            family = 4
        elif host.name in ("ip6", "dns6"):
            family = 6
        elif host.name != "dns":
            return None
        transport: Transport = "tcp" if proto.name == "tcp" else "udp"
        quic = transport == "udp" and (self.has("quic-v1") or self.has("quic"))
        return Advertised(host.value, int(proto.value), transport, "multiaddr",
                          "ip" if host.name.startswith("ip") else "dns", family, quic, self.text)


def parse_multiaddr(text: str) -> Multiaddr:
    s = text.strip()
    if len(s) > MAX_TEXT:
        raise MultiaddrError(f"multiaddr of {len(s)} characters")
    if not s.startswith("/"):
        raise MultiaddrError("a multiaddr starts with '/'")
    parts = s.split("/")[1:]
    if parts and parts[-1] == "":
        parts.pop()
    out: list[Component] = []
    i = 0
    while i < len(parts):
        name = ALIASES.get(parts[i], parts[i])
        if name not in PROTOCOLS:
            raise MultiaddrError(f"unknown multiaddr protocol {parts[i][:32]!r}")
        _code, size = PROTOCOLS[name]
        if size == 0:
            out.append(Component(name))
            i += 1
        else:
            if i + 1 >= len(parts) or parts[i + 1] == "":
                raise MultiaddrError(f"/{name} needs a value")
            out.append(Component(name, _text_value(name, parts[i + 1])))
            i += 2
        if len(out) > MAX_COMPONENTS:
            raise MultiaddrError(f"more than {MAX_COMPONENTS} components")
    if not out:
        raise MultiaddrError("empty multiaddr")
    return Multiaddr(tuple(out))


def _text_value(name: str, value: str) -> str:
    """Validate and canonicalize one text value."""
    try:
        if name == "ip4":
            return str(ipaddress.IPv4Address(value))
        if name == "ip6":
            return str(ipaddress.IPv6Address(value))
    except ValueError:
        raise MultiaddrError(f"bad /{name} address {value[:64]!r}") from None
    if name in ("tcp", "udp"):
        if not re.fullmatch(r"[0-9]{1,5}", value) or int(value) > 65535:
            raise MultiaddrError(f"bad /{name} port {value[:16]!r}")
        return str(int(value))
    if name in ("dns", "dns4", "dns6", "dnsaddr", "sni"):
        if not _DNS.fullmatch(value):
            raise MultiaddrError(f"bad /{name} name {value[:64]!r}")
        return value
    if name == "p2p":
        return base58.encode(_peer_id_bytes(value))
    if name == "certhash":
        return "u" + base64.urlsafe_b64encode(_multibase(value)).decode().rstrip("=")
    if len(value.encode()) > MAX_VALUE:
        raise MultiaddrError(f"/{name} value too long")
    return value


def _peer_id_bytes(text: str) -> bytes:
    """A peer id as base58btc multihash (`Qm...`, `12D3Koo...`) or as a CIDv1 (`bafz...`, base32) -> the
    multihash bytes."""
    try:
        if text.startswith("b"):
            body = text[1:].upper()
            raw = base64.b32decode(body + "=" * (-len(body) % 8))
            version, pos = varint.decode(raw)
            codec, pos = varint.decode(raw, pos)
            if version != 1 or codec != _LIBP2P_KEY:
                raise MultiaddrError("a CID peer id is CIDv1 with the libp2p-key codec")
            mh = raw[pos:]
        else:
            mh = base58.decode(text)
    except (binascii.Error, ValueError, P2PDecodeError) as exc:
        if isinstance(exc, MultiaddrError):
            raise
        raise MultiaddrError(f"bad peer id {text[:64]!r}") from None
    _check_multihash(mh)
    return mh


def _multibase(text: str) -> bytes:
    """A certhash value: multibase base64url (`u`, what go-libp2p writes) or base32 (`b`)."""
    body = text[1:]
    try:
        if text.startswith("u") and re.fullmatch(r"[A-Za-z0-9_-]+", body):
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        elif text.startswith("b") and re.fullmatch(r"[a-z2-7]+", body):
            raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
        else:
            raise MultiaddrError(f"bad /certhash {text[:64]!r} (multibase u... or b...)")
    except (binascii.Error, ValueError) as exc:
        if isinstance(exc, MultiaddrError):
            raise
        raise MultiaddrError(f"bad /certhash {text[:64]!r}") from None
    if not 0 < len(raw) <= MAX_VALUE:
        raise MultiaddrError("bad /certhash length")
    return raw


def _check_multihash(mh: bytes) -> None:
    try:
        code, pos = varint.decode(mh)
        length, pos = varint.decode(mh, pos)
    except P2PDecodeError:
        raise MultiaddrError("a peer id is a multihash") from None
    if code not in _MULTIHASHES:
        raise MultiaddrError(f"peer id multihash code {code:#x} is neither identity nor sha2-256")
    expected = _MULTIHASHES[code]
    if len(mh) - pos != length or (expected is not None and length != expected) or length > MAX_VALUE:
        raise MultiaddrError("peer id multihash length does not match its digest")


def decode_multiaddr(data: bytes) -> Multiaddr:
    """The binary form: (uvarint code, value)*; values fixed-size or uvarint-length-prefixed."""
    if len(data) > MAX_BYTES:
        raise MultiaddrError(f"binary multiaddr of {len(data)} bytes")
    if not data:
        raise MultiaddrError("empty multiaddr")
    out: list[Component] = []
    pos = 0
    try:
        while pos < len(data):
            code, pos = varint.decode(data, pos)
            name = _BY_CODE.get(code)
            if name is None:
                raise MultiaddrError(f"unknown multiaddr protocol code {code:#x}")
            size = PROTOCOLS[name][1]
            if size == VAR:
                size, pos = varint.decode(data, pos)
                if size > MAX_VALUE:
                    raise MultiaddrError(f"/{name} value of {size} bytes")
            if pos + size > len(data):
                raise MultiaddrError(f"/{name} value truncated")
            raw = data[pos:pos + size]
            pos += size
            out.append(Component(name, _binary_value(name, raw) if PROTOCOLS[name][1] else None))
            if len(out) > MAX_COMPONENTS:
                raise MultiaddrError(f"more than {MAX_COMPONENTS} components")
    except MultiaddrError:
        raise
    except P2PDecodeError as exc:
        raise MultiaddrError(f"bad varint in multiaddr ({exc})") from None
    return Multiaddr(tuple(out))


def _binary_value(name: str, raw: bytes) -> str:
    if name == "ip4":
        return str(ipaddress.IPv4Address(raw))
    if name == "ip6":
        return str(ipaddress.IPv6Address(raw))
    if name in ("tcp", "udp"):
        return str(int.from_bytes(raw, "big"))
    if name == "p2p":
        _check_multihash(raw)
        return base58.encode(raw)
    if name == "certhash":
        if not raw:
            raise MultiaddrError("empty /certhash")
        return "u" + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MultiaddrError(f"/{name} value is not text") from None
    return _text_value(name, text)


def encode_multiaddr(addr: Multiaddr) -> bytes:
    out = bytearray()
    for c in addr.components:
        code, size = PROTOCOLS[c.name]
        out += varint.encode(code)
        if size == 0 or c.value is None:
            continue
        if c.name == "ip4":
            raw = ipaddress.IPv4Address(c.value).packed
        elif c.name == "ip6":
            raw = ipaddress.IPv6Address(c.value).packed
        elif c.name in ("tcp", "udp"):
            raw = int(c.value).to_bytes(2, "big")
        elif c.name == "p2p":
            raw = _peer_id_bytes(c.value)
        elif c.name == "certhash":
            raw = _multibase(c.value)
        else:
            raw = c.value.encode()
        if size == VAR:
            out += varint.encode(len(raw))
        out += raw
    return bytes(out)


__all__ = ["Component", "Multiaddr", "MultiaddrError", "decode_multiaddr", "encode_multiaddr",
           "parse_multiaddr"]
