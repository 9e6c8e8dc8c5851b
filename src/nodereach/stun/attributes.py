"""STUN attribute types and value codecs (RFC 8489, RFC 5389, RFC 3489, RFC 5780). Pure functions, no I/O.

Each decoder takes the raw attribute value and raises StunParseError for anything malformed, so the
message parser can validate every known attribute eagerly and callers never see another exception.
"""

from __future__ import annotations

import socket
import struct

from nodereach.stun.errors import StunParseError

MAGIC_COOKIE = 0x2112A442
MAGIC_COOKIE_BYTES = b"\x21\x12\xa4\x42"

# Comprehension-required range 0x0000-0x7FFF, comprehension-optional 0x8000-0xFFFF.
MAPPED_ADDRESS = 0x0001
RESPONSE_ADDRESS = 0x0002  # RFC 3489 only
CHANGE_REQUEST = 0x0003  # RFC 3489, revived by RFC 5780
SOURCE_ADDRESS = 0x0004  # RFC 3489 (RESPONSE-ORIGIN's ancestor)
CHANGED_ADDRESS = 0x0005  # RFC 3489 (OTHER-ADDRESS's ancestor)
USERNAME = 0x0006
PASSWORD = 0x0007  # RFC 3489 only
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
UNKNOWN_ATTRIBUTES = 0x000A
REFLECTED_FROM = 0x000B  # RFC 3489 only
REALM = 0x0014
NONCE = 0x0015
MESSAGE_INTEGRITY_SHA256 = 0x001C
PASSWORD_ALGORITHM = 0x001D
USERHASH = 0x001E
XOR_MAPPED_ADDRESS = 0x0020
PRIORITY = 0x0024  # RFC 8445 (ICE)
USE_CANDIDATE = 0x0025
PADDING = 0x0026  # RFC 5780
RESPONSE_PORT = 0x0027  # RFC 5780
PASSWORD_ALGORITHMS = 0x8002
ALTERNATE_DOMAIN = 0x8003
XOR_MAPPED_ADDRESS_OLD = 0x8020  # pre-RFC 5389 drafts; some old servers still send it
SOFTWARE = 0x8022
ALTERNATE_SERVER = 0x8023
FINGERPRINT = 0x8028
ICE_CONTROLLED = 0x8029
ICE_CONTROLLING = 0x802A
RESPONSE_ORIGIN = 0x802B  # RFC 5780
OTHER_ADDRESS = 0x802C  # RFC 5780

NAMES: dict[int, str] = {
    MAPPED_ADDRESS: "MAPPED-ADDRESS", RESPONSE_ADDRESS: "RESPONSE-ADDRESS", CHANGE_REQUEST: "CHANGE-REQUEST",
    SOURCE_ADDRESS: "SOURCE-ADDRESS", CHANGED_ADDRESS: "CHANGED-ADDRESS", USERNAME: "USERNAME",
    PASSWORD: "PASSWORD", MESSAGE_INTEGRITY: "MESSAGE-INTEGRITY", ERROR_CODE: "ERROR-CODE",
    UNKNOWN_ATTRIBUTES: "UNKNOWN-ATTRIBUTES", REFLECTED_FROM: "REFLECTED-FROM", REALM: "REALM", NONCE: "NONCE",
    MESSAGE_INTEGRITY_SHA256: "MESSAGE-INTEGRITY-SHA256", PASSWORD_ALGORITHM: "PASSWORD-ALGORITHM",
    USERHASH: "USERHASH", XOR_MAPPED_ADDRESS: "XOR-MAPPED-ADDRESS", PRIORITY: "PRIORITY",
    USE_CANDIDATE: "USE-CANDIDATE", PADDING: "PADDING", RESPONSE_PORT: "RESPONSE-PORT",
    PASSWORD_ALGORITHMS: "PASSWORD-ALGORITHMS", ALTERNATE_DOMAIN: "ALTERNATE-DOMAIN",
    XOR_MAPPED_ADDRESS_OLD: "XOR-MAPPED-ADDRESS(0x8020)", SOFTWARE: "SOFTWARE",
    ALTERNATE_SERVER: "ALTERNATE-SERVER", FINGERPRINT: "FINGERPRINT", ICE_CONTROLLED: "ICE-CONTROLLED",
    ICE_CONTROLLING: "ICE-CONTROLLING", RESPONSE_ORIGIN: "RESPONSE-ORIGIN", OTHER_ADDRESS: "OTHER-ADDRESS",
}
"""Every attribute this stack understands; anything else in 0x0000-0x7FFF is reported as unknown."""

ADDRESS_ATTRIBUTES = frozenset({MAPPED_ADDRESS, RESPONSE_ADDRESS, SOURCE_ADDRESS, CHANGED_ADDRESS,
                                REFLECTED_FROM, ALTERNATE_SERVER, RESPONSE_ORIGIN, OTHER_ADDRESS})
XOR_ADDRESS_ATTRIBUTES = frozenset({XOR_MAPPED_ADDRESS, XOR_MAPPED_ADDRESS_OLD})

FAMILY_IPV4 = 0x01
FAMILY_IPV6 = 0x02

CHANGE_IP = 0x04
CHANGE_PORT = 0x02

MAX_TEXT = 763  # SOFTWARE, REALM, NONCE, ERROR-CODE reason: < 128 characters, at most 763 bytes
MAX_USERNAME = 513

Address = tuple[str, int]
"""(ip, port), the same shape asyncio uses for datagram peers."""


def is_comprehension_required(attr_type: int) -> bool:
    return attr_type < 0x8000


def encode_address(address: Address) -> bytes:
    """MAPPED-ADDRESS style value: 0, family, port, address."""
    ip, port = address
    if ":" in ip:
        return struct.pack("!BBH", 0, FAMILY_IPV6, port) + socket.inet_pton(socket.AF_INET6, ip)
    return struct.pack("!BBH", 0, FAMILY_IPV4, port) + socket.inet_aton(ip)


def decode_address(value: bytes) -> Address:
    if len(value) < 4:
        raise StunParseError("address attribute too short")
    family = value[1]
    port = (value[2] << 8) | value[3]
    if family == FAMILY_IPV4 and len(value) == 8:
        return socket.inet_ntop(socket.AF_INET, value[4:8]), port
    if family == FAMILY_IPV6 and len(value) == 20:
        return socket.inet_ntop(socket.AF_INET6, value[4:20]), port
    raise StunParseError(f"bad address family {family} / length {len(value)}")


def _xor_key(transaction_id: bytes, length: int) -> bytes:
    # transaction_id is the 16 bytes after the type/length fields: cookie + 96-bit id.
    return transaction_id[:length]


def encode_xor_address(address: Address, transaction_id: bytes) -> bytes:
    """XOR-MAPPED-ADDRESS value. transaction_id: the 16 header bytes after the length (cookie + id)."""
    ip, port = address
    raw = socket.inet_pton(socket.AF_INET6, ip) if ":" in ip else socket.inet_aton(ip)
    family = FAMILY_IPV6 if len(raw) == 16 else FAMILY_IPV4
    key = _xor_key(transaction_id, len(raw))
    xored = bytes(a ^ b for a, b in zip(raw, key, strict=True))
    return struct.pack("!BBH", 0, family, port ^ (MAGIC_COOKIE >> 16)) + xored


def decode_xor_address(value: bytes, transaction_id: bytes) -> Address:
    if len(value) < 4:
        raise StunParseError("xor address attribute too short")
    family = value[1]
    port = ((value[2] << 8) | value[3]) ^ (MAGIC_COOKIE >> 16)
    if family == FAMILY_IPV4 and len(value) == 8:
        raw = bytes(a ^ b for a, b in zip(value[4:8], transaction_id[:4], strict=True))
        return socket.inet_ntop(socket.AF_INET, raw), port
    if family == FAMILY_IPV6 and len(value) == 20:
        raw = bytes(a ^ b for a, b in zip(value[4:20], transaction_id[:16], strict=True))
        return socket.inet_ntop(socket.AF_INET6, raw), port
    raise StunParseError(f"bad xor address family {family} / length {len(value)}")


def encode_error_code(code: int, reason: str) -> bytes:
    if not 300 <= code <= 699:
        raise ValueError("STUN error code must be 300..699")
    return struct.pack("!HBB", 0, code // 100, code % 100) + reason.encode()[:MAX_TEXT]


def decode_error_code(value: bytes) -> tuple[int, str]:
    if len(value) < 4 or len(value) > 4 + MAX_TEXT:
        raise StunParseError("bad ERROR-CODE length")
    klass, number = value[2] & 0x07, value[3]
    if not 3 <= klass <= 6 or number > 99:
        raise StunParseError("bad ERROR-CODE value")
    return klass * 100 + number, value[4:].decode("utf-8", "replace")


def encode_unknown_attributes(types: list[int] | tuple[int, ...]) -> bytes:
    return b"".join(struct.pack("!H", t) for t in types)


def decode_unknown_attributes(value: bytes) -> tuple[int, ...]:
    if len(value) % 2:
        raise StunParseError("odd UNKNOWN-ATTRIBUTES length")
    return tuple(struct.unpack(f"!{len(value) // 2}H", value))


def encode_change_request(change_ip: bool, change_port: bool) -> bytes:
    return struct.pack("!I", (CHANGE_IP if change_ip else 0) | (CHANGE_PORT if change_port else 0))


def decode_change_request(value: bytes) -> tuple[bool, bool]:
    if len(value) != 4:
        raise StunParseError("bad CHANGE-REQUEST length")
    flags = value[3]
    return bool(flags & CHANGE_IP), bool(flags & CHANGE_PORT)


def encode_response_port(port: int) -> bytes:
    return struct.pack("!HH", port, 0)


def decode_response_port(value: bytes) -> int:
    if len(value) != 4:
        raise StunParseError("bad RESPONSE-PORT length")
    return (value[0] << 8) | value[1]


def decode_text(value: bytes, limit: int = MAX_TEXT) -> str:
    if len(value) > limit:
        raise StunParseError("text attribute too long")
    return value.decode("utf-8", "replace")


def validate(attr_type: int, value: bytes, transaction_id: bytes) -> None:
    """Check a known attribute's value is well formed (raises StunParseError); unknown ones pass."""
    if attr_type in ADDRESS_ATTRIBUTES:
        decode_address(value)
    elif attr_type in XOR_ADDRESS_ATTRIBUTES:
        decode_xor_address(value, transaction_id)
    elif attr_type == ERROR_CODE:
        decode_error_code(value)
    elif attr_type == UNKNOWN_ATTRIBUTES:
        decode_unknown_attributes(value)
    elif attr_type == CHANGE_REQUEST:
        decode_change_request(value)
    elif attr_type == RESPONSE_PORT:
        decode_response_port(value)
    elif attr_type == MESSAGE_INTEGRITY:
        if len(value) != 20:
            raise StunParseError("bad MESSAGE-INTEGRITY length")
    elif attr_type == MESSAGE_INTEGRITY_SHA256:
        if len(value) < 16 or len(value) > 32 or len(value) % 4:
            raise StunParseError("bad MESSAGE-INTEGRITY-SHA256 length")
    elif attr_type == FINGERPRINT:
        if len(value) != 4:
            raise StunParseError("bad FINGERPRINT length")
    elif attr_type == USERNAME:
        decode_text(value, MAX_USERNAME)
    elif attr_type in (SOFTWARE, REALM, NONCE):
        decode_text(value)
