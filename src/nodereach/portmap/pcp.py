"""PCP (RFC 6887) wire format, sans-IO: build requests, parse replies, map result codes to errors.

Only bytes in, bytes out. Every parse is bounded (1100-byte messages, §7) and raises MalformedMessage and
nothing else on hostile input.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from dataclasses import dataclass, field
from typing import Literal

from nodereach.net import Transport, unmap
from nodereach.portmap.errors import MalformedMessage, ResultCodeError, UnsupportedVersion

VERSION = 2
PORT = 5351
CLIENT_PORT = 5350  # unsolicited ANNOUNCE/MAP go to 224.0.0.1:5350 (§8.5)
MAX_MESSAGE = 1100
HEADER_LEN = 24
MAP_LEN = 36
PEER_LEN = 56

OP_ANNOUNCE = 0
OP_MAP = 1
OP_PEER = 2

OPTION_THIRD_PARTY = 1
OPTION_PREFER_FAILURE = 2
OPTION_FILTER = 3

PROTO_NUMBERS = {"tcp": 6, "udp": 17, "all": 0}
PROTO_NAMES = {v: k for k, v in PROTO_NUMBERS.items()}

PcpProtocol = Transport | Literal["all"]
"""A MAP/PEER protocol: a transport, or protocol number 0, 'all protocols' (RFC 6887 §11.1)."""

SUCCESS = 0
UNSUPP_VERSION = 1
NOT_AUTHORIZED = 2
MALFORMED_REQUEST = 3
UNSUPP_OPCODE = 4
UNSUPP_OPTION = 5
MALFORMED_OPTION = 6
NETWORK_FAILURE = 7
NO_RESOURCES = 8
UNSUPP_PROTOCOL = 9
USER_EX_QUOTA = 10
CANNOT_PROVIDE_EXTERNAL = 11
ADDRESS_MISMATCH = 12
EXCESSIVE_REMOTE_PEERS = 13

RESULTS: dict[int, tuple[str, str, str | None]] = {
    # code: (name, what it means for the user, hint)
    UNSUPP_VERSION: ("UNSUPP_VERSION", "the gateway does not speak PCP version 2", "try --method natpmp or upnp"),
    NOT_AUTHORIZED: ("NOT_AUTHORIZED", "the gateway refuses mappings from this host",
                     "enable PCP/NAT-PMP for this host on the router, or forward the port by hand"),
    MALFORMED_REQUEST: ("MALFORMED_REQUEST", "the gateway could not parse the request", None),
    UNSUPP_OPCODE: ("UNSUPP_OPCODE", "the gateway does not support this operation", None),
    UNSUPP_OPTION: ("UNSUPP_OPTION", "the gateway does not support a mandatory option", None),
    MALFORMED_OPTION: ("MALFORMED_OPTION", "the gateway rejected an option as malformed", None),
    NETWORK_FAILURE: ("NETWORK_FAILURE", "the gateway has no working external address right now",
                      "check the router's internet connection and retry"),
    NO_RESOURCES: ("NO_RESOURCES", "the gateway is out of mappings", "remove unused mappings (nodereach mappings)"),
    UNSUPP_PROTOCOL: ("UNSUPP_PROTOCOL", "the gateway cannot map this transport protocol", None),
    USER_EX_QUOTA: ("USER_EX_QUOTA", "this host has used up its mapping quota on the gateway",
                    "remove unused mappings (nodereach mappings --delete ...)"),
    CANNOT_PROVIDE_EXTERNAL: ("CANNOT_PROVIDE_EXTERNAL", "the gateway cannot give the requested external port",
                              None),
    ADDRESS_MISMATCH: ("ADDRESS_MISMATCH", "the gateway saw a different source address than this host sent: "
                       "another NAT sits between this host and the gateway",
                       "port mapping on that gateway cannot reach this node; run `nodereach check`"),
    EXCESSIVE_REMOTE_PEERS: ("EXCESSIVE_REMOTE_PEERS", "too many remote peers in the FILTER option", None),
}

# Codes after which a retry may succeed (RFC 6887 §7.4: short-lifetime errors).
TRANSIENT = {NETWORK_FAILURE, NO_RESOURCES, USER_EX_QUOTA, CANNOT_PROVIDE_EXTERNAL}

_HDR_REQ = struct.Struct("!BBHI16s")
_HDR_RESP = struct.Struct("!BBBBII12x")
_MAP = struct.Struct("!12sB3xHH16s")
_PEER = struct.Struct("!12sB3xHH16sH2x16s")


def to_wire_address(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    """16-byte PCP address: IPv4 as IPv4-mapped IPv6 (§5)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv4Address):
        return b"\x00" * 10 + b"\xff\xff" + ip.packed
    return ip.packed


def from_wire_address(raw: bytes) -> str:
    """Inverse of to_wire_address; IPv4-mapped addresses come back as dotted IPv4."""
    ip = ipaddress.IPv6Address(raw)
    return str(unmap(ip))


def any_address(family: int) -> bytes:
    """The 'no preference' suggested external address: ::ffff:0.0.0.0 for IPv4, :: for IPv6 (§11.1)."""
    return to_wire_address("0.0.0.0") if family == 4 else bytes(16)


def new_nonce() -> bytes:
    """A fresh 96-bit mapping nonce; keep it for the mapping's renewals and its deletion (§11.1)."""
    return os.urandom(12)


@dataclass(frozen=True, slots=True)
class Option:
    code: int
    data: bytes


@dataclass(frozen=True, slots=True)
class MapRequest:
    """MAP (§11.1). lifetime=0 deletes; the nonce must be the one the mapping was created with."""

    nonce: bytes
    protocol: PcpProtocol
    internal_port: int
    lifetime: int
    client_address: str
    suggested_external_port: int = 0
    suggested_external_address: str | None = None
    options: tuple[Option, ...] = ()


@dataclass(frozen=True, slots=True)
class PeerRequest:
    """PEER (§12): create or learn the mapping of an existing outbound flow to one remote peer."""

    nonce: bytes
    protocol: PcpProtocol
    internal_port: int
    lifetime: int
    client_address: str
    remote_address: str
    remote_port: int
    suggested_external_port: int = 0
    suggested_external_address: str | None = None
    options: tuple[Option, ...] = ()


@dataclass(frozen=True, slots=True)
class Response:
    """A parsed PCP response (any opcode). For MAP/PEER the mapping fields are set."""

    opcode: int
    result_code: int
    lifetime: int
    epoch: int
    nonce: bytes | None = None
    protocol: int | None = None
    internal_port: int | None = None
    external_port: int | None = None
    external_address: str | None = None
    remote_port: int | None = None
    remote_address: str | None = None
    options: tuple[Option, ...] = field(default=())
    version: int = VERSION

    @property
    def ok(self) -> bool:
        return self.result_code == SUCCESS


def _encode_options(options: tuple[Option, ...]) -> bytes:
    out = bytearray()
    for opt in options:
        if len(opt.data) > 0xFFFF:
            raise ValueError("option too long")
        pad = (-len(opt.data)) % 4
        out += struct.pack("!BBH", opt.code, 0, len(opt.data)) + opt.data + b"\x00" * pad
    return bytes(out)


def _check_port(port: int, name: str) -> None:
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"{name} out of range: {port}")


def _header(opcode: int, lifetime: int, client_address: str) -> bytes:
    if not 0 <= lifetime <= 0xFFFFFFFF:
        raise ValueError(f"lifetime out of range: {lifetime}")
    return _HDR_REQ.pack(VERSION, opcode & 0x7F, 0, lifetime, to_wire_address(client_address))


def encode_announce(client_address: str) -> bytes:
    """ANNOUNCE request (§14.1): a cheap probe that returns the server's epoch."""
    return _header(OP_ANNOUNCE, 0, client_address)


def _suggested(address: str | None, client_address: str) -> bytes:
    if address is not None:
        return to_wire_address(address)
    return any_address(ipaddress.ip_address(client_address).version)


def encode_map(req: MapRequest) -> bytes:
    if len(req.nonce) != 12:
        raise ValueError("nonce must be 12 bytes")
    _check_port(req.internal_port, "internal port")
    _check_port(req.suggested_external_port, "external port")
    body = _MAP.pack(req.nonce, PROTO_NUMBERS[req.protocol], req.internal_port, req.suggested_external_port,
                     _suggested(req.suggested_external_address, req.client_address))
    return _header(OP_MAP, req.lifetime, req.client_address) + body + _encode_options(req.options)


def encode_peer(req: PeerRequest) -> bytes:
    if len(req.nonce) != 12:
        raise ValueError("nonce must be 12 bytes")
    for port, name in ((req.internal_port, "internal port"), (req.suggested_external_port, "external port"),
                       (req.remote_port, "remote port")):
        _check_port(port, name)
    body = _PEER.pack(req.nonce, PROTO_NUMBERS[req.protocol], req.internal_port, req.suggested_external_port,
                      _suggested(req.suggested_external_address, req.client_address), req.remote_port,
                      to_wire_address(req.remote_address))
    return _header(OP_PEER, req.lifetime, req.client_address) + body + _encode_options(req.options)


def _decode_options(data: bytes) -> tuple[Option, ...]:
    opts: list[Option] = []
    i = 0
    while i < len(data):
        if len(data) - i < 4:
            raise MalformedMessage("PCP option header truncated")
        code, _res, length = struct.unpack_from("!BBH", data, i)
        i += 4
        padded = length + ((-length) % 4)
        if padded > len(data) - i:
            raise MalformedMessage("PCP option runs past the end of the message")
        opts.append(Option(code, bytes(data[i:i + length])))
        i += padded
    return tuple(opts)


def decode_response(data: bytes) -> Response:
    """Parse a PCP response. Raises MalformedMessage on anything that is not a well-formed response.

    A NAT-PMP server answers a PCP request with a NAT-PMP 'unsupported version' reply (version 0): that
    parses as a Response with version 0 and result UNSUPP_VERSION, and raise_for_result raises
    UnsupportedVersion so the caller can fall back (RFC 6887 §9).
    """
    if len(data) < 4:
        raise MalformedMessage(f"PCP reply too short ({len(data)} bytes)")
    if len(data) > MAX_MESSAGE:
        raise MalformedMessage(f"PCP reply too long ({len(data)} bytes)")
    version = data[0]
    if version == 0 and len(data) >= 4 and data[1] & 0x80:
        code = struct.unpack_from("!H", data, 2)[0]
        if code == 1:
            return Response(data[1] & 0x7F, UNSUPP_VERSION, 0, 0, version=0)
        raise MalformedMessage(f"NAT-PMP reply (result {code}) to a PCP request")
    if len(data) < HEADER_LEN or len(data) % 4:
        raise MalformedMessage(f"PCP reply has a bad length ({len(data)} bytes)")
    version, r_op, _res, result, lifetime, epoch = _HDR_RESP.unpack_from(data, 0)
    if not r_op & 0x80:
        raise MalformedMessage("PCP message is a request, not a response")
    opcode = r_op & 0x7F
    if result == UNSUPP_VERSION:
        # RFC 6887 §9: the server names the version it speaks. Only a lower one is a server to fall back from
        # (PCP's draft version 1); ours (a contradiction) or a higher one is no reply a client can act on, and
        # taking it would let one forged datagram abort the request: 1 in 512 random 40-byte datagrams has the
        # response bit and result 1 (test_portmap_hostile's garbage once did). Dropped, the exchange waits on.
        if version >= VERSION:
            raise MalformedMessage(f"PCP UNSUPP_VERSION naming version {version}, not one below {VERSION}")
        return Response(opcode, result, lifetime, epoch, version=version)
    if version != VERSION:
        raise MalformedMessage(f"PCP reply with version {version}")
    body = data[HEADER_LEN:]
    if opcode == OP_ANNOUNCE:
        return Response(opcode, result, lifetime, epoch, options=_decode_options(body))
    if opcode == OP_MAP:
        if len(body) < MAP_LEN:
            if result != SUCCESS and not body:
                return Response(opcode, result, lifetime, epoch)
            raise MalformedMessage("PCP MAP reply truncated")
        nonce, proto, iport, eport, eaddr = _MAP.unpack_from(body, 0)
        return Response(opcode, result, lifetime, epoch, nonce=nonce, protocol=proto, internal_port=iport,
                        external_port=eport, external_address=from_wire_address(eaddr),
                        options=_decode_options(body[MAP_LEN:]))
    if opcode == OP_PEER:
        if len(body) < PEER_LEN:
            if result != SUCCESS and not body:
                return Response(opcode, result, lifetime, epoch)
            raise MalformedMessage("PCP PEER reply truncated")
        nonce, proto, iport, eport, eaddr, rport, raddr = _PEER.unpack_from(body, 0)
        return Response(opcode, result, lifetime, epoch, nonce=nonce, protocol=proto, internal_port=iport,
                        external_port=eport, external_address=from_wire_address(eaddr), remote_port=rport,
                        remote_address=from_wire_address(raddr), options=_decode_options(body[PEER_LEN:]))
    raise MalformedMessage(f"PCP reply with unknown opcode {opcode}")


def matches(req: MapRequest | PeerRequest, resp: Response) -> bool:
    """Does this response answer this request (§11.3: nonce, protocol, internal port; PEER: remote too)?

    A reply that does not match is ignored (it may be a stale or spoofed one), never trusted.
    """
    want_op = OP_MAP if isinstance(req, MapRequest) else OP_PEER
    if resp.result_code == UNSUPP_VERSION:
        return True  # version negotiation reply: carries no mapping fields (§9)
    if resp.opcode != want_op:
        return False
    if resp.nonce is None:  # short error reply: cannot be matched beyond the opcode
        return resp.result_code != SUCCESS
    if resp.nonce != req.nonce or resp.protocol != PROTO_NUMBERS[req.protocol]:
        return False
    if resp.internal_port != req.internal_port:
        return False
    if isinstance(req, PeerRequest):
        return resp.remote_port == req.remote_port and resp.remote_address == str(
            ipaddress.ip_address(req.remote_address))
    return True


def raise_for_result(resp: Response) -> None:
    """Turn a non-success result code into a ResultCodeError with a clear message."""
    if resp.result_code == SUCCESS:
        return
    if resp.result_code == UNSUPP_VERSION:
        speaks = "NAT-PMP" if resp.version == 0 else f"PCP version {resp.version}"
        raise UnsupportedVersion(f"the gateway speaks {speaks}, not PCP version {VERSION}", resp.version)
    name, message, hint = RESULTS.get(resp.result_code, (f"RESULT_{resp.result_code}", "unknown result code", None))
    raise ResultCodeError("PCP", resp.result_code, name, message, hint)
