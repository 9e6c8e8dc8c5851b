"""STUN attributes (RFC 8489, RFC 5389, RFC 3489, RFC 5780, RFC 8445): one table row per attribute type, and
the value formats the rows use. Pure functions, no I/O.

Everything this stack knows about an attribute type is its row in `SPECS` (code, name, value format,
length bounds, where it is defined, the older attribute that means the same, whether the encoder computes it);
`NAMES`, `ADDRESS_ATTRIBUTES`, `XOR_ADDRESS_ATTRIBUTES`, `COMPUTED`, `LINEAGE` and `validate` are derived
from the rows. Each decoder raises StunParseError for anything malformed, so the message parser can validate
every known attribute eagerly and callers never see another exception.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from nodereach.stun.errors import StunParseError

MAGIC_COOKIE = 0x2112A442
MAGIC_COOKIE_BYTES = b"\x21\x12\xa4\x42"

FAMILY_IPV4 = 0x01
FAMILY_IPV6 = 0x02

CHANGE_IP = 0x04
CHANGE_PORT = 0x02

MAX_TEXT = 763  # SOFTWARE, REALM, NONCE, ERROR-CODE reason: < 128 characters, at most 763 bytes
MAX_USERNAME = 513

Address = tuple[str, int]
"""(ip, port), the same shape asyncio uses for datagram peers."""

T = TypeVar("T")


# --- value formats ---------------------------------------------------------------------------------------
def _unscoped(ip: str) -> str:
    """A link-local IPv6 source arrives as `fe80::1%eth0` (recvfrom); the zone is this host's, never on the wire
    (RFC 4007 §11: it has no meaning to the peer)."""
    return ip.partition("%")[0]


def encode_address(address: Address) -> bytes:
    """MAPPED-ADDRESS style value: 0, family, port, address."""
    ip, port = _unscoped(address[0]), address[1]
    if ":" in ip:
        return struct.pack("!BBH", 0, FAMILY_IPV6, port) + socket.inet_pton(socket.AF_INET6, ip)
    return struct.pack("!BBH", 0, FAMILY_IPV4, port) + socket.inet_aton(ip)


def decode_address(value: bytes, _key: bytes = b"") -> Address:
    if len(value) < 4:
        raise StunParseError("address attribute too short")
    family = value[1]
    port = (value[2] << 8) | value[3]
    if family == FAMILY_IPV4 and len(value) == 8:
        return socket.inet_ntop(socket.AF_INET, value[4:8]), port
    if family == FAMILY_IPV6 and len(value) == 20:
        return socket.inet_ntop(socket.AF_INET6, value[4:20]), port
    raise StunParseError(f"bad address family {family} / length {len(value)}")


def encode_xor_address(address: Address, transaction_id: bytes) -> bytes:
    """XOR-MAPPED-ADDRESS value. transaction_id: the 16 header bytes after the length (cookie + id)."""
    ip, port = _unscoped(address[0]), address[1]
    raw = socket.inet_pton(socket.AF_INET6, ip) if ":" in ip else socket.inet_aton(ip)
    family = FAMILY_IPV6 if len(raw) == 16 else FAMILY_IPV4
    xored = bytes(a ^ b for a, b in zip(raw, transaction_id[:len(raw)], strict=True))
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


def decode_error_code(value: bytes, _key: bytes = b"") -> tuple[int, str]:
    if len(value) < 4 or len(value) > 4 + MAX_TEXT:
        raise StunParseError("bad ERROR-CODE length")
    klass, number = value[2] & 0x07, value[3]
    if not 3 <= klass <= 6 or number > 99:
        raise StunParseError("bad ERROR-CODE value")
    return klass * 100 + number, value[4:].decode("utf-8", "replace")


def encode_unknown_attributes(types: list[int] | tuple[int, ...]) -> bytes:
    return b"".join(struct.pack("!H", t) for t in types)


def decode_unknown_attributes(value: bytes, _key: bytes = b"") -> tuple[int, ...]:
    if len(value) % 2:
        raise StunParseError("odd UNKNOWN-ATTRIBUTES length")
    return tuple(struct.unpack(f"!{len(value) // 2}H", value))


def encode_change_request(change_ip: bool, change_port: bool) -> bytes:
    return struct.pack("!I", (CHANGE_IP if change_ip else 0) | (CHANGE_PORT if change_port else 0))


def decode_change_request(value: bytes, _key: bytes = b"") -> tuple[bool, bool]:
    if len(value) != 4:
        raise StunParseError("bad CHANGE-REQUEST length")
    flags = value[3]
    return bool(flags & CHANGE_IP), bool(flags & CHANGE_PORT)


def encode_response_port(port: int) -> bytes:
    return struct.pack("!HH", port, 0)


def decode_response_port(value: bytes, _key: bytes = b"") -> int:
    if len(value) != 4:
        raise StunParseError("bad RESPONSE-PORT length")
    return (value[0] << 8) | value[1]


def decode_text(value: bytes, limit: int = MAX_TEXT) -> str:
    if len(value) > limit:
        raise StunParseError("text attribute too long")
    return value.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class ValueFormat(Generic[T]):
    """How one kind of attribute value is laid out: typed decode (value, key -> T) and encode (T, key ->
    value), with the length bounds every value of the kind obeys. `key` is the 16 header bytes after the
    length field (cookie + transaction id), which only the XOR formats use."""

    name: str
    decode: Callable[[bytes, bytes], T]
    """Raises StunParseError for a malformed value; a structured format's decode also rejects every length
    outside the format's bounds (tests/test_stun_message.py checks that for every row)."""
    encode: Callable[[T, bytes], bytes]
    min_len: int = 0
    max_len: int = 0xFFFF
    multiple_of: int = 1
    structured: bool = True
    """False: any bytes within the length bounds are a valid value, so validation checks lengths only."""


ADDRESS: ValueFormat[Address] = ValueFormat("address", decode_address, lambda a, _k: encode_address(a), 8, 20)
XOR_ADDRESS: ValueFormat[Address] = ValueFormat("xor-address", decode_xor_address, encode_xor_address, 8, 20)
ERROR: ValueFormat[tuple[int, str]] = ValueFormat(
    "error-code", decode_error_code, lambda e, _k: encode_error_code(*e), 4, 4 + MAX_TEXT)
ATTRIBUTE_LIST: ValueFormat[tuple[int, ...]] = ValueFormat(
    "attribute-list", decode_unknown_attributes, lambda t, _k: encode_unknown_attributes(t), multiple_of=2)
CHANGE_FLAGS: ValueFormat[tuple[bool, bool]] = ValueFormat(
    "change-flags", decode_change_request, lambda f, _k: encode_change_request(*f), 4, 4)
PORT: ValueFormat[int] = ValueFormat("port", decode_response_port, lambda p, _k: encode_response_port(p), 4, 4)
TEXT: ValueFormat[str] = ValueFormat(
    "text", lambda v, _k: v.decode("utf-8", "replace"), lambda s, _k: s.encode(), 0, MAX_TEXT, structured=False)
OPAQUE: ValueFormat[bytes] = ValueFormat("opaque", lambda v, _k: v, lambda b, _k: b, structured=False)


# --- the table -------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AttributeSpec:
    """One attribute type: everything the parser, the typed views and the server know about it."""

    code: int
    name: str
    format: ValueFormat[Any]
    min_len: int
    max_len: int
    multiple_of: int
    defined_in: str
    older: int | None = None
    """An older attribute type with the same meaning, read when this one is absent (RFC 3489 servers)."""
    computed: bool = False
    """Computed by the encoder over the message (integrity, fingerprint): never copied from a message."""

    @property
    def comprehension_required(self) -> bool:
        """0x0000-0x7FFF: a receiver that does not know the type must reject the message (RFC 8489 14)."""
        return self.code < 0x8000

    def check(self, value: bytes, key: bytes) -> None:
        """StunParseError unless `value` is a well-formed value of this attribute."""
        CHECKS[self.code](value, key)

    def decode(self, value: bytes, key: bytes) -> Any:
        """The typed value (StunParseError if malformed)."""
        CHECKS[self.code](value, key)
        return self.format.decode(value, key)

    def encode(self, typed: Any, key: bytes = b"") -> bytes:
        return bytes(self.format.encode(typed, key))


SPECS: dict[int, AttributeSpec] = {}
"""Every attribute type this stack understands, by code; anything else in 0x0000-0x7FFF is unknown."""


def _row(code: int, name: str, fmt: ValueFormat[Any], defined_in: str, *, length: int | None = None,
         min_len: int | None = None, max_len: int | None = None, multiple_of: int | None = None,
         older: int | None = None, computed: bool = False) -> int:
    """Add one row to SPECS; returns the code, so each row also defines the attribute's constant."""
    lo = length if length is not None else fmt.min_len if min_len is None else min_len
    hi = length if length is not None else fmt.max_len if max_len is None else max_len
    step = fmt.multiple_of if multiple_of is None else multiple_of
    if code in SPECS:
        raise ValueError(f"attribute 0x{code:04x} defined twice")
    SPECS[code] = AttributeSpec(code, name, fmt, lo, hi, step, defined_in, older, computed)
    return code


# Comprehension-required range 0x0000-0x7FFF, comprehension-optional 0x8000-0xFFFF. A row that names an
# `older` attribute comes after that attribute's row.
MAPPED_ADDRESS = _row(0x0001, "MAPPED-ADDRESS", ADDRESS, "RFC 8489 14.1")
RESPONSE_ADDRESS = _row(0x0002, "RESPONSE-ADDRESS", ADDRESS, "RFC 3489 11.2.2")
CHANGE_REQUEST = _row(0x0003, "CHANGE-REQUEST", CHANGE_FLAGS, "RFC 5780 7.2")
SOURCE_ADDRESS = _row(0x0004, "SOURCE-ADDRESS", ADDRESS, "RFC 3489 11.2.5")
CHANGED_ADDRESS = _row(0x0005, "CHANGED-ADDRESS", ADDRESS, "RFC 3489 11.2.3")
USERNAME = _row(0x0006, "USERNAME", TEXT, "RFC 8489 14.3", max_len=MAX_USERNAME)
PASSWORD = _row(0x0007, "PASSWORD", OPAQUE, "RFC 3489 11.2.7")
MESSAGE_INTEGRITY = _row(0x0008, "MESSAGE-INTEGRITY", OPAQUE, "RFC 8489 14.5", length=20, computed=True)
ERROR_CODE = _row(0x0009, "ERROR-CODE", ERROR, "RFC 8489 14.8")
UNKNOWN_ATTRIBUTES = _row(0x000A, "UNKNOWN-ATTRIBUTES", ATTRIBUTE_LIST, "RFC 8489 14.13")
REFLECTED_FROM = _row(0x000B, "REFLECTED-FROM", ADDRESS, "RFC 3489 11.2.11")
REALM = _row(0x0014, "REALM", TEXT, "RFC 8489 14.9")
NONCE = _row(0x0015, "NONCE", TEXT, "RFC 8489 14.10")
MESSAGE_INTEGRITY_SHA256 = _row(0x001C, "MESSAGE-INTEGRITY-SHA256", OPAQUE, "RFC 8489 14.6", min_len=16,
                                max_len=32, multiple_of=4, computed=True)
PASSWORD_ALGORITHM = _row(0x001D, "PASSWORD-ALGORITHM", OPAQUE, "RFC 8489 14.12")
USERHASH = _row(0x001E, "USERHASH", OPAQUE, "RFC 8489 14.4", length=32)
XOR_MAPPED_ADDRESS_OLD = _row(0x8020, "XOR-MAPPED-ADDRESS(0x8020)", XOR_ADDRESS,
                              "pre-RFC 5389 drafts (some old servers still send it)", older=MAPPED_ADDRESS)
XOR_MAPPED_ADDRESS = _row(0x0020, "XOR-MAPPED-ADDRESS", XOR_ADDRESS, "RFC 8489 14.2", older=XOR_MAPPED_ADDRESS_OLD)
PRIORITY = _row(0x0024, "PRIORITY", OPAQUE, "RFC 8445 16.1", length=4)
USE_CANDIDATE = _row(0x0025, "USE-CANDIDATE", OPAQUE, "RFC 8445 16.1", length=0)
PADDING = _row(0x0026, "PADDING", OPAQUE, "RFC 5780 7.6")
RESPONSE_PORT = _row(0x0027, "RESPONSE-PORT", PORT, "RFC 5780 7.5")
PASSWORD_ALGORITHMS = _row(0x8002, "PASSWORD-ALGORITHMS", OPAQUE, "RFC 8489 14.11")
ALTERNATE_DOMAIN = _row(0x8003, "ALTERNATE-DOMAIN", OPAQUE, "RFC 8489 14.16")
SOFTWARE = _row(0x8022, "SOFTWARE", TEXT, "RFC 8489 14.14")
ALTERNATE_SERVER = _row(0x8023, "ALTERNATE-SERVER", ADDRESS, "RFC 8489 14.15")
FINGERPRINT = _row(0x8028, "FINGERPRINT", OPAQUE, "RFC 8489 14.7", length=4, computed=True)
ICE_CONTROLLED = _row(0x8029, "ICE-CONTROLLED", OPAQUE, "RFC 8445 16.1", length=8)
ICE_CONTROLLING = _row(0x802A, "ICE-CONTROLLING", OPAQUE, "RFC 8445 16.1", length=8)
RESPONSE_ORIGIN = _row(0x802B, "RESPONSE-ORIGIN", ADDRESS, "RFC 5780 7.3", older=SOURCE_ADDRESS)
OTHER_ADDRESS = _row(0x802C, "OTHER-ADDRESS", ADDRESS, "RFC 5780 7.4", older=CHANGED_ADDRESS)

# --- derived from the table ------------------------------------------------------------------------------
NAMES: dict[int, str] = {code: spec.name for code, spec in SPECS.items()}
ADDRESS_ATTRIBUTES = frozenset(code for code, spec in SPECS.items() if spec.format is ADDRESS)
XOR_ADDRESS_ATTRIBUTES = frozenset(code for code, spec in SPECS.items() if spec.format is XOR_ADDRESS)
COMPUTED = frozenset(code for code, spec in SPECS.items() if spec.computed)


def _lineage(code: int) -> tuple[int, ...]:
    chain = [code]
    while (older := SPECS[chain[-1]].older) is not None:
        chain.append(older)
    return tuple(chain)


LINEAGE: dict[int, tuple[int, ...]] = {code: _lineage(code) for code in SPECS}
"""Each type, then the older types that mean the same, in the order a reader should look for them."""



def _make_check(spec: AttributeSpec) -> Callable[[bytes, bytes], object]:
    """The row's validation as one callable: it runs for every attribute of every parsed message, so a row
    whose bounds are its format's is checked by the format's decoder alone."""
    fmt = spec.format
    lo, hi, step, name = spec.min_len, spec.max_len, spec.multiple_of, spec.name
    if fmt.structured and (lo, hi, step) == (fmt.min_len, fmt.max_len, fmt.multiple_of):
        return fmt.decode
    decode = fmt.decode if fmt.structured else None

    def check(value: bytes, key: bytes) -> None:
        n = len(value)
        if n < lo or n > hi or n % step:
            raise StunParseError(f"bad {name} length {n}")
        if decode is not None:
            decode(value, key)

    return check


CHECKS: dict[int, Callable[[bytes, bytes], object]] = {code: _make_check(spec) for code, spec in SPECS.items()}
"""attr type -> validation (raises StunParseError); the parser looks every attribute up here."""


def _readers(code: int) -> tuple[tuple[int, Callable[[bytes, bytes], Any], bool], ...]:
    return tuple((c, SPECS[c].format.decode, SPECS[c].format is XOR_ADDRESS) for c in LINEAGE[code])


READERS = {code: _readers(code) for code in SPECS}
"""attr type -> (type, decode, needs the cookie) for it and its older equivalents: what a typed view reads."""
DECODERS: dict[int, Callable[[bytes, bytes], Any]] = {code: spec.format.decode for code, spec in SPECS.items()}
"""attr type -> its format's decode (value, key), for a value already validated by the parser."""


def is_comprehension_required(attr_type: int) -> bool:
    return attr_type < 0x8000


def validate(attr_type: int, value: bytes, key: bytes) -> None:
    """Check a known attribute's value is well formed (raises StunParseError); unknown ones pass."""
    check = CHECKS.get(attr_type)
    if check is not None:
        check(value, key)


def name(attr_type: int) -> str:
    """The attribute's name, or its code in hex for a type this stack does not know."""
    spec = SPECS.get(attr_type)
    return spec.name if spec is not None else f"0x{attr_type:04X}"
