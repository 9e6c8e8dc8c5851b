"""Property tests: generated messages round-trip; random and mutated bytes only ever raise StunParseError."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from nodereach.stun import attributes as A
from nodereach.stun.errors import StunParseError
from nodereach.stun.framing import StreamDecoder
from nodereach.stun.message import ERROR, REQUEST, SUCCESS, StunMessage, encode_message, parse_message

ipv4 = st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)).map(
    lambda t: ".".join(map(str, t)))
ipv6 = st.binary(min_size=16, max_size=16).map(lambda b: ipaddress.IPv6Address(b).compressed)
address = st.tuples(st.one_of(ipv4, ipv6), st.integers(0, 65535))


@st.composite
def messages(draw: st.DrawFn) -> tuple[StunMessage, dict]:
    legacy = draw(st.booleans())
    tid = draw(st.binary(min_size=16 if legacy else 12, max_size=16 if legacy else 12))
    if not legacy and tid[:4] == A.MAGIC_COOKIE_BYTES:
        tid = b"\x00" + tid[1:]
    if legacy and tid[:4] == A.MAGIC_COOKIE_BYTES:
        tid = b"\x00" + tid[1:]
    msg = StunMessage(draw(st.integers(0, 0xFFF)), draw(st.sampled_from([REQUEST, 0x010, SUCCESS, ERROR])), tid)
    expect: dict = {}
    for kind in draw(st.lists(st.sampled_from(["map", "xor", "other", "origin", "err", "sw", "cr", "rp", "pad",
                                               "opt"]), max_size=8, unique=True)):
        if kind == "map":
            expect["map"] = draw(address)
            msg.add(A.MAPPED_ADDRESS, A.encode_address(expect["map"]))
        elif kind == "xor" and not legacy:
            expect["xor"] = draw(address)
            msg.add(A.XOR_MAPPED_ADDRESS, A.encode_xor_address(expect["xor"], msg.key))
        elif kind == "other":
            expect["other"] = draw(address)
            msg.add(A.OTHER_ADDRESS, A.encode_address(expect["other"]))
        elif kind == "origin":
            expect["origin"] = draw(address)
            msg.add(A.RESPONSE_ORIGIN, A.encode_address(expect["origin"]))
        elif kind == "err":
            expect["err"] = (draw(st.integers(300, 699)), draw(st.text(max_size=40)))
            msg.add(A.ERROR_CODE, A.encode_error_code(*expect["err"]))
        elif kind == "sw":
            expect["sw"] = draw(st.text(max_size=100))
            msg.add(A.SOFTWARE, expect["sw"].encode())
        elif kind == "cr":
            expect["cr"] = (draw(st.booleans()), draw(st.booleans()))
            msg.add(A.CHANGE_REQUEST, A.encode_change_request(*expect["cr"]))
        elif kind == "rp":
            expect["rp"] = draw(st.integers(0, 65535))
            msg.add(A.RESPONSE_PORT, A.encode_response_port(expect["rp"]))
        elif kind == "pad":
            msg.add(A.PADDING, bytes(draw(st.integers(0, 64))))
        elif kind == "opt":
            expect["opt"] = draw(st.binary(max_size=30))
            msg.add(0xC0DE, expect["opt"])
    return msg, expect


@settings(max_examples=300, deadline=None)
@given(messages(), st.booleans(), st.booleans(), st.binary(max_size=8))
def test_round_trip(case: tuple[StunMessage, dict], integrity: bool, fingerprint: bool, key: bytes) -> None:
    msg, expect = case
    data = encode_message(msg, integrity_key=key if integrity else None, fingerprint=fingerprint)
    parsed = parse_message(data)
    assert (parsed.method, parsed.cls, parsed.transaction_id) == (msg.method, msg.cls, msg.transaction_id)
    assert parsed.attributes[: len(msg.attributes)] == msg.attributes
    assert encode_message(parsed, integrity_key=key if integrity else None, fingerprint=fingerprint) == data
    if "xor" in expect:
        assert parsed.mapped_address == expect["xor"]
    elif "map" in expect:
        assert parsed.mapped_address == expect["map"]
    if "other" in expect:
        assert parsed.other_address == expect["other"]
    if "origin" in expect:
        assert parsed.response_origin == expect["origin"]
    if "err" in expect:
        assert parsed.error_code == (expect["err"][0], expect["err"][1].encode().decode())
    if "sw" in expect:
        assert parsed.software == expect["sw"]
    if "cr" in expect:
        assert parsed.change_request == expect["cr"]
    if "rp" in expect:
        assert parsed.response_port == expect["rp"]
    if "opt" in expect:
        assert parsed.get(0xC0DE) == expect["opt"]
    assert parsed.check_integrity(key) is (True if integrity else None)
    assert parsed.check_fingerprint() is (True if fingerprint else None)


def _parse_all_views(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except StunParseError:
        return
    # every typed view must work on anything the parser accepted
    _ = (msg.mapped_address, msg.other_address, msg.response_origin, msg.alternate_server, msg.error_code,
         msg.unknown_attributes, msg.software, msg.username, msg.change_request, msg.response_port,
         msg.check_fingerprint(), msg.check_integrity(b"k"), msg.check_integrity_sha256(b"k"), msg.legacy)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    _parse_all_views(data)


@settings(max_examples=500, deadline=None)
@given(messages(), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, 300))
def test_mutated_messages(case: tuple[StunMessage, dict], flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(encode_message(case[0], integrity_key=b"k", fingerprint=True))
    for pos, val in flips:
        data[pos % len(data)] = val
    _parse_all_views(bytes(data))
    _parse_all_views(bytes(data[: max(0, len(data) - cut)]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=10))
def test_stream_decoder_hostile(chunks: list[bytes]) -> None:
    dec = StreamDecoder(max_message=1024)
    try:
        for c in chunks:
            for frame in dec.feed(c):
                assert len(frame) <= 1024
                _parse_all_views(frame)
    except StunParseError:
        pass
    assert dec.pending < 1024 + 64


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=120), messages().map(lambda c: encode_message(c[0], fingerprint=True))))
def test_server_decision_never_raises(data: bytes) -> None:
    """The server's request logic on any bytes: a reply or None, and replies never exceed the request by
    more than the documented amplification (<= 56 bytes of reply to a 20-byte request, IPv6 included)."""
    from nodereach.stun.server import StunServer, StunServerConfig

    server = StunServer(StunServerConfig("127.0.0.1", "127.0.0.2", port=0, alt_port=0))
    server.addresses = {"primary": ("127.0.0.1", 3478), "alt_port": ("127.0.0.1", 3479),
                        "alt_ip": ("127.0.0.2", 3478), "alt_both": ("127.0.0.2", 3479)}
    for source in (("198.51.100.7", 4000), ("2001:db8::7", 4000)):
        for tcp in (False, True):
            decision = server.respond(data, source, (0, 0), tcp=tcp)
            if decision is not None:
                reply, _idx, dest = decision
                assert parse_message(reply).transaction_id == parse_message(data).transaction_id
                assert len(reply) <= max(len(data), 20) + 80
                assert dest[0] == source[0]


def _answer(cls: int, fingerprint: bool) -> bytes:
    msg = StunMessage(0x001, cls, bytes(12))
    msg.add(A.XOR_MAPPED_ADDRESS, A.encode_xor_address(("198.51.100.1", 9), msg.key))
    return encode_message(msg, fingerprint=fingerprint)


_ANSWERS = [_answer(SUCCESS, False), _answer(SUCCESS, True), _answer(ERROR, False), _answer(REQUEST, False)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.binary(max_size=80), st.sampled_from(_ANSWERS)), st.booleans(),
                          st.sampled_from([("127.0.0.1", 1),
                                           ("127.0.0.2", 2)])), max_size=6))
def test_client_ignores_hostile_datagrams(datagrams: list[tuple[bytes, bool, tuple[str, int]]]) -> None:
    """Datagrams while a transaction waits (some carrying its id): each is counted as stray or malformed,
    or completes the transaction with a reply that passed its rules; nothing raises."""
    import asyncio

    from nodereach.stun.client import StunClient, _Pending
    from nodereach.stun.message import binding_request
    from nodereach.stun.transaction import BindingReply, BindingTransaction, Rfc8489Retransmit

    server = ("127.0.0.1", 1)
    c = StunClient()
    loop = asyncio.new_event_loop()
    try:
        data = encode_message(binding_request())
        txn = BindingTransaction(data, server, timer=Rfc8489Retransmit().timer(), accept=frozenset({server}))
        txn.start(c.clock())
        future: asyncio.Future[BindingReply] = loop.create_future()
        c._pending[txn.key] = _Pending(txn, future)
        for d, ours, source in datagrams:
            if ours and len(d) >= 20:
                d = d[:4] + txn.key + d[20:]
            c._on_datagram(d, source)
        assert c.stats.stray + c.stats.malformed + future.done() == len(datagrams)
        if future.done():
            reply = future.result()
            assert reply.source == server and reply.message.key == txn.key
    finally:
        loop.close()
