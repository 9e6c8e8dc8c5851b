"""The STUN server's fast path for the Binding requests real clients send, sans-IO.

WebRTC/ICE agents and most libraries add FINGERPRINT (often SOFTWARE too), RFC 5780 clients send
CHANGE-REQUEST, nodereach's own check sends CHANGE-REQUEST and SOFTWARE. The full path answers them by
parsing into a StunMessage, reading typed views and running the encoder: ~80k CPU instructions, twice what
the two syscalls around a request cost. `FastPath.answer` does the same work in one pass over the bytes, with
every reply byte that does not depend on the request precomputed per socket:

    fast = FastPath(full=True, local={(0, 0): ("203.0.113.10", 3478), (0, 1): ..., (1, 0): ..., (1, 1): ...})
    fast.answer(datagram, ("198.51.100.7", 40000), via=(0, 0))   # (reply, out socket, dest, code) or None

It is a pure function of its arguments and either declines (None) or returns exactly what the full path
(`StunServer.respond_full`) returns for the same request: tests/test_stun_fastpath.py checks that byte for
byte on generated requests. It accepts a magic-cookie Binding request whose attributes are only
CHANGE-REQUEST, a FINGERPRINT that is right and last, and attributes the server ignores whose every value
within its table row's length bounds is valid (SOFTWARE, USERNAME, PRIORITY, ICE-*, unknown
comprehension-optional types); anything else, including every malformed or unusual request (unknown
comprehension-required types, RESPONSE-PORT, PADDING, MESSAGE-INTEGRITY, RFC 3489 requests, a wrong
FINGERPRINT), is declined and the full path gives the answer or drop it always gave.
"""

from __future__ import annotations

import binascii
import socket
import struct
from collections.abc import Mapping

from nodereach.stun import attributes as A
from nodereach.stun.message import (
    BINDING,
    ERROR,
    FINGERPRINT_XOR,
    HEADER_SIZE,
    SUCCESS,
    StunMessage,
    encode_message,
    error_response,
    message_type,
)

Via = tuple[int, int]
"""A server socket: (address index, port index); (0, 0) is the primary, (1, 1) the alternate IP and port."""
Answer = tuple[bytes, Via, A.Address, int]
"""(reply, socket index to send from, destination, error code or 0 for a success)."""

_ACTED_ON = frozenset({A.CHANGE_REQUEST, A.RESPONSE_PORT, A.PADDING, A.FINGERPRINT, A.MESSAGE_INTEGRITY,
                       A.MESSAGE_INTEGRITY_SHA256})
"""Attributes that change the server's answer or the parse (integrity: what follows it is ignored): every
attribute `StunServer.respond_full` reads must be here, or the property test finds a request answered wrongly."""
IGNORED: dict[int, tuple[int, int, int]] = {
    code: (spec.min_len, spec.max_len, spec.multiple_of) for code, spec in A.SPECS.items()
    if not spec.format.structured and not spec.computed and code not in _ACTED_ON}
"""Known attributes the server ignores and whose rows check only lengths: code -> (min, max, multiple of)."""

_HEAD = struct.Struct("!HHI")  # type, length, magic cookie
_ATTR = struct.Struct("!HH")
_ATTR_U32 = struct.Struct("!HHI")  # an attribute with a 32-bit value (FINGERPRINT)
_U32 = struct.Struct("!I")
_XMA4 = struct.Struct("!12sHHHHI")  # transaction id, XOR-MAPPED-ADDRESS of an IPv4 source
_XMA6 = struct.Struct("!HHHH")  # XOR-MAPPED-ADDRESS of an IPv6 source, before its 16 address bytes
_MAGIC = A.MAGIC_COOKIE
_PORT_XOR = A.MAGIC_COOKIE >> 16
_COOKIE = A.MAGIC_COOKIE_BYTES
_FINGERPRINT, _CHANGE_REQUEST, _XOR_MAPPED_ADDRESS = A.FINGERPRINT, A.CHANGE_REQUEST, A.XOR_MAPPED_ADDRESS
_FAMILY_IPV4, _FAMILY_IPV6 = A.FAMILY_IPV4, A.FAMILY_IPV6
_CHANGE_FLAGS = A.CHANGE_IP | A.CHANGE_PORT
_KNOWN = frozenset(A.SPECS)
_NO_CHANGE = 8  # no CHANGE-REQUEST yet; its flags are 0..6
_Entry = tuple[int, Via, bytes, tuple[bytes, bytes, bytes, bytes]]
"""(error code or 0, socket to answer from, the reply's attributes after XOR-MAPPED-ADDRESS, _heads())."""


class FastPath:
    """Precomputed replies of one server (its sockets' addresses, basic or RFC 5780 mode); see module doc."""

    __slots__ = ("_tcp", "_udp")

    def __init__(self, full: bool, local: Mapping[Via, A.Address]) -> None:
        refuse = error_response(StunMessage(BINDING, 0, bytes(12)), 420, "Unknown Attribute", (A.CHANGE_REQUEST,))
        refusal = encode_message(refuse)[HEADER_SIZE:]  # CHANGE-REQUEST where it cannot be done: 420
        self._udp: dict[Via, list[_Entry | None]] = {}  # via -> entry by CHANGE-REQUEST flags (or _NO_CHANGE)
        self._tcp: dict[Via, list[_Entry | None]] = {}
        for via in local:
            no = (420, via, refusal, _heads(ERROR, refusal, 0, 0))
            other = (1 - via[0], 1 - via[1])
            udp = self._udp[via] = [None] * (_NO_CHANGE + 1)
            tcp = self._tcp[via] = [None] * (_NO_CHANGE + 1)
            for flags in (_NO_CHANGE, 0, A.CHANGE_PORT, A.CHANGE_IP, A.CHANGE_IP | A.CHANGE_PORT):
                changing = flags not in (0, _NO_CHANGE)
                out = (via[0] ^ bool(flags & A.CHANGE_IP), via[1] ^ bool(flags & A.CHANGE_PORT)) if changing else via
                if not full:
                    ok: _Entry | None = (0, via, b"", _heads(SUCCESS, b"", 12, 24))
                elif out in local and other in local:  # RFC 5780 mode: RESPONSE-ORIGIN, OTHER-ADDRESS
                    tail = encode_message(StunMessage(BINDING, SUCCESS, bytes(12), [
                        (A.RESPONSE_ORIGIN, A.encode_address(local[out])),
                        (A.OTHER_ADDRESS, A.encode_address(local[other]))]))[HEADER_SIZE:]
                    ok = (0, out, tail, _heads(SUCCESS, tail, 12, 24))
                else:  # a socket not bound: the full path decides
                    ok = None
                udp[flags] = no if changing and not full else ok
                tcp[flags] = no if changing else ok

    def answer(self, data: bytes, source: A.Address, via: Via, tcp: bool = False) -> Answer | None:
        """The reply to one request in a shape this path knows, else None (the full path decides)."""
        n = len(data)
        if n < HEADER_SIZE or n & 3:
            return None
        kind, length, cookie = _HEAD.unpack_from(data)
        if kind != 1 or cookie != _MAGIC or length + HEADER_SIZE != n:  # a Binding request (RFC 8489)
            return None
        # FINGERPRINT comes last: read it first, the scan below must then end exactly where it starts.
        limit = n
        fingerprint = False
        if n >= HEADER_SIZE + 8:
            attr_type, attr_len, crc = _ATTR_U32.unpack_from(data, n - 8)
            if attr_type == _FINGERPRINT and attr_len == 4:
                limit = n - 8
                if binascii.crc32(data[:limit]) ^ FINGERPRINT_XOR != crc:
                    return None  # wrong: dropped by the full path (RFC 8489 7.3: not STUN), or not a FINGERPRINT
                fingerprint = True
        unpack, ignored = _ATTR.unpack_from, IGNORED
        flags = _NO_CHANGE
        pos = HEADER_SIZE
        while pos < limit:
            attr_type, attr_len = unpack(data, pos)
            end = pos + 4 + attr_len
            if end > limit:
                return None
            if attr_type == _CHANGE_REQUEST:
                if attr_len != 4:
                    return None
                if flags == _NO_CHANGE:  # the first one counts (RFC 8489: later duplicates are ignored)
                    flags = data[pos + 7] & _CHANGE_FLAGS
            else:
                bounds = ignored.get(attr_type)
                if bounds is None:  # unknown comprehension-required (420), a structured row, FINGERPRINT not last
                    if attr_type < 0x8000 or attr_type in _KNOWN:
                        return None
                elif attr_len < bounds[0] or attr_len > bounds[1] or attr_len % bounds[2]:
                    return None
            pos = end + (-attr_len & 3)
        table = (self._tcp if tcp else self._udp).get(via)
        if table is None:
            return None
        entry = table[flags]
        if entry is None:
            return None
        code, out, tail, heads = entry
        if code:
            reply = heads[fingerprint] + data[8:20] + tail
        else:
            host = source[0]
            try:
                if ":" in host:
                    # A link-local source's zone (`fe80::1%eth0`) is ours, never on the wire (attributes._unscoped).
                    raw = int.from_bytes(socket.inet_pton(socket.AF_INET6, host.partition("%")[0])) \
                        ^ int.from_bytes(data[4:20])
                    reply = heads[2 + fingerprint] + data[8:20] + _XMA6.pack(
                        _XOR_MAPPED_ADDRESS, 20, _FAMILY_IPV6, source[1] ^ _PORT_XOR) + raw.to_bytes(16) + tail
                else:
                    reply = heads[fingerprint] + _XMA4.pack(
                        data[8:20], _XOR_MAPPED_ADDRESS, 8, _FAMILY_IPV4, source[1] ^ _PORT_XOR,
                        _U32.unpack(socket.inet_aton(host))[0] ^ _MAGIC) + tail
            except (OSError, ValueError, TypeError, struct.error):  # not an address the full path can encode
                return None
        if fingerprint:
            reply += _ATTR_U32.pack(_FINGERPRINT, 4, binascii.crc32(reply) ^ FINGERPRINT_XOR)
        return reply, out, source, code


def _heads(cls: int, tail: bytes, xma4: int, xma6: int) -> tuple[bytes, bytes, bytes, bytes]:
    """Header + cookie for an IPv4 source, IPv4 + FINGERPRINT, IPv6, IPv6 + FINGERPRINT: the lengths differ."""
    kind = message_type(BINDING, cls)

    def head(length: int) -> bytes:
        return struct.pack("!HH", kind, length + len(tail)) + _COOKIE

    return head(xma4), head(xma4 + 8), head(xma6), head(xma6 + 8)
