"""Bitcoin P2P: message framing and the `version` message, the first thing a node says.

https://developer.bitcoin.org/reference/p2p_networking.html#message-headers and #version. A message is
magic (4) | command (12, NUL padded) | payload length (4, LE) | checksum (first 4 bytes of SHA256(SHA256(
payload))) | payload. A listening node answers a `version` with its own `version` (then `verack`); a
message with another network's magic makes it close the connection without a word.
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
from dataclasses import dataclass

from nodereach.net import unmap
from nodereach.p2p.errors import ProtocolError
from nodereach.p2p.exchange import Answer, ProofProtocol

NETWORKS: dict[str, bytes] = {
    "main": bytes.fromhex("f9beb4d9"),
    "testnet3": bytes.fromhex("0b110907"),
    "testnet4": bytes.fromhex("1c163f28"),
    "signet": bytes.fromhex("0a03cf40"),  # the default signet; a custom signet has its own (pass the magic)
    "regtest": bytes.fromhex("fabfb5da"),
}
"""Message start bytes per network (Bitcoin Core src/kernel/chainparams.cpp `pchMessageStart`)."""
HEADER_LEN = 24
MAX_PAYLOAD = 4096
"""Largest payload read in a first exchange: a `version` is about 100 bytes (user agents are capped at 256)."""
PROTOCOL_VERSION = 70016
USER_AGENT = b"/nodereach:0.1/"


def checksum(payload: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]


def encode_message(magic: bytes, command: str, payload: bytes) -> bytes:
    if len(magic) != 4 or len(command) > 12:
        raise ValueError("magic is 4 bytes, a command at most 12 characters")
    return magic + command.encode("ascii").ljust(12, b"\x00") + struct.pack("<I", len(payload)) + \
        checksum(payload) + payload


def _net_addr(ip: str | None, port: int, services: int = 0) -> bytes:
    """services (8) | IPv6 or IPv4-mapped address (16) | port (2, big-endian) — without the time field."""
    raw = b"\x00" * 16
    if ip is not None:
        addr = ipaddress.ip_address(ip)
        raw = addr.packed if addr.version == 6 else b"\x00" * 10 + b"\xff\xff" + addr.packed
    return struct.pack("<Q", services) + raw + struct.pack(">H", port)


def encode_version(magic: bytes, *, nonce: int, timestamp: int, receiver: tuple[str, int] | None = None,
                   receiver_services: int = 0, sender: tuple[str, int] | None = None, sender_services: int = 0,
                   user_agent: bytes = USER_AGENT, start_height: int = 0, services: int = 0,
                   relay: bool | None = False, version: int = PROTOCOL_VERSION) -> bytes:
    """A `version` message. `relay` False asks the peer not to announce transactions (BIP 37), so a node
    that answers sends nothing it does not have to; None leaves the field out (before protocol 70001)."""
    rip, rport = receiver if receiver is not None else (None, 0)
    sip, sport = sender if sender is not None else (None, 0)
    payload = struct.pack("<iQq", version, services, timestamp) + _net_addr(rip, rport, receiver_services) + \
        _net_addr(sip, sport, sender_services) + struct.pack("<Q", nonce) + _var_str(user_agent) + \
        struct.pack("<i", start_height) + (b"" if relay is None else bytes((relay,)))
    return encode_message(magic, "version", payload)


def _var_str(data: bytes) -> bytes:
    if len(data) >= 0xFD:
        raise ValueError("user agent too long")
    return bytes((len(data),)) + data


@dataclass(frozen=True, slots=True)
class Message:
    magic: bytes
    command: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Version:
    version: int
    services: int
    timestamp: int
    receiver: tuple[str, int]
    nonce: int
    user_agent: str
    start_height: int
    relay: bool | None


def decode_version(payload: bytes) -> Version:
    if len(payload) < 80 + 1 + 4:
        raise ProtocolError(f"version payload of {len(payload)} bytes is too short")
    version, services, timestamp = struct.unpack_from("<iQq", payload, 0)
    recv_ip = ipaddress.IPv6Address(payload[28:44])
    ip = str(unmap(recv_ip))
    (port,) = struct.unpack_from(">H", payload, 44)
    (nonce,) = struct.unpack_from("<Q", payload, 72)
    pos = 80
    n = payload[pos]
    if n >= 0xFD:
        n, width = (struct.unpack_from("<H", payload, pos + 1)[0], 3) if n == 0xFD else (1 << 30, 0)
    else:
        width = 1
    if width == 0 or n > 256 or pos + width + n + 4 > len(payload):
        raise ProtocolError("version user agent does not fit the payload")
    agent = payload[pos + width:pos + width + n].decode("utf-8", "replace")
    pos += width + n
    (height,) = struct.unpack_from("<i", payload, pos)
    pos += 4
    relay = bool(payload[pos]) if pos < len(payload) else None
    return Version(version, services, timestamp, (ip, port), nonce, agent, height, relay)


class MessageReader:
    """Incremental framing: feed bytes, get whole messages. Buffers at most one header + MAX_PAYLOAD."""

    def __init__(self, magic: bytes) -> None:
        self.magic = magic
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out: list[Message] = []
        while len(self._buf) >= HEADER_LEN:
            head = bytes(self._buf[:HEADER_LEN])
            if head[:4] != self.magic:
                name = next((k for k, v in NETWORKS.items() if v == head[:4]), head[:4].hex())
                raise ProtocolError(f"the peer speaks another network's messages (magic {name})")
            raw_cmd = head[4:16]
            command = raw_cmd.rstrip(b"\x00")
            if b"\x00" in command or not all(0x20 < c < 0x7F for c in command):
                raise ProtocolError("malformed command name in message header")
            (length,) = struct.unpack_from("<I", head, 16)
            if length > MAX_PAYLOAD:
                raise ProtocolError(f"{command.decode()} message of {length} bytes is larger than a first "
                                    "exchange needs")
            if len(self._buf) < HEADER_LEN + length:
                break
            payload = bytes(self._buf[HEADER_LEN:HEADER_LEN + length])
            del self._buf[:HEADER_LEN + length]
            if checksum(payload) != head[20:24]:
                raise ProtocolError(f"{command.decode()} message with a wrong checksum")
            out.append(Message(head[:4], command.decode(), payload))
        return out


class VersionExchange:
    """Send our `version`; the node's `version` is the answer."""

    protocol: ProofProtocol = "bitcoin"
    max_reply = HEADER_LEN * 4 + MAX_PAYLOAD

    def __init__(self, magic: bytes, *, nonce: int, timestamp: int, receiver: tuple[str, int] | None = None,
                 network: str | None = None) -> None:
        self.magic = magic
        self.network = network or next((k for k, v in NETWORKS.items() if v == magic), magic.hex())
        self._request = encode_version(magic, nonce=nonce, timestamp=timestamp, receiver=receiver)
        self._reader = MessageReader(magic)
        self._nonce = nonce

    def request(self) -> bytes:
        return self._request

    def feed(self, data: bytes) -> Answer | None:
        try:
            messages = self._reader.feed(data)
        except ProtocolError as exc:
            return Answer(False, str(exc))
        for m in messages:
            if m.command != "version":
                return Answer(False, f"the peer sent {m.command!r} before its version")
            try:
                v = decode_version(m.payload)
            except ProtocolError as exc:
                return Answer(False, str(exc))
            if v.nonce == self._nonce and v.nonce:
                return Answer(False, "the peer echoed our own nonce (a connection to ourselves)")
            return Answer(True, f"{self.network} node: version {v.version} {v.user_agent} height {v.start_height}")
        return None

    def closed(self) -> Answer:
        return Answer(False, f"closed without a version (not a Bitcoin node, or not on {self.network})")
