"""libp2p multistream-select: the protocol negotiation that opens every libp2p TCP connection.

https://github.com/multiformats/multistream-select: each message is an unsigned-varint length, then that
many bytes ending in a newline (the length counts it). Both sides first send the header
`/multistream/1.0.0`; a listener echoes it before anything else (then answers proposals with the protocol
id, or `na`). Over TCP this happens before the security handshake, so it proves a libp2p listener without
keys.
"""

from __future__ import annotations

from nodereach.p2p import varint
from nodereach.p2p.errors import P2PDecodeError, ProtocolError
from nodereach.p2p.exchange import Answer, ProofProtocol

HEADER = "/multistream/1.0.0"
MAX_MESSAGE = 1024
"""Longest message read (protocol ids are short; the spec's own limit is 64 KiB)."""


def encode(text: str) -> bytes:
    payload = text.encode() + b"\n"
    return varint.encode(len(payload)) + payload


class MessageReader:
    """Incremental: feed bytes, get whole messages (text without the newline)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        out: list[str] = []
        while self._buf:
            try:
                length, pos = varint.decode(self._buf)
            except varint.Incomplete:
                break
            except P2PDecodeError as exc:
                raise ProtocolError(f"bad multistream length ({exc})") from None
            if length > MAX_MESSAGE or length == 0:
                raise ProtocolError(f"multistream message of {length} bytes")
            if len(self._buf) < pos + length:
                break
            payload = bytes(self._buf[pos:pos + length])
            del self._buf[:pos + length]
            if not payload.endswith(b"\n"):
                raise ProtocolError("multistream message without its newline")
            try:
                out.append(payload[:-1].decode("utf-8"))
            except UnicodeDecodeError:
                raise ProtocolError("multistream message is not UTF-8") from None
        return out


class HeaderExchange:
    """Send the multistream header; the node's echo of it is the answer."""

    protocol: ProofProtocol = "libp2p"
    max_reply = 2 * MAX_MESSAGE

    def __init__(self) -> None:
        self._reader = MessageReader()

    def request(self) -> bytes:
        return encode(HEADER)

    def feed(self, data: bytes) -> Answer | None:
        try:
            messages = self._reader.feed(data)
        except ProtocolError as exc:
            return Answer(False, str(exc))
        if not messages:
            return None
        if messages[0] == HEADER:
            return Answer(True, f"libp2p node: multistream-select {HEADER} echoed")
        return Answer(False, f"the peer answered {messages[0][:60]!r} instead of {HEADER}")

    def closed(self) -> Answer:
        return Answer(False, "closed without the multistream-select header (not a libp2p TCP listener)")
