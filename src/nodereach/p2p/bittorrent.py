"""BitTorrent peer wire handshake (BEP 3): pstrlen 19 | "BitTorrent protocol" | 8 reserved bytes |
20-byte infohash | 20-byte peer id = 68 bytes.

https://www.bittorrent.org/beps/bep_0003.html. A client answers only for a torrent it serves: with an
unknown infohash it closes the connection without a handshake (Transmission, libtorrent), so the proof
needs an infohash read from the node's own RPC.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from nodereach.p2p.errors import ProtocolError
from nodereach.p2p.exchange import Answer, ProofProtocol

PSTR = b"BitTorrent protocol"
HANDSHAKE_LEN = 1 + len(PSTR) + 8 + 20 + 20
PEER_ID_PREFIX = b"-NR0100-"
"""Azureus-style client id ("NR" version 0.1.0.0): trackers and peers can tell nodereach's probes apart."""


@dataclass(frozen=True, slots=True)
class Handshake:
    reserved: bytes
    infohash: bytes
    peer_id: bytes


def new_peer_id() -> bytes:
    return PEER_ID_PREFIX + secrets.token_bytes(20 - len(PEER_ID_PREFIX))


def encode_handshake(infohash: bytes, peer_id: bytes, reserved: bytes = bytes(8)) -> bytes:
    if len(infohash) != 20 or len(peer_id) != 20 or len(reserved) != 8:
        raise ValueError("infohash and peer id are 20 bytes, reserved 8")
    return bytes((len(PSTR),)) + PSTR + reserved + infohash + peer_id


def decode_handshake(data: bytes) -> Handshake:
    """Exactly the first 68 bytes of a stream (what follows is the peer's other messages)."""
    if len(data) < 1 or data[0] != len(PSTR) or data[1:1 + len(PSTR)] != PSTR[:max(0, len(data) - 1)]:
        raise ProtocolError("not a BitTorrent handshake")
    if len(data) < HANDSHAKE_LEN:
        raise ProtocolError("truncated BitTorrent handshake")
    return Handshake(data[20:28], data[28:48], data[48:68])


class HandshakeExchange:
    """Send our handshake for `infohash`; the peer's handshake for the same infohash is the answer."""

    protocol: ProofProtocol = "bittorrent"
    max_reply = HANDSHAKE_LEN

    def __init__(self, infohash: bytes, peer_id: bytes | None = None) -> None:
        self.infohash = infohash
        self.peer_id = peer_id or new_peer_id()
        self._buf = b""

    def request(self) -> bytes:
        return encode_handshake(self.infohash, self.peer_id)

    def feed(self, data: bytes) -> Answer | None:
        self._buf = (self._buf + data)[:HANDSHAKE_LEN]
        try:
            # Fail as soon as the prefix is wrong, not only once 68 bytes arrived.
            if self._buf[0] != len(PSTR) or not PSTR.startswith(self._buf[1:1 + len(PSTR)]):
                raise ProtocolError("not a BitTorrent handshake")
            if len(self._buf) < HANDSHAKE_LEN:
                return None
            hs = decode_handshake(self._buf)
        except ProtocolError as exc:
            return Answer(False, str(exc))
        if hs.infohash != self.infohash:
            return Answer(False, f"handshake for another torrent ({hs.infohash.hex()})")
        client = hs.peer_id[:8].decode("latin-1") if hs.peer_id[:1] == b"-" else hs.peer_id[:8].hex()
        return Answer(True, f"BitTorrent peer serves {self.infohash.hex()} (client {client!r})")

    def closed(self) -> Answer:
        return Answer(False, "closed without a handshake (not a BitTorrent client, or it does not serve "
                             f"{self.infohash.hex()})")
