"""STUN messages (RFC 8489 / RFC 5389, reading RFC 3489 legacy forms): parse and build, sans-IO.

`parse_message(data)` either returns a StunMessage or raises StunParseError, for any byte string: every
length is checked against the datagram, every known attribute is validated, and work is linear in the
input (at most 65555 bytes). Integrity and fingerprint are checked on demand against the original bytes.
`encode_message(msg, ...)` is the inverse, adding MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT as asked.

A message is legacy (RFC 3489) when bytes 4..8 are not the magic cookie: its transaction id is then the
full 16 bytes, and its addresses come in MAPPED-ADDRESS / SOURCE-ADDRESS / CHANGED-ADDRESS.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nodereach.stun import attributes as A
from nodereach.stun.errors import StunParseError

BINDING = 0x001

REQUEST = 0x000
INDICATION = 0x010
SUCCESS = 0x100
ERROR = 0x110

HEADER_SIZE = 20
MAX_MESSAGE_SIZE = HEADER_SIZE + 0xFFFF
FINGERPRINT_XOR = 0x5354554E

_HEADER = struct.Struct("!HH")
_ATTR = struct.Struct("!HH")


def message_type(method: int, cls: int) -> int:
    """Interleave method and class bits into the 14-bit message type (RFC 8489 section 5)."""
    return (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | cls


def split_type(msg_type: int) -> tuple[int, int]:
    method = (msg_type & 0x000F) | ((msg_type & 0x00E0) >> 1) | ((msg_type & 0x3E00) >> 2)
    return method, msg_type & 0x0110


def new_transaction_id() -> bytes:
    return os.urandom(12)


@dataclass(slots=True)
class StunMessage:
    """One STUN message. attributes keeps wire order, raw values, duplicates and unknown optional ones."""

    method: int
    cls: int
    transaction_id: bytes
    attributes: list[tuple[int, bytes]] = field(default_factory=list)
    raw: bytes = b""
    """The bytes this message was parsed from (empty for a message built locally)."""
    unknown_required: tuple[int, ...] = ()
    """Comprehension-required attribute types this stack does not know (a server answers them with 420)."""
    _offsets: dict[int, int] = field(default_factory=dict, repr=False)

    @property
    def legacy(self) -> bool:
        """True for an RFC 3489 message (no magic cookie; 16-byte transaction id)."""
        return len(self.transaction_id) == 16

    @property
    def key(self) -> bytes:
        """The 16 header bytes after the length: cookie + id (or the legacy 128-bit id). Unique per transaction."""
        return self.transaction_id if self.legacy else A.MAGIC_COOKIE_BYTES + self.transaction_id

    def get(self, attr_type: int) -> bytes | None:
        """Value of the first attribute of this type (RFC 8489: later duplicates are ignored)."""
        for t, v in self.attributes:
            if t == attr_type:
                return v
        return None

    def has(self, attr_type: int) -> bool:
        return any(t == attr_type for t, _ in self.attributes)

    def add(self, attr_type: int, value: bytes) -> StunMessage:
        self.attributes.append((attr_type, value))
        return self

    # --- typed views: decoded by the attribute's table row (validated at parse time, so they do not raise) ---
    def value(self, attr_type: int) -> Any:
        """The first attribute of this type decoded by its row in attributes.SPECS, else the older types that
        mean the same (attributes.LINEAGE: RFC 3489 servers); raw bytes for an unknown type; None if absent.
        Parsed messages were validated by the same rows, so this does not raise for them. (Typed as Any: the
        row decides the type; the typed views below name it. Hot on the server's slow path: no cast() calls.)"""
        readers = A.READERS.get(attr_type)
        if readers is None:
            return self.get(attr_type)
        attributes = self.attributes
        for code, decode, xor in readers:
            for t, v in attributes:
                if t == code:
                    if not xor:
                        return decode(v, b"")
                    if not self.legacy:  # no magic cookie, no XOR: an RFC 3489 message's XOR value means nothing
                        return decode(v, self.key)
                    break
        return None

    @property
    def xor_mapped_address(self) -> A.Address | None:
        """XOR-MAPPED-ADDRESS (or its pre-RFC 5389 code 0x8020) only: None says an RFC 3489 server answered."""
        if self.legacy:
            return None
        for code, decode, xor in A.READERS[A.XOR_MAPPED_ADDRESS]:
            if xor and (v := self.get(code)) is not None:
                address: A.Address = decode(v, self.key)
                return address
        return None

    @property
    def mapped_address(self) -> A.Address | None:
        """XOR-MAPPED-ADDRESS when present (NAT-proof), else the legacy MAPPED-ADDRESS."""
        value: A.Address | None = self.value(A.XOR_MAPPED_ADDRESS)
        return value

    @property
    def other_address(self) -> A.Address | None:
        """RFC 5780 OTHER-ADDRESS, else RFC 3489 CHANGED-ADDRESS."""
        value: A.Address | None = self.value(A.OTHER_ADDRESS)
        return value

    @property
    def response_origin(self) -> A.Address | None:
        """RFC 5780 RESPONSE-ORIGIN, else RFC 3489 SOURCE-ADDRESS."""
        value: A.Address | None = self.value(A.RESPONSE_ORIGIN)
        return value

    # Types no older type stands in for: one get() and the row's decoder (the server's slow path reads them).
    @property
    def alternate_server(self) -> A.Address | None:
        v = self.get(A.ALTERNATE_SERVER)
        if v is None:
            return None
        value: A.Address = A.DECODERS[A.ALTERNATE_SERVER](v, b"")
        return value

    @property
    def error_code(self) -> tuple[int, str] | None:
        v = self.get(A.ERROR_CODE)
        if v is None:
            return None
        value: tuple[int, str] = A.DECODERS[A.ERROR_CODE](v, b"")
        return value

    @property
    def unknown_attributes(self) -> tuple[int, ...]:
        v = self.get(A.UNKNOWN_ATTRIBUTES)
        if v is None:
            return ()
        value: tuple[int, ...] = A.DECODERS[A.UNKNOWN_ATTRIBUTES](v, b"")
        return value

    @property
    def software(self) -> str | None:
        v = self.get(A.SOFTWARE)
        if v is None:
            return None
        value: str = A.DECODERS[A.SOFTWARE](v, b"")
        return value

    @property
    def username(self) -> str | None:
        v = self.get(A.USERNAME)
        if v is None:
            return None
        value: str = A.DECODERS[A.USERNAME](v, b"")
        return value

    @property
    def change_request(self) -> tuple[bool, bool]:
        """(change_ip, change_port); (False, False) when absent."""
        v = self.get(A.CHANGE_REQUEST)
        if v is None:
            return (False, False)
        value: tuple[bool, bool] = A.DECODERS[A.CHANGE_REQUEST](v, b"")
        return value

    @property
    def response_port(self) -> int | None:
        v = self.get(A.RESPONSE_PORT)
        if v is None:
            return None
        value: int = A.DECODERS[A.RESPONSE_PORT](v, b"")
        return value

    # --- integrity and fingerprint, checked against the bytes as received ---
    def check_fingerprint(self) -> bool | None:
        """None when the message has no FINGERPRINT, else whether it is right."""
        off = self._offsets.get(A.FINGERPRINT)
        if off is None:
            return None
        raw = self.raw
        expect = struct.unpack_from("!I", raw, off + 4)[0]
        return bool((binascii.crc32(raw[:off]) ^ FINGERPRINT_XOR) == expect)

    def check_integrity(self, key: bytes) -> bool | None:
        """None without MESSAGE-INTEGRITY, else whether its HMAC-SHA1 under `key` is right."""
        return self._check_hmac(A.MESSAGE_INTEGRITY, key, hashlib.sha1)

    def check_integrity_sha256(self, key: bytes) -> bool | None:
        return self._check_hmac(A.MESSAGE_INTEGRITY_SHA256, key, hashlib.sha256)

    def _check_hmac(self, attr_type: int, key: bytes, digest: Callable[[], Any]) -> bool | None:
        off = self._offsets.get(attr_type)
        if off is None:
            return None
        raw = self.raw
        length = (raw[off + 2] << 8) | raw[off + 3]
        covered = _with_length(raw[:off], off + 4 + length - HEADER_SIZE)
        mac = hmac.new(key, covered, digest).digest()
        return hmac.compare_digest(mac[:length], raw[off + 4:off + 4 + length])


def short_term_key(password: str) -> bytes:
    """RFC 8489 short-term credential key (OpaqueString processing is the caller's job)."""
    return password.encode()


def long_term_key(username: str, realm: str, password: str, sha256: bool = False) -> bytes:
    """RFC 8489 long-term credential key: MD5 (or SHA-256) of username:realm:password."""
    data = f"{username}:{realm}:{password}".encode()
    return hashlib.sha256(data).digest() if sha256 else hashlib.md5(data).digest()


def _with_length(prefix: bytes, length: int) -> bytes:
    return prefix[:2] + struct.pack("!H", length) + prefix[4:]


def parse_message(data: bytes | bytearray | memoryview) -> StunMessage:
    """Parse one complete STUN message (a UDP datagram or one TCP frame). Raises only StunParseError."""
    data = bytes(data)
    n = len(data)
    if n < HEADER_SIZE:
        raise StunParseError("shorter than a STUN header")
    if n > MAX_MESSAGE_SIZE:
        raise StunParseError("longer than any STUN message")
    msg_type, length = _HEADER.unpack_from(data, 0)
    if msg_type & 0xC000:
        raise StunParseError("first two bits are not zero: not STUN")
    if length % 4:
        raise StunParseError("message length not a multiple of 4")
    if length + HEADER_SIZE != n:
        raise StunParseError(f"length field {length} does not match {n - HEADER_SIZE} bytes of attributes")
    method, cls = split_type(msg_type)
    legacy = data[4:8] != A.MAGIC_COOKIE_BYTES
    key = data[4:20]
    tid = key if legacy else data[8:20]
    checks = A.CHECKS.get
    attrs: list[tuple[int, bytes]] = []
    offsets: dict[int, int] = {}
    unknown: list[int] = []
    pos = HEADER_SIZE
    after_integrity = False
    while pos < n:
        if pos + 4 > n:
            raise StunParseError("truncated attribute header")
        attr_type, attr_len = _ATTR.unpack_from(data, pos)
        end = pos + 4 + attr_len
        if end > n:
            raise StunParseError("attribute runs past the end of the message")
        if A.FINGERPRINT in offsets:
            raise StunParseError("attribute after FINGERPRINT")
        value = data[pos + 4:end]
        check = checks(attr_type)
        if check is not None:  # a known type: its table row validates the value
            check(value, key)
        if attr_type == A.FINGERPRINT:
            offsets[attr_type] = pos
            attrs.append((attr_type, value))
        elif attr_type in (A.MESSAGE_INTEGRITY, A.MESSAGE_INTEGRITY_SHA256):
            if attr_type not in offsets and A.MESSAGE_INTEGRITY_SHA256 not in offsets:
                offsets[attr_type] = pos
                attrs.append((attr_type, value))
            after_integrity = True
        elif not after_integrity:  # RFC 8489 14.5: attributes after integrity (but FINGERPRINT) are ignored
            attrs.append((attr_type, value))
            if attr_type < 0x8000 and attr_type not in A.SPECS and attr_type not in unknown:
                unknown.append(attr_type)
        pos = end + (-attr_len % 4)
    if pos != n:
        raise StunParseError("attribute padding runs past the end of the message")
    return StunMessage(method, cls, tid, attrs, data, tuple(unknown), offsets)


def encode_message(
    msg: StunMessage,
    *,
    integrity_key: bytes | None = None,
    integrity_sha256_key: bytes | None = None,
    fingerprint: bool = False,
    pad_byte: int = 0,
) -> bytes:
    """Serialize msg; append MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256, FINGERPRINT in that order if asked.

    pad_byte fills attribute padding (RFC 8489 says any value; RFC 5769's vectors use 0x20). Integrity and
    fingerprint attributes already in msg.attributes (a parsed message) are dropped: they are recomputed.
    """
    tid = msg.transaction_id
    if len(tid) not in (12, 16):
        raise ValueError("transaction id must be 12 bytes (16 for RFC 3489)")
    pad_table = bytes([pad_byte]) * 3
    parts: list[bytes] = []
    for attr_type, value in msg.attributes:
        if attr_type in A.COMPUTED:
            continue
        if len(value) > 0xFFFF:
            raise ValueError("attribute value too long")
        parts.append(_ATTR.pack(attr_type, len(value)))
        parts.append(value)
        if len(value) % 4:
            parts.append(pad_table[: -len(value) % 4])
    body = b"".join(parts)
    prefix = _HEADER.pack(message_type(msg.method, msg.cls), 0)
    prefix += tid if len(tid) == 16 else A.MAGIC_COOKIE_BYTES + tid
    out = prefix + body
    if integrity_key is not None:
        mac = hmac.new(integrity_key, _with_length(out, len(out) - HEADER_SIZE + 24), hashlib.sha1).digest()
        out += _ATTR.pack(A.MESSAGE_INTEGRITY, 20) + mac
    if integrity_sha256_key is not None:
        mac = hmac.new(integrity_sha256_key, _with_length(out, len(out) - HEADER_SIZE + 36), hashlib.sha256).digest()
        out += _ATTR.pack(A.MESSAGE_INTEGRITY_SHA256, 32) + mac
    if fingerprint:
        out = _with_length(out, len(out) - HEADER_SIZE + 8)
        out += _ATTR.pack(A.FINGERPRINT, 4) + struct.pack("!I", binascii.crc32(out) ^ FINGERPRINT_XOR)
    if len(out) > MAX_MESSAGE_SIZE:
        raise ValueError("message too long")
    return _with_length(out, len(out) - HEADER_SIZE)


def binding_request(
    *,
    transaction_id: bytes | None = None,
    change_ip: bool = False,
    change_port: bool = False,
    response_port: int | None = None,
    padding: int = 0,
    software: str | None = None,
    legacy: bool = False,
) -> StunMessage:
    """A Binding request with the RFC 5780 options. legacy=True builds an RFC 3489 one (16-byte id)."""
    tid = transaction_id or os.urandom(16 if legacy else 12)
    msg = StunMessage(BINDING, REQUEST, tid)
    if software:
        msg.add(A.SOFTWARE, software.encode()[: A.MAX_TEXT])
    if change_ip or change_port:
        msg.add(A.CHANGE_REQUEST, A.encode_change_request(change_ip, change_port))
    if response_port is not None:
        msg.add(A.RESPONSE_PORT, A.encode_response_port(response_port))
    if padding:
        msg.add(A.PADDING, bytes(padding))
    return msg


def error_response(request: StunMessage, code: int, reason: str, unknown: tuple[int, ...] = ()) -> StunMessage:
    msg = StunMessage(request.method, ERROR, request.transaction_id)
    msg.add(A.ERROR_CODE, A.encode_error_code(code, reason))
    if unknown:
        msg.add(A.UNKNOWN_ATTRIBUTES, A.encode_unknown_attributes(unknown))
    return msg


def looks_like_stun(data: bytes) -> bool:
    """Cheap demultiplexing test (RFC 7983 style): first two bits zero, sane length, magic cookie."""
    return (len(data) >= HEADER_SIZE and not data[0] & 0xC0 and data[4:8] == A.MAGIC_COOKIE_BYTES
            and ((data[2] << 8) | data[3]) + HEADER_SIZE == len(data))
