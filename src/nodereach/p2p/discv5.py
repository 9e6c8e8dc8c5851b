"""Ethereum Node Discovery v5.1 (UDP): masked packet headers and the WHOAREYOU challenge.

https://github.com/ethereum/devp2p/blob/master/discv5/discv5-wire.md. packet = masking-iv (16) |
masked-header | message; the header is AES-128-CTR encrypted with the first 16 bytes of the *destination's*
node id as key and the masking-iv as IV: header = "discv5" | version 0x0001 | flag | nonce (12) |
authdata-size (2) | authdata. An ordinary message packet (flag 0, authdata = source node id) that the node
cannot decrypt (no session: any random message) makes it answer WHOAREYOU (flag 1, authdata = id-nonce
(16) | enr-seq (8), no message) with the request's nonce, masked with the *requester's* node id. A packet
masked with another id does not unmask to "discv5" and gets no answer.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass

from nodereach.p2p import crypto
from nodereach.p2p.errors import ProtocolError
from nodereach.p2p.exchange import Answer, ProofProtocol

PROTOCOL_ID = b"discv5"
VERSION = 1
STATIC_HEADER_LEN = 6 + 2 + 1 + 12 + 2
IV_LEN = 16
MIN_PACKET = 63
MAX_PACKET = 1280
FLAG_MESSAGE, FLAG_WHOAREYOU, FLAG_HANDSHAKE = 0, 1, 2
RANDOM_MESSAGE_LEN = 20
"""Bytes of random "ciphertext" in the probe packet (the GCM tag alone is 16)."""


@dataclass(frozen=True, slots=True)
class Packet:
    masking_iv: bytes
    flag: int
    nonce: bytes
    authdata: bytes
    header: bytes
    """The unmasked header (static header + authdata): with the IV, the AD of the message's AES-GCM."""
    message: bytes


@dataclass(frozen=True, slots=True)
class WhoAreYou:
    nonce: bytes
    id_nonce: bytes
    enr_seq: int


def encode_header(flag: int, nonce: bytes, authdata: bytes) -> bytes:
    if len(nonce) != 12:
        raise ValueError("nonce is 12 bytes")
    return PROTOCOL_ID + struct.pack(">HB", VERSION, flag) + nonce + struct.pack(">H", len(authdata)) + authdata


def encode_packet(dest_id: bytes, header: bytes, message: bytes, masking_iv: bytes) -> bytes:
    if len(dest_id) != 32 or len(masking_iv) != IV_LEN:
        raise ValueError("node ids are 32 bytes, the masking IV 16")
    return masking_iv + crypto.aes128_ctr(dest_id[:16], masking_iv, header) + message


def random_packet(dest_id: bytes, src_id: bytes, nonce: bytes, masking_iv: bytes) -> bytes:
    """An ordinary message packet whose message is random bytes: the node cannot decrypt it and challenges
    us with WHOAREYOU (the start of every discv5 handshake)."""
    header = encode_header(FLAG_MESSAGE, nonce, src_id)
    return encode_packet(dest_id, header, secrets.token_bytes(RANDOM_MESSAGE_LEN), masking_iv)


def encode_whoareyou(dest_id: bytes, request_nonce: bytes, id_nonce: bytes, enr_seq: int,
                     masking_iv: bytes) -> bytes:
    header = encode_header(FLAG_WHOAREYOU, request_nonce, id_nonce + struct.pack(">Q", enr_seq))
    return encode_packet(dest_id, header, b"", masking_iv)


def decode_packet(packet: bytes, local_id: bytes) -> Packet:
    """Unmask a packet sent to `local_id`. ProtocolError when it is not a discv5 packet for this id."""
    if not MIN_PACKET <= len(packet) <= MAX_PACKET:
        raise ProtocolError(f"discv5 packet of {len(packet)} bytes")
    iv = packet[:IV_LEN]
    key = local_id[:16]
    static = crypto.aes128_ctr(key, iv, packet[IV_LEN:IV_LEN + STATIC_HEADER_LEN])
    if static[:6] != PROTOCOL_ID:
        raise ProtocolError("header does not unmask to 'discv5' (another protocol, or not for this node id)")
    version, flag = struct.unpack_from(">HB", static, 6)
    if version != VERSION:
        raise ProtocolError(f"discv5 version {version}")
    nonce = static[9:21]
    (size,) = struct.unpack_from(">H", static, 21)
    end = IV_LEN + STATIC_HEADER_LEN + size
    if end > len(packet):
        raise ProtocolError("discv5 authdata runs past the packet")
    header = crypto.aes128_ctr(key, iv, packet[IV_LEN:end])
    authdata = header[STATIC_HEADER_LEN:]
    message = packet[end:]
    if flag == FLAG_MESSAGE and size != 32:
        raise ProtocolError("discv5 message packet authdata is not 32 bytes")
    if flag == FLAG_WHOAREYOU and (size != 24 or message):
        raise ProtocolError("discv5 WHOAREYOU authdata is not 24 bytes, or carries a message")
    if flag == FLAG_HANDSHAKE and size < 34:
        raise ProtocolError("discv5 handshake authdata too short")
    if flag > FLAG_HANDSHAKE:
        raise ProtocolError(f"discv5 packet flag {flag}")
    return Packet(iv, flag, nonce, authdata, header, message)


def parse_whoareyou(packet: Packet) -> WhoAreYou:
    if packet.flag != FLAG_WHOAREYOU:
        raise ProtocolError("not a WHOAREYOU packet")
    return WhoAreYou(packet.nonce, packet.authdata[:16], struct.unpack(">Q", packet.authdata[16:24])[0])


class WhoareyouExchange:
    """Send a random message packet masked with the node's id; WHOAREYOU with our nonce is the answer."""

    protocol: ProofProtocol = "discv5"

    def __init__(self, node_id: bytes, *, src_id: bytes | None = None, nonce: bytes | None = None,
                 masking_iv: bytes | None = None) -> None:
        if len(node_id) != 32:
            raise ValueError("a node id is 32 bytes")
        self.node_id = node_id
        self.src_id = src_id or secrets.token_bytes(32)
        self.nonce = nonce or secrets.token_bytes(12)
        self._packet = random_packet(node_id, self.src_id, self.nonce, masking_iv or secrets.token_bytes(IV_LEN))

    def request(self) -> bytes:
        return self._packet

    def feed(self, datagram: bytes) -> Answer | None:
        try:
            packet = decode_packet(datagram, self.src_id)
        except ProtocolError:
            return None
        if packet.flag != FLAG_WHOAREYOU or packet.nonce != self.nonce:
            return None
        challenge = parse_whoareyou(packet)
        return Answer(True, f"discv5 node {self.node_id.hex()[:16]}...: WHOAREYOU (enr-seq {challenge.enr_seq})")

    def silence(self) -> str:
        return ("no WHOAREYOU: UDP does not reach the node, or the node id is not this node's (a packet "
                "masked with another id gets no answer)")
