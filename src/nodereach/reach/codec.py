"""Sans-IO codec for the dial-back token messages (no sockets here; the drivers do the I/O).

A dial-back probe carries a token the client chose and told the server over HTTP. The client's temporary
listener answers a PROBE with an ECHO of the same token: that proves the probe reached *this* host (and for
UDP, lets the server see the datagram arrived). The wire format is tiny and fixed so a probe is never bigger
than the request that caused it:

    magic "NRDB" (4) | version 1 (1) | kind (1: PROBE, 2: ECHO) | token length n (1) | token (n, 8..32)

Every byte is parsed as hostile: bounded sizes, one typed error (DialbackCodecError), no other exception.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

MAGIC = b"NRDB"
VERSION = 1
HEADER_LEN = 7
MIN_TOKEN = 8
MAX_TOKEN = 32
MAX_MESSAGE = HEADER_LEN + MAX_TOKEN
"""No valid message is longer than this; a stream buffer never holds more."""


class DialbackCodecError(ValueError):
    """The bytes are not a valid dial-back message (the only error this module raises on input)."""


class Kind(enum.IntEnum):
    PROBE = 1
    ECHO = 2


@dataclass(frozen=True, slots=True)
class Message:
    kind: Kind
    token: bytes

    def __post_init__(self) -> None:
        if not MIN_TOKEN <= len(self.token) <= MAX_TOKEN:
            raise DialbackCodecError(f"token must be {MIN_TOKEN}..{MAX_TOKEN} bytes, got {len(self.token)}")


def encode(message: Message) -> bytes:
    return MAGIC + bytes((VERSION, int(message.kind), len(message.token))) + message.token


def probe(token: bytes) -> bytes:
    return encode(Message(Kind.PROBE, token))


def echo(token: bytes) -> bytes:
    return encode(Message(Kind.ECHO, token))


def _header(data: bytes | bytearray | memoryview) -> tuple[Kind, int]:
    """Validate the 7-byte header; return kind and total message length."""
    if bytes(data[:4]) != MAGIC:
        raise DialbackCodecError("bad magic")
    if data[4] != VERSION:
        raise DialbackCodecError(f"unsupported version {data[4]}")
    try:
        kind = Kind(data[5])
    except ValueError:
        raise DialbackCodecError(f"unknown message kind {data[5]}") from None
    n = data[6]
    if not MIN_TOKEN <= n <= MAX_TOKEN:
        raise DialbackCodecError(f"token length {n} out of range")
    return kind, HEADER_LEN + n


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Decode one whole datagram: it must be exactly one message."""
    if len(data) > MAX_MESSAGE:
        raise DialbackCodecError(f"datagram of {len(data)} bytes is longer than any message")
    if len(data) < HEADER_LEN:
        raise DialbackCodecError("truncated header")
    kind, total = _header(data)
    if len(data) != total:
        raise DialbackCodecError(f"length {len(data)} does not match header ({total})")
    return Message(kind, bytes(data[HEADER_LEN:total]))


class StreamDecoder:
    """Incremental decoder for TCP: feed bytes, get whole messages. Buffers at most MAX_MESSAGE bytes.

    After an error the decoder stays failed (a stream that sent garbage is not trusted to resync).
    """

    __slots__ = ("_buf", "_failed")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._failed = False

    def feed(self, data: bytes) -> list[Message]:
        if self._failed:
            raise DialbackCodecError("stream already failed")
        out: list[Message] = []
        view = memoryview(data)
        try:
            while view:
                # Take only what the current message can still use: the buffer never exceeds MAX_MESSAGE.
                need = (HEADER_LEN if len(self._buf) < HEADER_LEN else self._total()) - len(self._buf)
                take = min(need, len(view))
                self._buf += view[:take]
                view = view[take:]
                if len(self._buf) == HEADER_LEN:
                    self._total()  # validates the header as soon as it is complete
                if len(self._buf) >= HEADER_LEN and len(self._buf) == self._total():
                    out.append(decode(self._buf))
                    self._buf.clear()
        except DialbackCodecError:
            self._failed = True
            self._buf.clear()
            raise
        finally:
            view.release()
        return out

    def _total(self) -> int:
        return _header(self._buf)[1]

    @property
    def buffered(self) -> int:
        return len(self._buf)
