"""The STUN server's fast path (stun/fastpath.py) against its full path, byte for byte: for any request, the
fast path declines or gives exactly the reply, socket, destination and counters the full path gives."""

from __future__ import annotations

import binascii
import ipaddress
import struct

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from nodereach.stun import attributes as A
from nodereach.stun.message import (
    BINDING,
    ERROR,
    FINGERPRINT_XOR,
    SUCCESS,
    StunMessage,
    binding_request,
    encode_message,
    parse_message,
)
from nodereach.stun.server import StunServer, StunServerConfig

FULL_ADDRESSES = {"primary": ("198.51.100.10", 3478), "alt_port": ("198.51.100.10", 3479),
                  "alt_ip": ("198.51.100.11", 3478), "alt_both": ("198.51.100.11", 3479)}
FULL6_ADDRESSES = {"primary": ("2001:db8::10", 3478), "alt_port": ("2001:db8::10", 3479),
                   "alt_ip": ("2001:db8::11", 3478), "alt_both": ("2001:db8::11", 3479)}


def _server(full: bool, v6: bool = False) -> StunServer:
    """A server that is never started: its decisions are pure functions of the bytes and its addresses."""
    addresses = FULL6_ADDRESSES if v6 else FULL_ADDRESSES
    alt = addresses["alt_ip"][0] if full else None
    server = StunServer(StunServerConfig(addresses["primary"][0], alt, port=3478, alt_port=3479))
    server.addresses = dict(addresses) if full else {"primary": addresses["primary"]}
    return server


SERVERS = {(full, v6): _server(full, v6) for full in (False, True) for v6 in (False, True)}

ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6 = st.binary(min_size=16, max_size=16).map(lambda b: ipaddress.IPv6Address(b).compressed)
sources = st.tuples(st.one_of(ipv4, ipv6), st.integers(0, 65535))

# Attribute types worth generating: the accepted ones, the ones the fast path must decline, and anything.
_TYPES = [A.SOFTWARE, A.CHANGE_REQUEST, A.FINGERPRINT, A.USERNAME, A.PRIORITY, A.USE_CANDIDATE, A.ICE_CONTROLLING,
          A.ICE_CONTROLLED, A.REALM, A.USERHASH, A.PASSWORD_ALGORITHMS, A.RESPONSE_PORT, A.PADDING,
          A.MESSAGE_INTEGRITY, A.MESSAGE_INTEGRITY_SHA256, A.XOR_MAPPED_ADDRESS, A.RESPONSE_ORIGIN, A.ERROR_CODE,
          A.UNKNOWN_ATTRIBUTES, 0x7F01, 0x7000, 0x8000, 0xC0FE, 0x8020]
_COMMON = [A.SOFTWARE, A.CHANGE_REQUEST, A.USERNAME, A.PRIORITY, A.ICE_CONTROLLING, 0xC0FE]


@st.composite
def attributes(draw: st.DrawFn, clean: bool = False) -> bytes:
    """One attribute: clean, a type the fast path accepts with a valid value; else mostly a known type with a
    length at or next to its row's bounds, or anything."""
    if clean:
        attr_type = draw(st.sampled_from(_COMMON))
    else:
        attr_type = draw(st.one_of(st.sampled_from(_COMMON), st.sampled_from(_TYPES), st.integers(0, 0xFFFF)))
    spec = A.SPECS.get(attr_type)
    if spec is not None and clean:
        length = draw(st.sampled_from([spec.min_len, min(spec.max_len, 800), min(spec.max_len, 9)]))
    elif spec is not None and draw(st.integers(0, 4)):
        lo, hi, step = spec.min_len, min(spec.max_len, 800), spec.multiple_of
        length = draw(st.sampled_from([n for n in (lo, lo + 1, lo + step, hi, hi + 1, max(0, lo - 1), max(0, hi - 1))
                                       if 0 <= n <= 801]))
    else:
        length = draw(st.integers(0, 24))
    value = draw(st.binary(min_size=length, max_size=length)) if length <= 24 else bytes(length)
    if attr_type == A.CHANGE_REQUEST and length == 4 and draw(st.integers(0, 3)):
        value = A.encode_change_request(draw(st.booleans()), draw(st.booleans()))
    return struct.pack("!HH", attr_type, length) + value + bytes(-length % 4)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """Binding requests in every shape the fast path could meet (half of them clean: shapes it accepts), and
    broken ones next to them."""
    if draw(st.booleans()):
        body = b"".join(draw(st.lists(attributes(clean=True), min_size=1, max_size=4)))
        return _finish(0x0001, A.MAGIC_COOKIE_BYTES, draw(st.binary(min_size=12, max_size=12)), body,
                       draw(st.sampled_from(["right", "none"])), draw)
    kind = draw(st.sampled_from([0x0001] * 12 + [0x0011, 0x0101, 0x0002, 0x4001]))
    cookie = A.MAGIC_COOKIE_BYTES if draw(st.integers(0, 15)) else draw(st.binary(min_size=4, max_size=4))
    tid = draw(st.binary(min_size=12, max_size=12))
    parts = draw(st.lists(attributes(clean=True), max_size=3))
    parts.insert(draw(st.integers(0, len(parts))), draw(attributes()))  # one that may be anything
    if parts and draw(st.integers(0, 5)) == 0:  # one attribute's length off by a little: runs into the next
        i = draw(st.integers(0, len(parts) - 1))
        grown = ((parts[i][2] << 8) | parts[i][3]) + draw(st.integers(1, 8))
        parts[i] = parts[i][:2] + struct.pack("!H", grown & 0xFFFF) + parts[i][4:]
    data = _finish(kind, cookie, tid, b"".join(parts), draw(st.sampled_from(["right", "wrong", "none", "after"])),
                   draw)
    mutation = draw(st.sampled_from(["none"] * 4 + ["truncate", "extend", "length", "flip"]))
    if mutation == "truncate":
        data = data[:draw(st.integers(0, len(data)))]
    elif mutation == "extend":
        data += draw(st.binary(min_size=1, max_size=8))
    elif mutation == "length":
        data = data[:2] + struct.pack("!H", draw(st.integers(0, 0xFFFF))) + data[4:]
    elif mutation == "flip":
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([data[i] ^ (1 << draw(st.integers(0, 7)))]) + data[i + 1:]
    return data


def _finish(kind: int, cookie: bytes, tid: bytes, body: bytes, fingerprint: str, draw: st.DrawFn) -> bytes:
    """Header + body, with a right or wrong FINGERPRINT, or one followed by another attribute, or none."""
    if fingerprint != "none":
        head = struct.pack("!HH", kind, len(body) + 8) + cookie + tid + body
        crc = binascii.crc32(head) ^ FINGERPRINT_XOR
        if fingerprint == "wrong":
            crc ^= 1 << draw(st.integers(0, 31))
        body += struct.pack("!HHI", A.FINGERPRINT, 4, crc)
        if fingerprint == "after":
            body += draw(attributes())
    return struct.pack("!HH", kind, len(body)) + cookie + tid + body


def _compare(server: StunServer, data: bytes, source: A.Address, via: tuple[int, int], tcp: bool) -> bool:
    """Assert the fast path agrees with the full path; True when it answered."""
    fast = server.fast_path().answer(data, source, via, tcp)
    before = (server.stats.requests, dict(server.stats.errors), server.stats.malformed, server.stats.ignored)
    full = server.respond_full(data, source, via, tcp)
    if fast is None:
        return False
    reply, out, dest, code = fast
    assert (reply, out, dest) == full
    errors = dict(before[1])
    if code:
        errors[code] = errors.get(code, 0) + 1
    assert (server.stats.requests, server.stats.errors, server.stats.malformed, server.stats.ignored) == (
        before[0] + 1, errors, before[2], before[3])
    return True


@settings(max_examples=1500, deadline=None)
@given(requests(), sources, st.booleans(), st.booleans(), st.sampled_from([(0, 0), (0, 1), (1, 0), (1, 1)]),
       st.booleans())
def test_fast_path_declines_or_matches_full_path(data: bytes, source: A.Address, full: bool, v6: bool,
                                                 via: tuple[int, int], tcp: bool) -> None:
    if not full:
        via = (0, 0)
    event("fast path answered" if _compare(SERVERS[(full, v6)], data, source, via, tcp) else "declined")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=96), sources, st.booleans())
def test_fast_path_on_random_bytes(data: bytes, source: A.Address, full: bool) -> None:
    _compare(SERVERS[(full, False)], data, source, (0, 0), False)


def _with_fingerprint(msg: StunMessage) -> bytes:
    return encode_message(msg, fingerprint=True)


_PLAIN = encode_message(binding_request(transaction_id=bytes(12)))
ICE_LIKE = StunMessage(BINDING, 0, bytes(range(12)), [(A.USERNAME, b"abcd:efgh"), (A.PRIORITY, b"\x6e\x00\x01\xff"),
                                                      (A.ICE_CONTROLLING, bytes(8)), (A.USE_CANDIDATE, b"")])


@pytest.mark.parametrize(("name", "data", "tcp", "full", "code"), [
    ("FINGERPRINT (WebRTC, most libraries)", _with_fingerprint(binding_request()), False, False, 0),
    ("SOFTWARE + FINGERPRINT (libnice, aioice)", _with_fingerprint(binding_request(software="libnice")), False,
     True, 0),
    ("CHANGE-REQUEST, RFC 5780 mode", encode_message(binding_request(change_ip=True, change_port=True)), False,
     True, 0),
    ("CHANGE-REQUEST + SOFTWARE (nodereach check)",
     encode_message(binding_request(change_port=True, software="nodereach")), False, True, 0),
    ("CHANGE-REQUEST + FINGERPRINT, basic mode: 420",
     _with_fingerprint(binding_request(change_ip=True)), False, False, 420),
    ("CHANGE-REQUEST over TCP: 420", encode_message(binding_request(change_port=True)), True, True, 420),
    ("CHANGE-REQUEST without flags", encode_message(binding_request().add(A.CHANGE_REQUEST, bytes(4))), False,
     False, 0),
    ("ICE-style attributes", _with_fingerprint(ICE_LIKE), False, True, 0),
    ("unknown comprehension-optional", encode_message(binding_request().add(0xC0FE, b"x")), False, False, 0),
    ("plain 20 bytes (over TCP; the UDP driver answers them before)", _PLAIN, True, True, 0),
])
@pytest.mark.parametrize("source", [("203.0.113.7", 40000), ("2001:db8::7", 40000)])
def test_common_shapes_take_the_fast_path(name: str, data: bytes, tcp: bool, full: bool, code: int,
                                          source: A.Address) -> None:
    v6 = ":" in source[0]
    server = SERVERS[(full, v6)]
    assert _compare(server, data, source, (0, 0), tcp), name
    answer = server.fast_path().answer(data, source, (0, 0), tcp)
    assert answer is not None
    reply = parse_message(answer[0])
    assert reply.cls == (ERROR if code else SUCCESS) and answer[3] == code
    assert reply.transaction_id == parse_message(data).transaction_id
    if code:
        assert reply.error_code is not None and reply.error_code[0] == 420
        assert reply.unknown_attributes == (A.CHANGE_REQUEST,)
    else:
        assert reply.xor_mapped_address == source
    assert reply.check_fingerprint() is (True if parse_message(data).has(A.FINGERPRINT) else None)


@pytest.mark.parametrize(("name", "data"), [
    ("wrong FINGERPRINT", _PLAIN[:3] + b"\x08" + _PLAIN[4:] + bytes.fromhex("8028000412345678")),
    ("attribute after FINGERPRINT", _with_fingerprint(binding_request()) + b"\x80\x22\x00\x00"),
    ("unknown comprehension-required", encode_message(binding_request().add(0x7F01, b"abcd"))),
    ("RESPONSE-PORT", encode_message(binding_request(response_port=9))),
    ("PADDING", encode_message(binding_request(padding=8))),
    ("MESSAGE-INTEGRITY", encode_message(binding_request(), integrity_key=b"k")),
    ("RFC 3489 request", encode_message(binding_request(legacy=True))),
    ("SOFTWARE too long", encode_message(binding_request().add(A.SOFTWARE, bytes(764)))),
    ("CHANGE-REQUEST of 8 bytes", encode_message(binding_request().add(A.CHANGE_REQUEST, bytes(8)))),
    ("Binding indication", encode_message(StunMessage(BINDING, 0x010, bytes(12), [(A.SOFTWARE, b"x")]))),
])
def test_everything_else_takes_the_full_path(name: str, data: bytes) -> None:
    for (full, v6), server in SERVERS.items():
        source = ("2001:db8::7", 1) if v6 else ("203.0.113.7", 1)
        assert server.fast_path().answer(data, source, (0, 0)) is None, (name, full, v6)


def test_a_link_local_source_is_answered_without_its_zone() -> None:
    """recvfrom names a link-local source `fe80::1%lo`: both paths answer it (the zone is this host's, never on the
    wire; they once counted it malformed and stayed silent), the reply goes back to the scoped address."""
    data = _with_fingerprint(binding_request())
    server = SERVERS[(False, True)]
    assert _compare(server, data, ("fe80::1%lo", 5), (0, 0), False)
    reply, _out, dest = server.respond_full(data, ("fe80::1%lo", 5), (0, 0), False)
    assert parse_message(reply).xor_mapped_address == ("fe80::1", 5) and dest == ("fe80::1%lo", 5)
