"""The dial-back client's HTTP/1.1 (h11 + bounds): any server answer gives a response or one typed HttpError,
byte for byte without I/O, and on loopback within the deadline (hostile servers never hang the client)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodereach.reach.http1 import (
    MAX_BODY,
    MAX_HEAD,
    MAX_RESPONSE,
    Exchange,
    HttpError,
    JsonResponse,
    MalformedResponse,
    Response,
    ResponseTimeout,
    ResponseTooLarge,
    TruncatedResponse,
    parse_response,
    request_json,
)
from reach_helpers import Handler, tcp_server


def feed_in_pieces(data: bytes, cuts: list[int]) -> JsonResponse:
    """Feed `data` cut at `cuts`, then the close: the response, or the typed error."""
    exchange = Exchange()
    exchange.request("POST", "/v1/probe", "203.0.113.10:3480", b"{}")
    start = 0
    for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        if cut > start:
            response = exchange.feed(data[start:cut])
            if response is not None:
                return response
            start = cut
    response = exchange.feed(b"")
    assert response is not None, "feed(b'') must end the exchange"
    return response


# --- sans-IO: byte for byte -------------------------------------------------------------------------------


def test_request_bytes() -> None:
    exchange = Exchange()
    out = exchange.request("POST", "/v1/probe", "[2001:db8::1]:3480", b'{"port": 1}')
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/probe HTTP/1.1" and body == b'{"port": 1}'
    headers = {k.lower(): v for k, _, v in (line.partition(b": ") for line in lines[1:])}
    assert headers[b"host"] == b"[2001:db8::1]:3480" and headers[b"connection"] == b"close"
    assert headers[b"content-length"] == b"11" and headers[b"content-type"] == b"application/json"
    assert headers[b"user-agent"].startswith(b"nodereach/")


def test_raw_request_and_answer() -> None:
    """Any body and headers (the gateway's SOAP), the answer's body as bytes, bounded by the exchange's max_body."""
    exchange = Exchange(max_body=16)
    out = exchange.request("POST", "/ctl/IPConn", "192.168.1.1:5000", b"<x/>", content_type='text/xml; charset="utf-8"',
                           headers=(("SOAPAction", '"urn:x#GetExternalIPAddress"'),))
    assert b'\r\nSOAPAction: "urn:x#GetExternalIPAddress"\r\n' in out
    assert b'\r\nContent-Type: text/xml; charset="utf-8"\r\n' in out and out.endswith(b"\r\n\r\n<x/>")
    assert exchange.receive(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n<a/>") == Response(200, b"<a/>")
    with pytest.raises(ResponseTooLarge):
        small = Exchange(max_body=16)
        small.request("GET", "/", "x")
        small.receive(b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n" + b"a" * 17)


@pytest.mark.parametrize("data, expected", [
    (b'HTTP/1.1 200 OK\r\nContent-Length: 18\r\n\r\n{"reachable":true}', (200, {"reachable": True})),
    # A header that merely contains the word is not chunked framing (the old parser dechunked this body).
    (b'HTTP/1.1 200 OK\r\nX-Note: not chunked\r\nContent-Length: 8\r\n\r\n{"a": 1}', (200, {"a": 1})),
    (b'HTTP/1.1 429 Too Many\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{"a\r\n5\r\n": 1}\r\n0\r\n\r\n',
     (429, {"a": 1})),
    (b'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}', (200, {})),
    (b'HTTP/1.0 200 OK\r\n\r\n{"close": "delimited"}', (200, {"close": "delimited"})),
    (b"HTTP/1.1 200 OK\r\n\r\n[1,2]", (200, {})),  # JSON, but not an object
    (b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found", (404, {})),
    (b"HTTP/1.1 500 X\r\n\r\n" + b"[" * 5000, (500, {})),  # nesting past the JSON parser's recursion limit
])
def test_responses(data: bytes, expected: tuple[int, dict[str, object]]) -> None:
    r = parse_response(data)
    assert (r.status, r.doc) == expected


@pytest.mark.parametrize("data, error", [
    (b"", TruncatedResponse),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", TruncatedResponse),
    (b"HTTP/1.1 200 OK\r\nContent-Le", TruncatedResponse),
    (b"SSH-2.0-OpenSSH_9.2\r\n", TruncatedResponse),  # never a complete head
    (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", MalformedResponse),
    (b"HTTP/1.1 2000 OK\r\n\r\n", MalformedResponse),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", MalformedResponse),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", MalformedResponse),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", MalformedResponse),
    (b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n", ResponseTooLarge),
    (b"HTTP/1.1 200 OK\r\n\r\n" + b" " * (MAX_BODY + 1), ResponseTooLarge),
    (b"HTTP/1.1 100 Continue\r\n\r\n" * (MAX_RESPONSE // 25), ResponseTooLarge),
])
def test_hostile_responses(data: bytes, error: type[HttpError]) -> None:
    with pytest.raises(error):
        parse_response(data)


def test_feeding_after_the_end_is_an_error() -> None:
    exchange = Exchange()
    exchange.request("GET", "/v1/info", "x")
    assert exchange.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}") == JsonResponse(200, {})
    with pytest.raises(MalformedResponse):
        exchange.feed(b"HTTP/1.1 200 OK\r\n\r\n")


@settings(deadline=None)  # CPU-bound and bounded in count; other helpers share the 2 cores
@given(st.binary(max_size=400), st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_any_bytes_give_a_response_or_the_typed_error(data: bytes, cuts: list[int]) -> None:
    try:
        r = feed_in_pieces(data, cuts)
    except HttpError:
        return
    assert 100 <= r.status <= 999 and isinstance(r.doc, dict)


HEADER_NAME = st.from_regex(rb"\A[A-Za-z][A-Za-z0-9-]{0,15}\Z").filter(
    lambda n: n.lower() not in (b"content-length", b"transfer-encoding", b"connection"))
HEADER_VALUE = st.from_regex(rb"\A[ -~]{0,40}\Z").map(bytes.strip)
JSON_DOC = st.dictionaries(st.text(max_size=8), st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           max_size=5)


@settings(deadline=None)
# 204 and 304 never carry a body (RFC 9110 6.4.1): a body after one is not part of that response
@given(status=st.integers(min_value=200, max_value=599).filter(lambda s: s not in (204, 304)),
       headers=st.lists(st.tuples(HEADER_NAME, HEADER_VALUE | st.just(b"chunked")), max_size=5),
       doc=JSON_DOC, framing=st.sampled_from(["length", "chunked", "close"]),
       chunk_sizes=st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=5),
       cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=8))
def test_well_formed_responses_parse_exactly(status: int, headers: list[tuple[bytes, bytes]],
                                             doc: dict[str, object], framing: str, chunk_sizes: list[int],
                                             cuts: list[int]) -> None:
    """Any framing, extra headers (some with the word 'chunked' as a value), any TCP segmentation: the body."""
    body = json.dumps(doc).encode()
    head = b"HTTP/1.1 %d Whatever\r\n" % status + b"".join(n + b": " + v + b"\r\n" for n, v in headers)
    if framing == "length":
        data = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    elif framing == "chunked":
        pieces, rest, i = [], body, 0
        while rest:
            size = chunk_sizes[i % len(chunk_sizes)]
            pieces.append(b"%x\r\n" % len(rest[:size]) + rest[:size] + b"\r\n")
            rest, i = rest[size:], i + 1
        data = head + b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(pieces) + b"0\r\n\r\n"
    else:
        data = head + b"Connection: close\r\n\r\n" + body
    r = feed_in_pieces(data, cuts)
    assert (r.status, r.doc) == (status, doc)


# --- the asyncio driver on loopback: hostile servers ----------------------------------------------------------


async def test_round_trip_with_body_built_after_the_handshake() -> None:
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        seen.append(await reader.readexactly(int(seen[0].lower().split(b"content-length: ")[1].split(b"\r")[0])))
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{"ok": true}')
        await writer.drain()

    handshakes: list[float] = []

    def body(handshake_s: float) -> dict[str, object]:
        handshakes.append(handshake_s)
        return {"port": 30303}

    async with tcp_server(answer) as port:
        r = await request_json("127.0.0.1", port, "POST", "/v1/probe", body, timeout=2)
    assert r == JsonResponse(200, {"ok": True})
    assert json.loads(seen[1]) == {"port": 30303} and len(handshakes) == 1 and 0 <= handshakes[0] < 1


async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A valid response, one byte every 20 ms, never finishing (bounded: 500 bytes)."""
    await reader.read(1000)
    for b in b"HTTP/1.1 200 OK\r\nX: " + b"a" * 480:
        writer.write(bytes([b]))
        await writer.drain()
        await asyncio.sleep(0.02)


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)


async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1000)
    writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
    for _ in range(400):  # bounded: 400 x 8 KiB, far past MAX_BODY
        writer.write(b"{" * 8192)
        await writer.drain()


async def early_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1000)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")
    await writer.drain()


@pytest.mark.parametrize("handler, error, bound", [
    (drip, ResponseTimeout, 0.8),
    (silent, ResponseTimeout, 0.8),
    (endless, ResponseTooLarge, 0.6),  # stops at the bound, long before the deadline
    (early_close, TruncatedResponse, 0.6),
])
async def test_hostile_servers_end_in_the_typed_error_within_the_deadline(
        handler: Handler, error: type[HttpError], bound: float) -> None:
    async with tcp_server(handler) as port:
        start = time.monotonic()
        with pytest.raises(error):
            await request_json("127.0.0.1", port, "GET", "/v1/info", timeout=0.5)
        assert time.monotonic() - start < bound


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answer=st.binary(max_size=300) | st.sampled_from([b"HTTP/1.1 200 OK\r\n\r\n{}", b"HTTP/1.1 204 No\r\n\r\n"]),
       close=st.booleans())
async def test_any_server_answer_gives_a_response_or_the_typed_error(answer: bytes, close: bool) -> None:
    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1000)
        writer.write(answer)
        await writer.drain()
        if not close:
            await asyncio.sleep(5)

    async with tcp_server(reply) as port:
        start = time.monotonic()
        try:
            r = await request_json("127.0.0.1", port, "GET", "/v1/info", timeout=0.3)
        except HttpError:
            pass
        else:
            assert 100 <= r.status <= 999 and isinstance(r.doc, dict)
        assert time.monotonic() - start < 1.0
