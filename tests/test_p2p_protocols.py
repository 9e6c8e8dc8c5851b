"""First exchanges of node protocols, byte for byte against published vectors and captures, plus hostile
input (hypothesis) for every reader. The in-test peers here are codec round-trips (our encoder against our
decoder): they prove the codec is self-consistent, never how real node software behaves — that is what
tests/test_proofs_real.py does against monerod, transmission-daemon and js-libp2p."""

from __future__ import annotations

import contextlib
import ipaddress
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodereach.p2p import (
    bitcoin,
    bittorrent,
    crypto,
    discv4,
    discv5,
    levin,
    multistream,
    portable_storage,
    rlpcodec,
    varint,
)
from nodereach.p2p.errors import P2PDecodeError, ProtocolError

KEY = bytes.fromhex("b71c71a67e1177ad4e901695e1b4b9ee17ae16c6668d313eac2f96dbcda3f291")  # EIP-8 / EIP-778 key
KEY_NODE_ID = bytes.fromhex("a448f24c6d18e575453db13171562b71999873db5b286df957af199ec94617f7")


def _hex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# --- Bitcoin -------------------------------------------------------------------------------------------
# The `version` example of the Bitcoin wiki's protocol documentation (https://en.bitcoin.it/wiki/Protocol_documentation#version),
# a /Satoshi:0.7.2/ node on mainnet, and a /Satoshi:23.0.0/ node's answer captured and published at
# https://stacker.news/items/83748 (its checksum verifies: the capture is intact).
WIKI_VERSION = _hex("""
f9 be b4 d9 76 65 72 73 69 6f 6e 00 00 00 00 00 64 00 00 00 35 8d 49 32 62 ea 00 00 01 00 00 00 00 00 00 00
11 b2 d0 50 00 00 00 00 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 ff ff 00 00 00 00 00 00 00 00
00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 ff ff 00 00 00 00 00 00 3b 2e b3 5d 8c e6 17 65 0f 2f 53 61
74 6f 73 68 69 3a 30 2e 37 2e 32 2f c0 3e 03 00""")
CORE23_VERSION = _hex("""
f9beb4d9 76657273696f6e0000000000 66000000 bdcad498 80110100 0d04000000000000 5083506300000000
0000000000000000 00000000000000000000000000000000 0000 0d04000000000000 00000000000000000000000000000000 0000
ff0ae91284bdd3e2 10 2f5361746f7368693a32332e302e302f 8e960b00 01""")
CORE23_VERACK = _hex("f9beb4d9 76657261636b000000000000 00000000 5df6e0e2")


def test_bitcoin_version_encoder_reproduces_the_wiki_example() -> None:
    msg = bitcoin.encode_version(bitcoin.NETWORKS["main"], version=60002, services=1, timestamp=0x50D0B211,
                                 receiver=("0.0.0.0", 0), receiver_services=1, sender=("0.0.0.0", 0),
                                 nonce=0x6517E68C5DB32E3B, user_agent=b"/Satoshi:0.7.2/", start_height=212672,
                                 relay=None)
    assert msg == WIKI_VERSION


def test_bitcoin_reads_a_captured_core_answer() -> None:
    reader = bitcoin.MessageReader(bitcoin.NETWORKS["main"])
    msgs = reader.feed(CORE23_VERSION[:50]) + reader.feed(CORE23_VERSION[50:] + CORE23_VERACK)
    assert [m.command for m in msgs] == ["version", "verack"]
    v = bitcoin.decode_version(msgs[0].payload)
    assert (v.version, v.services, v.user_agent, v.start_height, v.relay) == (70016, 0x40D, "/Satoshi:23.0.0/",
                                                                             759438, True)
    x = bitcoin.VersionExchange(bitcoin.NETWORKS["main"], nonce=7, timestamp=1)
    answer = x.feed(CORE23_VERSION)
    assert answer is not None and answer.ok and "/Satoshi:23.0.0/" in answer.detail and "759438" in answer.detail


def test_bitcoin_our_version() -> None:
    x = bitcoin.VersionExchange(bitcoin.NETWORKS["regtest"], nonce=42, timestamp=1_700_000_000,
                                receiver=("203.0.113.7", 18444))
    req = x.request()
    assert req[:4] == bytes.fromhex("fabfb5da") and req[4:16] == b"version\x00\x00\x00\x00\x00"
    assert req[20:24] == bitcoin.checksum(req[24:])
    v = bitcoin.decode_version(req[24:])
    assert (v.version, v.receiver, v.nonce, v.relay, v.user_agent) == (70016, ("203.0.113.7", 18444), 42, False,
                                                                      "/nodereach:0.1/")
    assert x.feed(req) is not None and not x.feed(req).ok  # type: ignore[union-attr]  # our own nonce: a self-connection


@pytest.mark.parametrize("reply, why", [
    (bitcoin.encode_message(bitcoin.NETWORKS["testnet3"], "version", b"x"), "testnet3"),
    (CORE23_VERSION[:20] + b"\x00\x00\x00\x00" + CORE23_VERSION[24:], "checksum"),
    (bitcoin.encode_message(bitcoin.NETWORKS["main"], "verack", b""), "before its version"),
    (bitcoin.encode_message(bitcoin.NETWORKS["main"], "version", b"short"), "too short"),
    (CORE23_VERSION[:16] + struct.pack("<I", 10**6) + CORE23_VERSION[20:], "larger"),
    (bitcoin.NETWORKS["main"] + b"ver\x00sion\x00\x00\x00\x00\x00" + bytes(8), "command"),
])
def test_bitcoin_wrong_answers(reply: bytes, why: str) -> None:
    answer = bitcoin.VersionExchange(bitcoin.NETWORKS["main"], nonce=1, timestamp=1).feed(reply)
    assert answer is not None and not answer.ok and why in answer.detail


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=200), max_size=6))
def test_bitcoin_hostile_stream(chunks: list[bytes]) -> None:
    x = bitcoin.VersionExchange(bitcoin.NETWORKS["main"], nonce=1, timestamp=1)
    for c in [bitcoin.NETWORKS["main"] + c if i == 0 else c for i, c in enumerate(chunks)]:
        if x.feed(c) is not None:
            break


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_bitcoin_hostile_version_payload(payload: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        bitcoin.decode_version(payload)


# --- Monero Levin + portable storage ---------------------------------------------------------------------
# monerod v0.18.0.0 (Debian `monero`) answering our ping, captured here (127.0.0.1 in a namespace).
MONEROD_PING_RESPONSE = _hex("""
0121010101010101 2600000000000000 00 eb030000 01000000 02000000 01000000
0111010101010201 01 08 07 706565725f6964 05 68d4d96f698f7aa4 06 737461747573 0a 08 4f4b""")


def test_levin_ping_request_bytes() -> None:
    # signature, body 10, have_to_return 1, command 1003, rc 0, flags REQUEST, version 1 | empty storage.
    assert levin.ping_request() == _hex("""0121010101010101 0a00000000000000 01 eb030000 00000000 01000000 01000000
                                           0111010101010201 01 00""")


def test_levin_reads_monerod_ping_response() -> None:
    head = levin.decode_header(MONEROD_PING_RESPONSE)
    assert (head.command, head.flags, head.return_code, head.body_size, head.have_to_return) == (1003, 2, 1, 38,
                                                                                                  False)
    resp = levin.decode_ping_response(MONEROD_PING_RESPONSE[33:])
    assert (resp.status, resp.peer_id) == ("OK", 0xA47A8F696FD9D468)
    x = levin.PingExchange()
    assert x.feed(MONEROD_PING_RESPONSE[:20]) is None
    answer = x.feed(MONEROD_PING_RESPONSE[20:])
    assert answer is not None and answer.ok and "a47a8f696fd9d468" in answer.detail


def test_portable_storage_round_trip_and_types() -> None:
    doc = {"a": (portable_storage.UINT8, 7), "b": -5, "s": b"hi", "t": True, "f": 1.5, "o": {"x": [1, 2, 3]},
           "l": ["p", "q"]}
    raw = portable_storage.encode(doc)
    assert portable_storage.decode(raw) == {"a": 7, "b": -5, "s": b"hi", "t": True, "f": 1.5,
                                            "o": {"x": [1, 2, 3]}, "l": [b"p", b"q"]}
    # Varint widths (docs/PORTABLE_STORAGE.md examples): 0 -> 00, 7 -> 1c, 101 -> 95 01.
    assert [portable_storage.encode_varint(n).hex() for n in (0, 7, 101, 16384)] == ["00", "1c", "9501",
                                                                                    "02000100"]


@pytest.mark.parametrize("body, why", [
    (b"", "signature"),
    (portable_storage.SIGNATURE, "truncated"),
    (portable_storage.SIGNATURE + b"\x04\x01a\x0e", "type 14"),
    (portable_storage.SIGNATURE + b"\x04\x01a\x0a\x02\x00\x08\x00", "string of"),
    (portable_storage.SIGNATURE + b"\x00\x00", "after the portable storage root"),
    (portable_storage.SIGNATURE + (b"\x04\x01a\x0c") * 12 + b"\x00", "nested"),
    (portable_storage.SIGNATURE + b"\x04\x01a\x85\xa2\x0f\x00\x00", "array items"),
])
def test_portable_storage_rejects(body: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        portable_storage.decode(body)


@pytest.mark.parametrize("reply, why", [
    (levin.encode(1003, portable_storage.encode({"status": "BUSY", "peer_id": 1}), request=False,
                  have_to_return=False, return_code=1), "status"),
    (levin.encode(1003, b"", request=False, have_to_return=False, return_code=-3), "refused"),
    (levin.encode(1003, portable_storage.encode({"status": "OK"}), request=False, have_to_return=False), "without"),
    (b"\x02" * 33, "signature"),
    (levin.HEADER.pack(levin.SIGNATURE, 10**9, 0, 1003, 0, 2, 1), "larger"),
])
def test_levin_wrong_answers(reply: bytes, why: str) -> None:
    answer = levin.PingExchange().feed(reply)
    assert answer is not None and not answer.ok and why in answer.detail


def test_levin_skips_other_requests_first() -> None:
    other = levin.encode(1007, portable_storage.encode({}), request=True, have_to_return=True)
    x = levin.PingExchange()
    assert x.feed(other) is None
    assert x.feed(MONEROD_PING_RESPONSE) is not None
    y = levin.PingExchange()
    answer = y.feed(other * 4)
    assert answer is not None and not answer.ok


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_portable_storage_hostile(body: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        portable_storage.decode(portable_storage.SIGNATURE + body)


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=120), max_size=5))
def test_levin_hostile_stream(chunks: list[bytes]) -> None:
    x = levin.PingExchange()
    head = levin.HEADER.pack(levin.SIGNATURE, 20, 0, 1003, 1, 2, 1)
    for c in [head, *chunks]:
        if x.feed(c) is not None:
            break


# --- multistream-select ----------------------------------------------------------------------------------
def test_multistream_header_bytes() -> None:
    # The length counts the newline: 0x13 = 19 = len("/multistream/1.0.0\n") (multistream-select README).
    assert multistream.HeaderExchange().request() == b"\x13/multistream/1.0.0\n"
    assert multistream.encode("na") == b"\x03na\n"


def test_multistream_echo_split_and_joined() -> None:
    x = multistream.HeaderExchange()
    assert x.feed(b"\x13/multi") is None
    answer = x.feed(b"stream/1.0.0\n\x07/noise\n")
    assert answer is not None and answer.ok


@pytest.mark.parametrize("reply, why", [
    (b"\x03na\n", "instead of"),
    (b"\x05hello", "newline"),
    (b"\x80\x10", "bytes"),
    (b"\xff" * 10, "length"),
    (b"\x00", "0 bytes"),
    (b"\x02\xff\n", "UTF-8"),
])
def test_multistream_wrong_answers(reply: bytes, why: str) -> None:
    answer = multistream.HeaderExchange().feed(reply)
    assert answer is not None and not answer.ok and why in answer.detail


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=60), max_size=6))
def test_multistream_hostile(chunks: list[bytes]) -> None:
    x = multistream.HeaderExchange()
    for c in chunks:
        if x.feed(c) is not None:
            break


@given(st.integers(0, 2**63 - 1))
def test_varint_round_trip(n: int) -> None:
    assert varint.decode(varint.encode(n)) == (n, len(varint.encode(n)))


def test_varint_rejects() -> None:
    with pytest.raises(P2PDecodeError, match="minimal"):
        varint.decode(b"\x80\x00")
    with pytest.raises(varint.Incomplete):
        varint.decode(b"\x80")


# --- BitTorrent --------------------------------------------------------------------------------------------
INFOHASH = bytes.fromhex("d2474e86c95b19b8bcfdb92bc12c9d44667cfa36")


def test_bittorrent_handshake_bytes() -> None:
    peer = b"-NR0100-abcdefghijkl"
    hs = bittorrent.HandshakeExchange(INFOHASH, peer).request()
    assert hs == b"\x13BitTorrent protocol" + bytes(8) + INFOHASH + peer and len(hs) == 68


def test_bittorrent_answer() -> None:
    x = bittorrent.HandshakeExchange(INFOHASH)
    reply = bittorrent.encode_handshake(INFOHASH, b"-TR3000-123456789012", bytes.fromhex("0000000000100005"))
    assert x.feed(reply[:30]) is None
    answer = x.feed(reply[30:] + b"\x00\x00\x00\x01\x05")
    assert answer is not None and answer.ok and "-TR3000-" in answer.detail
    other = bittorrent.HandshakeExchange(INFOHASH).feed(bittorrent.encode_handshake(bytes(20), bytes(20)))
    assert other is not None and not other.ok and "another torrent" in other.detail
    http = bittorrent.HandshakeExchange(INFOHASH).feed(b"HTTP/1.1 400 Bad Request\r\n")
    assert http is not None and not http.ok
    early = bittorrent.HandshakeExchange(INFOHASH).feed(b"\x13BitTorrent protoXXX")
    assert early is not None and not early.ok


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=80), max_size=4))
def test_bittorrent_hostile(chunks: list[bytes]) -> None:
    x = bittorrent.HandshakeExchange(INFOHASH)
    for c in chunks:
        if c and x.feed(c) is not None:
            break


# --- discv4 ------------------------------------------------------------------------------------------------
# EIP-8 "RLPx Discovery Protocol" test vectors (https://eips.ethereum.org/EIPS/eip-8), signed with KEY.
EIP8_PING = _hex("""
e9614ccfd9fc3e74360018522d30e1419a143407ffcce748de3e22116b7e8dc92ff74788c0b6663a
aa3d67d641936511c8f8d6ad8698b820a7cf9e1be7155e9a241f556658c55428ec0563514365799a
4be2be5a685a80971ddcfa80cb422cdd0101ec04cb847f000001820cfa8215a8d790000000000000
000000000000000000018208ae820d058443b9a3550102""")
EIP8_PING_555 = _hex("""
577be4349c4dd26768081f58de4c6f375a7a22f3f7adda654d1428637412c3d7fe917cadc56d4e5e
7ffae1dbe3efffb9849feb71b262de37977e7c7a44e677295680e9e38ab26bee2fcbae207fba3ff3
d74069a50b902a82c9903ed37cc993c50001f83e82022bd79020010db83c4d001500000000abcdef
12820cfa8215a8d79020010db885a308d313198a2e037073488208ae82823a8443b9a355c5010203
040531b9019afde696e582a78fa8d95ea13ce3297d4afb8ba6433e4154caa5ac6431af1b80ba7602
3fa4090c408f6b4bc3701562c031041d4702971d102c9ab7fa5eed4cd6bab8f7af956f7d565ee191
7084a95398b6a21eac920fe3dd1345ec0a7ef39367ee69ddf092cbfe5b93e5e568ebc491983c09c7
6d922dc3""")
EIP8_PONG = _hex("""
09b2428d83348d27cdf7064ad9024f526cebc19e4958f0fdad87c15eb598dd61d08423e0bf66b206
9869e1724125f820d851c136684082774f870e614d95a2855d000f05d1648b2d5945470bc187c2d2
216fbe870f43ed0909009882e176a46b0102f846d79020010db885a308d313198a2e037073488208
ae82823aa0fbc914b16819237dcd8801d7e53f69e9719adecb3cc0e790c57e91ca4461c9548443b9
a355c6010203c2040506a0c969a58f6f9095004c0177a6b47f451530cab38966a25cca5cb58f0555
42124e""")


def test_discv4_eip8_vectors() -> None:
    ping = discv4.decode_packet(EIP8_PING)
    assert ping.node_id == KEY_NODE_ID and ping.type == discv4.PING
    p = discv4.parse_ping(ping)
    assert (p.version, p.sender, p.recipient, p.expiration) == (
        4, discv4.NodeEndpoint("127.0.0.1", 3322, 5544), discv4.NodeEndpoint("::1", 2222, 3333), 1136239445)
    p555 = discv4.parse_ping(discv4.decode_packet(EIP8_PING_555))  # version 555, extra elements and bytes
    assert (p555.version, p555.sender.ip, p555.expiration) == (555, "2001:db8:3c4d:15::abcd:ef12", 1136239445)
    pong_packet = discv4.decode_packet(EIP8_PONG)
    pong = discv4.parse_pong(pong_packet)
    assert pong_packet.node_id == KEY_NODE_ID
    assert pong.recipient == discv4.NodeEndpoint("2001:db8:85a3:8d3:1319:8a2e:370:7348", 2222, 33338)
    assert pong.ping_hash.hex() == "fbc914b16819237dcd8801d7e53f69e9719adecb3cc0e790c57e91ca4461c954"
    assert pong.expiration == 1136239445


def test_discv4_ping_and_pong_round_trip() -> None:
    """Codec round-trip (our PING through our PONG), not node behaviour."""
    x = discv4.PingExchange(discv4.NodeEndpoint("203.0.113.5", 30303, 0), now=1_700_000_000, node_id=KEY_NODE_ID)
    req = x.request()
    packet = discv4.decode_packet(req)
    ping = discv4.parse_ping(packet)
    assert (ping.version, ping.recipient, ping.expiration) == (4, discv4.NodeEndpoint("203.0.113.5", 30303, 0),
                                                               1_700_000_020)
    assert packet.hash == req[:32] == x.ping_hash
    assert len(req) < 150
    pong = discv4.encode_pong(KEY, discv4.NodeEndpoint("198.51.100.9", 40000, 0), packet.hash, 1_700_000_020, 3)
    assert x.feed(discv4.encode_ping(KEY, discv4.NodeEndpoint(None, 0, 0), ping.sender, 1_700_000_020)) is None
    answer = x.feed(pong)
    assert answer is not None and answer.ok and "enr-seq 3" in answer.detail
    # Same PONG, but the node id we expected is another one.
    y = discv4.PingExchange(discv4.NodeEndpoint("203.0.113.5", 30303, 0), now=1, node_id=bytes(32))
    wrong = y.feed(discv4.encode_pong(KEY, ping.sender, y.ping_hash, 5))
    assert wrong is not None and not wrong.ok and "not the expected" in wrong.detail
    # A PONG for another PING is ignored.
    assert x.feed(discv4.encode_pong(KEY, ping.sender, bytes(32), 5)) is None


def test_discv4_rejects_tampering() -> None:
    bad = bytearray(EIP8_PONG)
    bad[-1] ^= 1
    with pytest.raises(ProtocolError, match="hash"):
        discv4.decode_packet(bytes(bad))
    with pytest.raises(ProtocolError):
        discv4.decode_packet(b"\x00" * 98)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=1400))
def test_discv4_hostile(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        discv4.decode_packet(data)
    # With a valid hash in front, the signature and RLP parsers see the hostile bytes too.
    framed = crypto.keccak256(data) + data
    with contextlib.suppress(ProtocolError):
        p = discv4.decode_packet(framed)
        for parse in (discv4.parse_ping, discv4.parse_pong):
            with contextlib.suppress(ProtocolError):
                parse(p)


# --- discv5 ------------------------------------------------------------------------------------------------
# discv5 wire test vectors (https://github.com/ethereum/devp2p/blob/master/discv5/discv5-wire-test-vectors.md).
NODE_A = bytes.fromhex("aaaa8419e9f49d0083561b48287df592939a8d19947d8c0ef88f2a4856a69fbb")
NODE_B = bytes.fromhex("bbbb9d047f0488c0b5a93c1c3f2d8bafc7c8ff337024a55434a0d0555de64db9")
V5_PING = _hex("""00000000000000000000000000000000088b3d4342774649325f313964a39e55
ea96c005ad52be8c7560413a7008f16c9e6d2f43bbea8814a546b7409ce783d3
4c4f53245d08dab84102ed931f66d1492acb308fa1c6715b9d139b81acbdcc""")
V5_WHOAREYOU = _hex("""00000000000000000000000000000000088b3d434277464933a1ccc59f5967ad
1d6035f15e528627dde75cd68292f9e6c27d6b66c8100a873fcbaed4e16b8d""")
V5_CHALLENGE = ("000000000000000000000000000000006469736376350001010102030405060708090a0b0c00180102030405060708090a0b0c"
                "0d0e0f100000000000000000")


def test_discv5_message_packet_vector() -> None:
    nonce, iv = b"\xff" * 12, bytes(16)
    header = discv5.encode_header(discv5.FLAG_MESSAGE, nonce, NODE_A)
    plaintext = b"\x01" + rlpcodec.encode([bytes.fromhex("00000001"), 2])  # PING, req-id 1, enr-seq 2
    message = crypto.aes128_gcm_encrypt(bytes(16), nonce, plaintext, iv + header)  # read-key 0
    assert discv5.encode_packet(NODE_B, header, message, iv) == V5_PING
    decoded = discv5.decode_packet(V5_PING, NODE_B)
    assert (decoded.flag, decoded.nonce, decoded.authdata, decoded.message) == (0, nonce, NODE_A, message)


def test_discv5_whoareyou_vector() -> None:
    nonce, id_nonce = bytes.fromhex("0102030405060708090a0b0c"), bytes.fromhex("0102030405060708090a0b0c0d0e0f10")
    assert discv5.encode_whoareyou(NODE_B, nonce, id_nonce, 0, bytes(16)) == V5_WHOAREYOU
    packet = discv5.decode_packet(V5_WHOAREYOU, NODE_B)
    assert (packet.masking_iv + packet.header).hex() == V5_CHALLENGE
    assert discv5.parse_whoareyou(packet) == discv5.WhoAreYou(nonce, id_nonce, 0)
    with pytest.raises(ProtocolError, match="discv5"):
        discv5.decode_packet(V5_WHOAREYOU, NODE_A)  # masked for B: A's id does not unmask it


def test_discv5_exchange_round_trip() -> None:
    """Codec round-trip: a peer holding NODE_B unmasks our packet and challenges it (not node behaviour)."""
    x = discv5.WhoareyouExchange(NODE_B)
    packet = discv5.decode_packet(x.request(), NODE_B)
    assert packet.flag == discv5.FLAG_MESSAGE and packet.authdata == x.src_id and len(x.request()) == 91
    reply = discv5.encode_whoareyou(x.src_id, packet.nonce, b"\x07" * 16, 5, b"\x01" * 16)
    assert x.feed(discv5.encode_whoareyou(x.src_id, b"\x00" * 12, b"\x07" * 16, 5, b"\x01" * 16)) is None
    assert x.feed(discv5.encode_whoareyou(NODE_A, packet.nonce, b"\x07" * 16, 5, b"\x01" * 16)) is None
    answer = x.feed(reply)
    assert answer is not None and answer.ok and "enr-seq 5" in answer.detail
    with pytest.raises(ProtocolError):
        discv5.decode_packet(x.request(), NODE_A)  # masked with B's id: nobody else can read it


@settings(max_examples=300)
@given(st.binary(max_size=1400))
def test_discv5_hostile(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        discv5.decode_packet(data, NODE_B)
    # Force the static header to unmask correctly so the rest of the parser sees hostile lengths and flags.
    iv = bytes(16)
    tail = data[:40]
    forged = iv + crypto.aes128_ctr(NODE_B[:16], iv, discv5.PROTOCOL_ID + b"\x00\x01" + tail) + data[40:]
    with contextlib.suppress(ProtocolError):
        discv5.decode_packet(forged, NODE_B)
    assert discv5.WhoareyouExchange(NODE_B).feed(data) is None


def test_ipv6_endpoint_in_ping() -> None:
    x = discv4.PingExchange(discv4.NodeEndpoint("2001:db8::5", 30303, 0), now=1)
    ping = discv4.parse_ping(discv4.decode_packet(x.request()))
    assert ipaddress.ip_address(ping.recipient.ip or "") == ipaddress.ip_address("2001:db8::5")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=1300))
def test_discv4_exchange_never_raises(data: bytes) -> None:
    x = discv4.PingExchange(discv4.NodeEndpoint("203.0.113.5", 30303, 0), now=1)
    assert x.feed(data) is None  # nothing random is a PONG with our hash
    framed = crypto.keccak256(data) + data
    answer = x.feed(framed)
    assert answer is None or not answer.ok


@given(st.binary(max_size=64))
def test_base58_round_trip(raw: bytes) -> None:
    from nodereach.p2p import base58

    assert base58.decode(base58.encode(raw)) == raw


@given(st.text(max_size=80))
def test_base58_hostile(text: str) -> None:
    from nodereach.p2p import base58

    with contextlib.suppress(P2PDecodeError):
        base58.decode(text)
