"""RFC 8489 STUN over TCP (section 6.2.2): messages are self-delimiting by their length field. Sans-IO."""

from __future__ import annotations

from nodereach.stun.errors import StunParseError
from nodereach.stun.message import HEADER_SIZE, MAX_MESSAGE_SIZE


class StreamDecoder:
    """Split a byte stream into complete STUN messages.

    Buffers at most one message (<= 65555 bytes); a header that cannot start a STUN message raises
    StunParseError, after which the connection should be closed (there is no way to resynchronise).
    """

    def __init__(self, max_message: int = MAX_MESSAGE_SIZE) -> None:
        self._buf = bytearray()
        self._max = max_message

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every message now complete, in order."""
        self._buf += data
        out: list[bytes] = []
        while len(self._buf) >= HEADER_SIZE:
            if self._buf[0] & 0xC0:
                raise StunParseError("stream does not carry STUN")
            length = (self._buf[2] << 8) | self._buf[3]
            if length % 4:
                raise StunParseError("message length not a multiple of 4")
            total = HEADER_SIZE + length
            if total > self._max:
                raise StunParseError("message larger than allowed")
            if len(self._buf) < total:
                break
            out.append(bytes(self._buf[:total]))
            del self._buf[:total]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message held."""
        return len(self._buf)
