"""Unsigned LEB128 varints as multiformats use them (multiaddr, multistream-select length prefixes).

https://github.com/multiformats/unsigned-varint: at most 9 bytes, minimal encoding only.
"""

from __future__ import annotations

from nodereach.p2p.errors import P2PDecodeError

MAX_BYTES = 9


class Incomplete(P2PDecodeError):
    """The buffer ends inside a varint: a stream reader waits for more bytes."""


def encode(value: int) -> bytes:
    if not 0 <= value < 1 << 63:
        raise ValueError("varint out of range")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int]:
    """(value, position after it). Incomplete if the buffer ends first; P2PDecodeError if overlong or not
    minimal."""
    value = 0
    for i in range(MAX_BYTES):
        if pos + i >= len(buf):
            raise Incomplete("truncated varint")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise P2PDecodeError("varint not minimally encoded")
            return value, pos + i + 1
    raise P2PDecodeError(f"varint longer than {MAX_BYTES} bytes")
