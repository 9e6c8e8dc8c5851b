"""Dial-back token codec: byte-exact vectors and hostile-input properties (hypothesis)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodereach.errors import UsageError
from nodereach.reach import codec
from nodereach.reach.client import parse_server
from nodereach.reach.codec import DialbackCodecError, Kind, Message, StreamDecoder
from nodereach.reach.limits import client_address, parse_networks
from nodereach.reach.service import ApiError, _parse_probe

TOKEN = bytes(range(16))


def test_probe_bytes_exact() -> None:
    assert codec.probe(TOKEN) == b"NRDB\x01\x01\x10" + TOKEN
    assert codec.echo(TOKEN) == b"NRDB\x01\x02\x10" + TOKEN
    assert len(codec.probe(b"x" * codec.MAX_TOKEN)) == codec.MAX_MESSAGE == 39


def test_decode_round_trip() -> None:
    assert codec.decode(codec.probe(TOKEN)) == Message(Kind.PROBE, TOKEN)
    assert codec.decode(codec.echo(TOKEN)) == Message(Kind.ECHO, TOKEN)


@pytest.mark.parametrize("data, why", [
    (b"", "truncated"),
    (b"NRDB\x01\x01", "truncated"),
    (b"XRDB\x01\x01\x10" + TOKEN, "magic"),
    (b"NRDB\x02\x01\x10" + TOKEN, "version"),
    (b"NRDB\x01\x07\x10" + TOKEN, "kind"),
    (b"NRDB\x01\x01\x07" + TOKEN[:7], "token length"),
    (b"NRDB\x01\x01\x21" + b"x" * 33, "longer"),
    (b"NRDB\x01\x01\x10" + TOKEN + b"!", "does not match"),
    (b"NRDB\x01\x01\x10" + TOKEN[:15], "does not match"),
])
def test_decode_rejects(data: bytes, why: str) -> None:
    with pytest.raises(DialbackCodecError, match=why):
        codec.decode(data)


def test_message_validates_token() -> None:
    with pytest.raises(DialbackCodecError):
        Message(Kind.PROBE, b"short")


@given(st.binary(max_size=100))
def test_decode_any_bytes_one_error_type(data: bytes) -> None:
    try:
        m = codec.decode(data)
    except DialbackCodecError:
        return
    assert codec.encode(m) == data


@given(st.sampled_from(list(Kind)), st.binary(min_size=8, max_size=32))
def test_round_trip_property(kind: Kind, token: bytes) -> None:
    msg = Message(kind, token)
    assert codec.decode(codec.encode(msg)) == msg


@given(st.lists(st.tuples(st.sampled_from(list(Kind)), st.binary(min_size=8, max_size=32)), max_size=5),
       st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=20))
def test_stream_decoder_any_chunking(messages: list[tuple[Kind, bytes]], cuts: list[int]) -> None:
    wire = b"".join(codec.encode(Message(k, t)) for k, t in messages)
    dec = StreamDecoder()
    got: list[Message] = []
    pos = 0
    i = 0
    while pos < len(wire):
        n = cuts[i % len(cuts)]
        got += dec.feed(wire[pos:pos + n])
        assert dec.buffered <= codec.MAX_MESSAGE
        pos += n
        i += 1
    assert got == [Message(k, t) for k, t in messages]
    assert dec.buffered == 0


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=64))
def test_stream_decoder_garbage_bounded(data: bytes, chunk: int) -> None:
    dec = StreamDecoder()
    try:
        for i in range(0, len(data), chunk):
            for m in dec.feed(data[i:i + chunk]):
                assert codec.MIN_TOKEN <= len(m.token) <= codec.MAX_TOKEN
            assert dec.buffered <= codec.MAX_MESSAGE
    except DialbackCodecError:
        with pytest.raises(DialbackCodecError):
            dec.feed(b"NRDB")  # a failed stream stays failed


def test_stream_decoder_rejects_bad_header_early() -> None:
    dec = StreamDecoder()
    with pytest.raises(DialbackCodecError, match="magic"):
        dec.feed(b"GET / HTTP/1.1\r\n")


# --- the other parsers of network/user input: each has exactly one error type -------------------------
@given(st.one_of(st.binary(max_size=300),
                 st.dictionaries(st.text(max_size=12), st.one_of(st.integers(), st.text(max_size=70), st.none(),
                                                                 st.lists(st.integers(), max_size=3)),
                                 max_size=6).map(lambda d: json.dumps(d).encode()),
                 st.fixed_dictionaries({"port": st.integers(-5, 70000),
                                        "protocol": st.sampled_from(["tcp", "udp", "x"])},
                                       optional={"token": st.text("0123456789abcdefg", max_size=70),
                                                 "timeout_ms": st.integers(-1, 100_000),
                                                 "pad": st.text(max_size=20),
                                                 "proof": st.fixed_dictionaries(
                                                     {"protocol": st.sampled_from(
                                                         ["bitcoin", "monero", "libp2p", "bittorrent", "discv4",
                                                          "discv5", "x"])},
                                                     optional={k: st.text("0123456789abcdefxyz:", max_size=70)
                                                               for k in ("network", "magic", "infohash",
                                                                         "node_id", "enr")})})
                 .map(lambda d: json.dumps(d).encode())))
@settings(deadline=None)
def test_probe_body_parser_one_error(body: bytes) -> None:
    try:
        req, _spec = _parse_probe(body)
    except ApiError as err:
        assert err.status in (400, 403)
        return
    assert 1 <= req.port <= 65535 and req.protocol in ("tcp", "udp")


@given(st.text(max_size=200))
def test_forwarded_for_parser_one_error(header: str) -> None:
    try:
        addr = client_address("10.0.0.1", header, parse_networks(["10.0.0.0/8"]))
    except ValueError:
        return
    assert addr.version in (4, 6)


@given(st.text(max_size=80))
def test_server_address_parser_one_error(text: str) -> None:
    try:
        host, port = parse_server(text)
    except UsageError:
        return
    assert host and 1 <= port <= 65535
