"""Every parser the check applies to outside input: any input parses or raises its one typed error."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nodereach.diagnose.command import parse_port, parse_server
from nodereach.errors import UsageError
from nodereach.reach.http1 import dechunk, parse_http_response


@given(st.text(max_size=40))
def test_parse_port_total(text: str) -> None:
    try:
        specs = parse_port(text)
    except UsageError:
        return
    assert specs and all(1 <= s.port <= 65535 and s.protocol in ("tcp", "udp") for s in specs)


@given(st.text(max_size=60))
def test_parse_server_total(text: str) -> None:
    try:
        spec = parse_server(text)
    except UsageError:
        return
    assert spec.host and 1 <= spec.stun_port <= 65535


@given(st.binary(max_size=300))
def test_http_response_parser_total(data: bytes) -> None:
    try:
        status, doc = parse_http_response(data)
    except ValueError:
        return
    assert 0 <= status <= 999 and isinstance(doc, dict)


def test_http_response_examples() -> None:
    assert parse_http_response(b'HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n{"reachable":true}') == \
        (200, {"reachable": True})
    body = b'{"a": 1}'
    chunked = b"HTTP/1.1 429 Too Many\r\nTransfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(body) + body + \
        b"\r\n0\r\n\r\n"
    assert parse_http_response(chunked) == (429, {"a": 1})
    assert parse_http_response(b"HTTP/1.1 200 OK\r\n\r\n[1,2]") == (200, {})
    assert parse_http_response(b"HTTP/1.1 500 X\r\n\r\n" + b"[" * 100000) == (500, {})


@given(st.binary(max_size=200))
def test_dechunk_total(data: bytes) -> None:
    assert len(dechunk(data)) <= len(data)  # any input: a body never larger than what was received


@given(st.lists(st.binary(min_size=1, max_size=40), max_size=5))
def test_dechunk_round_trip(chunks: list[bytes]) -> None:
    coded = b"".join(b"%x\r\n" % len(c) + c + b"\r\n" for c in chunks) + b"0\r\n\r\n"
    assert dechunk(coded) == b"".join(chunks)
