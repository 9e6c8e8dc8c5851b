"""Monero's Levin protocol: the 33-byte bucket header and the ping (command 1003) a node answers with "OK".

Header (contrib/epee/include/net/levin_base.h, `bucket_head2`, little-endian, packed): signature u64
0x0101010101012101 | body size u64 | have-to-return u8 | command u32 | return code i32 | flags u32
(1 request, 2 response) | protocol version u32 (1). COMMAND_PING = P2P_COMMANDS_POOL_BASE (1000) + 3; its
request has no fields, its response `status` ("OK") and `peer_id` (uint64) (src/p2p/p2p_protocol_defs.h,
`node_server::handle_ping`). monerod sends this ping itself to check that a peer which connected in is
reachable; before a handshake it accepts bodies up to 256 KiB (LEVIN_INITIAL_MAX_PACKET_SIZE).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from nodereach.p2p import portable_storage
from nodereach.p2p.errors import ProtocolError
from nodereach.p2p.exchange import Answer, ProofProtocol

SIGNATURE = 0x0101010101012101
HEADER = struct.Struct("<QQBIiII")
HEADER_LEN = HEADER.size  # 33
FLAG_REQUEST = 1
FLAG_RESPONSE = 2
PROTOCOL_VERSION = 1
COMMAND_HANDSHAKE = 1001
COMMAND_TIMED_SYNC = 1002
COMMAND_PING = 1003
MAX_BODY = 4096
"""Largest body read in a first exchange (a ping response is about 40 bytes)."""


@dataclass(frozen=True, slots=True)
class Header:
    body_size: int
    have_to_return: bool
    command: int
    return_code: int
    flags: int
    version: int


def encode(command: int, body: bytes, *, request: bool, have_to_return: bool, return_code: int = 0) -> bytes:
    flags = FLAG_REQUEST if request else FLAG_RESPONSE
    return HEADER.pack(SIGNATURE, len(body), have_to_return, command, return_code, flags,
                       PROTOCOL_VERSION) + body


def ping_request() -> bytes:
    """The whole ping: header (invoke, request) + an empty portable storage section (10 bytes)."""
    return encode(COMMAND_PING, portable_storage.encode({}), request=True, have_to_return=True)


def decode_header(data: bytes) -> Header:
    if len(data) < HEADER_LEN:
        raise ProtocolError("truncated Levin header")
    sig, size, ret, command, code, flags, version = HEADER.unpack_from(data)
    if sig != SIGNATURE:
        raise ProtocolError("not a Levin message (bad signature)")
    return Header(size, bool(ret), command, code, flags, version)


class MessageReader:
    """Incremental framing: whole (header, body) pairs; bodies over MAX_BODY are an error."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[Header, bytes]]:
        self._buf += data
        out: list[tuple[Header, bytes]] = []
        while len(self._buf) >= HEADER_LEN:
            head = decode_header(bytes(self._buf[:HEADER_LEN]))
            if head.body_size > MAX_BODY:
                raise ProtocolError(f"Levin body of {head.body_size} bytes is larger than a first exchange needs")
            if len(self._buf) < HEADER_LEN + head.body_size:
                break
            body = bytes(self._buf[HEADER_LEN:HEADER_LEN + head.body_size])
            del self._buf[:HEADER_LEN + head.body_size]
            out.append((head, body))
        return out


@dataclass(frozen=True, slots=True)
class PingResponse:
    status: str
    peer_id: int


def decode_ping_response(body: bytes) -> PingResponse:
    doc = portable_storage.decode(body)
    status = doc.get("status")
    peer_id = doc.get("peer_id")
    if not isinstance(status, bytes) or not isinstance(peer_id, int) or isinstance(peer_id, bool):
        raise ProtocolError("ping response without status and peer_id")
    return PingResponse(status.decode("utf-8", "replace"), peer_id)


class PingExchange:
    """Send a Levin ping; a response to command 1003 with status OK is the answer."""

    protocol: ProofProtocol = "monero"
    max_reply = 4 * (HEADER_LEN + MAX_BODY)

    def __init__(self) -> None:
        self._reader = MessageReader()
        self._skipped = 0

    def request(self) -> bytes:
        return ping_request()

    def feed(self, data: bytes) -> Answer | None:
        try:
            messages = self._reader.feed(data)
        except ProtocolError as exc:
            return Answer(False, str(exc))
        for head, body in messages:
            if head.command != COMMAND_PING or not head.flags & FLAG_RESPONSE:
                # monerod may send its own requests (e.g. support flags) first; a few are tolerated.
                self._skipped += 1
                if self._skipped > 3:
                    return Answer(False, "Levin messages but no ping response")
                continue
            if head.return_code < 0:
                return Answer(False, f"Levin ping refused (return code {head.return_code})")
            try:
                resp = decode_ping_response(body)
            except ProtocolError as exc:
                return Answer(False, str(exc))
            if resp.status != "OK":
                return Answer(False, f"Levin ping answered with status {resp.status[:40]!r}")
            return Answer(True, f"Monero node: ping OK, peer_id {resp.peer_id:016x}")
        return None

    def closed(self) -> Answer:
        return Answer(False, "closed without a Levin ping response (not a Monero node)")
