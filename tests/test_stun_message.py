"""STUN wire format: RFC 5769 vectors byte for byte, attribute codecs, legacy RFC 3489 forms, framing."""

from __future__ import annotations

import pytest

from nodereach.stun import attributes as A
from nodereach.stun.errors import StunParseError
from nodereach.stun.framing import StreamDecoder
from nodereach.stun.message import (
    BINDING,
    ERROR,
    REQUEST,
    SUCCESS,
    StunMessage,
    binding_request,
    encode_message,
    error_response,
    long_term_key,
    message_type,
    parse_message,
    split_type,
)

# RFC 5769 section 2 test vectors.
SAMPLE_REQUEST = bytes.fromhex(
    "00010058 2112a442 b7e7a701 bc34d686 fa87dfae"
    "80220010 5354554e 20746573 7420636c 69656e74"
    "00240004 6e0001ff"
    "80290008 932ff9b1 51263b36"
    "00060009 6576746a 3a683676 59202020"
    "00080014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2"
    "80280004 e57a3bcf".replace(" ", ""))
SAMPLE_IPV4_RESPONSE = bytes.fromhex(
    "0101003c 2112a442 b7e7a701 bc34d686 fa87dfae"
    "8022000b 74657374 20766563 746f7220"
    "00200008 0001a147 e112a643"
    "00080014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7"
    "80280004 c07d4c96".replace(" ", ""))
SAMPLE_IPV6_RESPONSE = bytes.fromhex(
    "01010048 2112a442 b7e7a701 bc34d686 fa87dfae"
    "8022000b 74657374 20766563 746f7220"
    "00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9"
    "00080014 a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41"
    "80280004 c8fb0b4c".replace(" ", ""))
SAMPLE_LONG_TERM = bytes.fromhex(
    "00010060 2112a442 78ad3433 c6ad72c0 29da412e"
    "00060012 e3839ee3 8388e383 aae38383 e382afe3 82b90000"
    "0015001c 662f2f34 39396b39 35346436 4f4c3334 6f4c3946 53547679 36347341"
    "0014000b 6578616d 706c652e 6f726700"
    "00080014 f6702465 6dd64a3e 02b8e071 2e85c9a2 8ca89666".replace(" ", ""))
PASSWORD = "VOkJxbRl1RmTxUk/WvJxBt"
TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")


def test_rfc5769_request_parses_and_verifies() -> None:
    msg = parse_message(SAMPLE_REQUEST)
    assert (msg.method, msg.cls, msg.transaction_id, msg.legacy) == (BINDING, REQUEST, TID, False)
    assert msg.software == "STUN test client"
    assert msg.username == "evtj:h6vY"
    assert msg.check_integrity(PASSWORD.encode()) is True
    assert msg.check_integrity(b"wrong") is False
    assert msg.check_fingerprint() is True
    assert msg.unknown_required == ()  # PRIORITY is known (ICE)


def test_rfc5769_request_encodes_byte_for_byte() -> None:
    msg = StunMessage(BINDING, REQUEST, TID)
    msg.add(A.SOFTWARE, b"STUN test client").add(A.PRIORITY, bytes.fromhex("6e0001ff"))
    msg.add(A.ICE_CONTROLLED, bytes.fromhex("932ff9b151263b36")).add(A.USERNAME, b"evtj:h6vY")
    out = encode_message(msg, integrity_key=PASSWORD.encode(), fingerprint=True, pad_byte=0x20)
    assert out == SAMPLE_REQUEST


@pytest.mark.parametrize(("vector", "ip"), [(SAMPLE_IPV4_RESPONSE, "192.0.2.1"),
                                             (SAMPLE_IPV6_RESPONSE, "2001:db8:1234:5678:11:2233:4455:6677")])
def test_rfc5769_responses_round_trip(vector: bytes, ip: str) -> None:
    msg = parse_message(vector)
    assert (msg.method, msg.cls) == (BINDING, SUCCESS)
    assert msg.mapped_address == (ip, 32853)
    assert msg.software == "test vector"
    assert msg.check_integrity(PASSWORD.encode()) is True
    assert msg.check_fingerprint() is True
    built = StunMessage(BINDING, SUCCESS, TID)
    built.add(A.SOFTWARE, b"test vector")
    built.add(A.XOR_MAPPED_ADDRESS, A.encode_xor_address((ip, 32853), built.key))
    assert encode_message(built, integrity_key=PASSWORD.encode(), fingerprint=True, pad_byte=0x20) == vector


def test_rfc5769_long_term_credentials() -> None:
    msg = parse_message(SAMPLE_LONG_TERM)
    username = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"
    assert msg.username == username
    assert msg.get(A.NONCE) == b"f//499k954d6OL34oL9FSTvy64sA"
    assert msg.get(A.REALM) == b"example.org"
    key = long_term_key(username, "example.org", "TheMatrIX")
    assert msg.check_integrity(key) is True
    assert msg.check_fingerprint() is None
    built = StunMessage(BINDING, REQUEST, msg.transaction_id)
    built.add(A.USERNAME, username.encode()).add(A.NONCE, b"f//499k954d6OL34oL9FSTvy64sA")
    built.add(A.REALM, b"example.org")
    assert encode_message(built, integrity_key=key) == SAMPLE_LONG_TERM


def test_integrity_sha256_round_trip() -> None:
    out = encode_message(binding_request(), integrity_key=b"k", integrity_sha256_key=b"k2", fingerprint=True)
    msg = parse_message(out)
    assert msg.check_integrity(b"k") and msg.check_integrity_sha256(b"k2") and msg.check_fingerprint()
    assert msg.check_integrity_sha256(b"k") is False


def test_fingerprint_detects_corruption() -> None:
    data = bytearray(SAMPLE_IPV4_RESPONSE)
    data[-1] ^= 1
    assert parse_message(bytes(data)).check_fingerprint() is False


def test_message_type_interleaving() -> None:
    assert message_type(BINDING, SUCCESS) == 0x0101
    assert message_type(BINDING, ERROR) == 0x0111
    assert message_type(0x003, REQUEST) == 0x0003  # Allocate
    for method in (0x001, 0x00F, 0x070, 0xF80, 0xFFF):
        for cls in (REQUEST, 0x010, SUCCESS, ERROR):
            assert split_type(message_type(method, cls)) == (method, cls)


def test_rfc3489_legacy_response() -> None:
    tid16 = bytes(range(16))
    msg = StunMessage(BINDING, SUCCESS, tid16)
    msg.add(A.MAPPED_ADDRESS, A.encode_address(("198.51.100.2", 4000)))
    msg.add(A.SOURCE_ADDRESS, A.encode_address(("203.0.113.10", 3478)))
    msg.add(A.CHANGED_ADDRESS, A.encode_address(("203.0.113.11", 3479)))
    parsed = parse_message(encode_message(msg))
    assert parsed.legacy and parsed.transaction_id == tid16
    assert parsed.mapped_address == ("198.51.100.2", 4000)
    assert parsed.response_origin == ("203.0.113.10", 3478)
    assert parsed.other_address == ("203.0.113.11", 3479)


def test_rfc5780_attributes() -> None:
    req = binding_request(change_ip=True, change_port=True, response_port=5000, padding=7)
    parsed = parse_message(encode_message(req))
    assert parsed.change_request == (True, True)
    assert parsed.response_port == 5000
    assert len(parsed.get(A.PADDING) or b"") == 7
    assert len(encode_message(req)) == 20 + 8 + 8 + 12


def test_error_response_and_unknown_attributes() -> None:
    req = parse_message(encode_message(StunMessage(BINDING, REQUEST, TID, [(0x7777, b"x"), (0xC001, b"opt")])))
    assert req.unknown_required == (0x7777,)
    assert req.get(0xC001) == b"opt"  # unknown comprehension-optional: kept
    err = parse_message(encode_message(error_response(req, 420, "Unknown Attribute", req.unknown_required)))
    assert err.cls == ERROR and err.error_code == (420, "Unknown Attribute")
    assert err.unknown_attributes == (0x7777,)


def test_alternate_server() -> None:
    msg = StunMessage(BINDING, ERROR, TID)
    msg.add(A.ERROR_CODE, A.encode_error_code(300, "Try Alternate"))
    msg.add(A.ALTERNATE_SERVER, A.encode_address(("::1", 3478)))
    parsed = parse_message(encode_message(msg))
    assert parsed.alternate_server == ("::1", 3478) and parsed.error_code == (300, "Try Alternate")


def test_attributes_after_integrity_are_ignored_but_fingerprint_kept() -> None:
    out = encode_message(binding_request(software="a"), integrity_key=b"k")
    # append a SOFTWARE after MESSAGE-INTEGRITY, fix the length
    extra = bytes.fromhex("80220004") + b"evil"
    data = bytearray(out + extra)
    data[2:4] = (len(data) - 20).to_bytes(2, "big")
    msg = parse_message(bytes(data))
    assert msg.software == "a"


@pytest.mark.parametrize("data", [
    b"", b"\x00" * 19, b"\xc0" + b"\x00" * 19,
    bytes.fromhex("000100042112a442") + bytes(12),  # length says 4, no body
    bytes.fromhex("000100022112a442") + bytes(12) + b"\x00\x00",  # length not multiple of 4
    bytes.fromhex("000100082112a442") + bytes(12) + bytes.fromhex("00010008") + bytes(4),  # attr past end
    bytes.fromhex("000100082112a442") + bytes(12) + bytes.fromhex("00010004") + bytes(4),  # bad family 0
    bytes.fromhex("0001000c2112a442") + bytes(12) + bytes.fromhex("80280004") + bytes(4) + bytes(4),
    bytes.fromhex("000100082112a442") + bytes(12) + bytes.fromhex("00090004") + bytes(4),  # bad error class
])
def test_malformed_raise_typed_error(data: bytes) -> None:
    with pytest.raises(StunParseError):
        parse_message(data)


def test_stream_framing() -> None:
    a = encode_message(binding_request())
    b = encode_message(binding_request(software="x"))
    dec = StreamDecoder()
    stream = a + b
    got: list[bytes] = []
    for i in range(0, len(stream), 7):
        got += dec.feed(stream[i:i + 7])
    assert got == [a, b] and dec.pending == 0
    with pytest.raises(StunParseError):
        StreamDecoder().feed(b"GET / HTTP/1.1\r\n\r\n\r\n")
    with pytest.raises(StunParseError):
        StreamDecoder(max_message=100).feed(bytes.fromhex("00010400") + bytes(16))
