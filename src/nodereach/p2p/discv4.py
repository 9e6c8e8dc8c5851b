"""Ethereum Node Discovery v4 (UDP): packets, PING and PONG.

https://github.com/ethereum/devp2p/blob/master/discv4.md. packet = hash (32) | signature (65: r | s | v) |
type (1) | RLP data; hash = keccak256(signature | type | data), signature over keccak256(type | data) with
the sender's node key, so the receiver learns the sender's id by recovering the key. PING (1) =
[version 4, from [ip, udp, tcp], to [ip, udp, tcp], expiration, enr-seq?]; PONG (2) = [to, ping-hash,
expiration, enr-seq?]. A node answers a PING whose expiration lies in the future with a PONG carrying the
PING's hash (and usually pings back). Extra list elements and bytes after the list are ignored (EIP-8).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from nodereach.p2p import crypto, rlpcodec
from nodereach.p2p.errors import P2PDecodeError, ProtocolError
from nodereach.p2p.exchange import Answer, ProofProtocol

MAX_PACKET = 1280
HEADER_LEN = 32 + 65 + 1
PING, PONG, FINDNODE, NEIGHBORS, ENRREQUEST, ENRRESPONSE = range(1, 7)
VERSION = 4
EXPIRATION_S = 20
"""geth signs its packets 20 s into the future; a node drops packets whose expiration has passed."""


@dataclass(frozen=True, slots=True)
class NodeEndpoint:
    """A node's endpoint as discv4 carries it in Ping/Pong: [ip, udp-port, tcp-port] (devp2p discv4.md, Ping
    packet). Not a net.Endpoint: one address with two ports, and the address may be missing."""

    ip: str | None
    """None when the field is not a 4- or 16-byte address (geth sends what it knows, possibly nothing)."""
    udp: int
    tcp: int

    def rlp(self) -> list[object]:
        raw = b"" if self.ip is None else ipaddress.ip_address(self.ip).packed
        return [raw, self.udp, self.tcp]


@dataclass(frozen=True, slots=True)
class Packet:
    hash: bytes
    public_key: bytes
    """64-byte x || y recovered from the signature."""
    type: int
    data: list[rlpcodec.RlpItem]

    @property
    def node_id(self) -> bytes:
        return crypto.node_id(self.public_key)


@dataclass(frozen=True, slots=True)
class Ping:
    version: int
    sender: NodeEndpoint
    recipient: NodeEndpoint
    expiration: int
    enr_seq: int | None


@dataclass(frozen=True, slots=True)
class Pong:
    recipient: NodeEndpoint
    ping_hash: bytes
    expiration: int
    enr_seq: int | None


def encode_packet(secret: bytes, ptype: int, data: list[object]) -> bytes:
    payload = bytes((ptype,)) + rlpcodec.encode(data)
    signature = crypto.sign_recoverable(secret, crypto.keccak256(payload))
    return crypto.keccak256(signature + payload) + signature + payload


def encode_ping(secret: bytes, sender: NodeEndpoint, recipient: NodeEndpoint, expiration: int,
                enr_seq: int | None = None) -> bytes:
    data: list[object] = [VERSION, sender.rlp(), recipient.rlp(), expiration]
    if enr_seq is not None:
        data.append(enr_seq)
    return encode_packet(secret, PING, data)


def encode_pong(secret: bytes, recipient: NodeEndpoint, ping_hash: bytes, expiration: int,
                enr_seq: int | None = None) -> bytes:
    data: list[object] = [recipient.rlp(), ping_hash, expiration]
    if enr_seq is not None:
        data.append(enr_seq)
    return encode_packet(secret, PONG, data)


def decode_packet(packet: bytes) -> Packet:
    if not HEADER_LEN < len(packet) <= MAX_PACKET:
        raise ProtocolError(f"discv4 packet of {len(packet)} bytes")
    digest, signature, payload = packet[:32], packet[32:97], packet[97:]
    if crypto.keccak256(packet[32:]) != digest:
        raise ProtocolError("discv4 packet hash does not match (not a discv4 packet)")
    try:
        key = crypto.recover(signature, crypto.keccak256(payload))
        data = rlpcodec.as_list(rlpcodec.decode(payload[1:], strict=False), "packet data")
    except P2PDecodeError as exc:
        raise ProtocolError(f"bad discv4 packet: {exc}") from None
    return Packet(digest, key, payload[0], data)


def _endpoint(item: rlpcodec.RlpItem) -> NodeEndpoint:
    fields = rlpcodec.as_list(item, "endpoint", 3)
    raw = rlpcodec.as_bytes(fields[0], "endpoint ip", 16)
    ip = str(ipaddress.ip_address(raw)) if len(raw) in (4, 16) else None
    return NodeEndpoint(ip, rlpcodec.as_uint(fields[1], "udp port", 2), rlpcodec.as_uint(fields[2], "tcp port", 2))


def parse_ping(packet: Packet) -> Ping:
    try:
        d = packet.data
        if packet.type != PING or len(d) < 4:
            raise ProtocolError("not a discv4 PING")
        return Ping(rlpcodec.as_uint(d[0], "version", 8), _endpoint(d[1]), _endpoint(d[2]),
                    rlpcodec.as_uint(d[3], "expiration", 8),
                    rlpcodec.as_uint(d[4], "enr-seq", 8) if len(d) > 4 and isinstance(d[4], bytes) else None)
    except P2PDecodeError as exc:
        raise ProtocolError(f"bad discv4 PING: {exc}") from None


def parse_pong(packet: Packet) -> Pong:
    try:
        d = packet.data
        if packet.type != PONG or len(d) < 3:
            raise ProtocolError("not a discv4 PONG")
        ping_hash = rlpcodec.as_bytes(d[1], "ping hash", 32)
        if len(ping_hash) != 32:
            raise ProtocolError("PONG ping hash is not 32 bytes")
        return Pong(_endpoint(d[0]), ping_hash, rlpcodec.as_uint(d[2], "expiration", 8),
                    rlpcodec.as_uint(d[3], "enr-seq", 8) if len(d) > 3 and isinstance(d[3], bytes) else None)
    except P2PDecodeError as exc:
        raise ProtocolError(f"bad discv4 PONG: {exc}") from None


class PingExchange:
    """PING the node from an ephemeral key; its PONG (with our PING's hash) is the answer. When the node id
    is known (ENR, enode) the PONG must be signed by it."""

    protocol: ProofProtocol = "discv4"

    def __init__(self, recipient: NodeEndpoint, *, now: float, node_id: bytes | None = None,
                 secret: bytes | None = None) -> None:
        self.node_id = node_id
        self._secret = secret or crypto.new_private_key()
        self._packet = encode_ping(self._secret, NodeEndpoint(None, 0, 0), recipient, int(now) + EXPIRATION_S)
        self.ping_hash = self._packet[:32]

    def request(self) -> bytes:
        return self._packet

    def feed(self, datagram: bytes) -> Answer | None:
        try:
            packet = decode_packet(datagram)
        except ProtocolError:
            return None
        if packet.type != PONG:
            return None  # the node's own PING back (endpoint proof) or anything else: keep waiting
        try:
            pong = parse_pong(packet)
        except ProtocolError as exc:
            return Answer(False, str(exc))
        if pong.ping_hash != self.ping_hash:
            return None
        if self.node_id is not None and packet.node_id != self.node_id:
            return Answer(False, f"PONG signed by node {packet.node_id.hex()[:16]}..., not the expected "
                                 f"{self.node_id.hex()[:16]}...")
        seq = f", enr-seq {pong.enr_seq}" if pong.enr_seq is not None else ""
        return Answer(True, f"discv4 node {packet.node_id.hex()[:16]}...: PONG{seq}")

    def silence(self) -> str:
        return "no PONG: UDP does not reach the node (or its clock is more than 20 s off)"
