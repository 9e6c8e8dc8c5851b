"""HTTP/1.1 client for nodereach's own /v1 JSON API and the gateway's UPnP description and SOAP control URL:
one request per connection, bounded, under a deadline.

The framing (status line, headers, Content-Length, chunked and close-delimited bodies, 1xx responses) is
h11's; this module adds what a client facing hostile servers needs: size bounds, one deadline over the whole
exchange, and one family of typed errors. `Exchange` is the sans-IO part (bytes in, a response or an
`HttpError` out); `request` (any body, the raw answer) and `request_json` (nodereach's API) are the thin
asyncio drivers around it.

Why not aiohttp: importing it costs more than a whole dial-back probe at LAN RTTs (~0.3-0.8 s here), and
the check's start-up must stay lean. Even h11 (~10 ms of CPU) is imported only when first needed, or by
`warm_up()` at a moment the event loop would otherwise wait on the network.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nodereach import __version__
from nodereach.net import family_of, is_ip, is_public
from nodereach.routes import source_toward

MAX_HEAD = 16 * 1024
"""Bytes of status lines and headers, interim (1xx) responses included; nodereach sends ~200."""
MAX_BODY = 64 * 1024
"""Bytes of a response body (nodereach's answers are a few hundred bytes)."""
MAX_RESPONSE = MAX_HEAD + MAX_BODY
"""Bytes read at most over the whole exchange, interim (1xx) responses included."""
READ_SIZE = 8192
USER_AGENT = f"nodereach/{__version__}"


class HttpError(Exception):
    """The server's answer is not a usable HTTP/1.1 response; `str()` says why. The only error a hostile
    answer can cause (besides OSError from the connection itself)."""


class MalformedResponse(HttpError):
    """Bytes that are not an HTTP/1.1 response (bad status line, headers, chunk sizes, ...)."""


class ResponseTooLarge(HttpError):
    """More than MAX_HEAD bytes of headers, MAX_BODY of body, or MAX_RESPONSE in all."""


class TruncatedResponse(HttpError):
    """The server closed the connection before the response was complete."""


class ResponseTimeout(HttpError):
    """No complete response before the deadline (connect, send and every read are under it)."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    """At most the exchange's `max_body` bytes."""


@dataclass(frozen=True, slots=True)
class JsonResponse:
    status: int
    doc: dict[str, Any]
    """The body as a JSON object; {} when the body is empty or not a JSON object (an HTTP server that is not
    nodereach's, an error page)."""


def warm_up() -> None:
    """Import h11 now. dial_back schedules this with call_soon, so it runs after the probes started next to
    it have sent their packets and the loop would wait for replies anyway: neither the check's start-up nor
    another probe's first packet pays for the import."""
    import h11  # noqa: F401


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Exchange:
    """One request and its response, without I/O.

    `request(...)` gives the bytes to send; `feed(data)` takes what arrived and returns the response once
    it is complete, else None (`receive(data)` the same with the body as bytes); `feed(b"")` means the server
    closed the connection and never returns None. Raises only HttpError subclasses. `max_body` bounds the
    body (MAX_BODY by default), and the whole exchange to MAX_HEAD more.
    """

    def __init__(self, max_body: int = MAX_BODY) -> None:
        import h11  # cached after the first time (see warm_up)

        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self._max_body = max_body
        self._max_response = MAX_HEAD + max_body
        self._received = 0
        self._status: int | None = None
        self._head = 0
        self._body = bytearray()
        self._done = False

    def request(self, method: str, target: str, host: str, body: bytes | None = None, *,
                content_type: str = "application/json", headers: tuple[tuple[str, str], ...] = ()) -> bytes:
        import h11

        fields = [("Host", host), ("User-Agent", USER_AGENT), ("Connection", "close"), *headers]
        if body is not None:
            fields += [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        out = self._conn.send(h11.Request(method=method, target=target, headers=fields)) or b""
        if body:
            out += self._conn.send(h11.Data(data=body)) or b""
        return out + (self._conn.send(h11.EndOfMessage()) or b"")

    def feed(self, data: bytes) -> JsonResponse | None:
        response = self.receive(data)
        return None if response is None else JsonResponse(response.status, _json_object(response.body))

    def receive(self, data: bytes) -> Response | None:
        if self._done:
            raise MalformedResponse("data after the end of the exchange")
        self._received += len(data)
        if self._received > self._max_response:
            raise ResponseTooLarge(f"the server sent more than {self._max_response} bytes")
        closed = not data
        import h11

        try:
            self._conn.receive_data(data)
            while True:
                event = self._conn.next_event()
                if event is h11.NEED_DATA:
                    if closed:
                        raise TruncatedResponse("the server closed the connection mid-response")
                    return None
                if isinstance(event, h11.InformationalResponse | h11.Response):
                    # h11 bounds only an incomplete head; one that arrived whole is counted here
                    self._head += 16 + len(event.reason) + sum(len(k) + len(v) + 4 for k, v in event.headers)
                    if self._head > MAX_HEAD:
                        raise ResponseTooLarge(f"response head over {MAX_HEAD} bytes")
                    if isinstance(event, h11.Response):
                        self._status = event.status_code
                elif isinstance(event, h11.Data):
                    self._body += event.data
                    if len(self._body) > self._max_body:
                        raise ResponseTooLarge(f"response body over {self._max_body} bytes")
                elif isinstance(event, h11.EndOfMessage):
                    assert self._status is not None  # h11 gives EndOfMessage only after a Response
                    self._done = True
                    return Response(self._status, bytes(self._body))
                elif isinstance(event, h11.ConnectionClosed):
                    raise TruncatedResponse("the server closed the connection before answering")
                elif event is h11.PAUSED:
                    raise MalformedResponse("the server switched protocols unasked")
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:
                raise ResponseTooLarge(f"response head over {MAX_HEAD} bytes") from None
            if closed:
                raise TruncatedResponse(f"the server closed the connection mid-response ({exc})") from None
            raise MalformedResponse(f"not an HTTP/1.1 response ({str(exc)[:120]})") from None


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body.decode("utf-8", "replace") or "{}")
    except (ValueError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) else {}


def parse_response(data: bytes, method: str = "GET") -> JsonResponse:
    """A complete response as one byte string, followed by the connection's close (tests, tools)."""
    exchange = Exchange()
    exchange.request(method, "/", "localhost")
    if data:
        response = exchange.feed(data)
        if response is not None:
            return response
    response = exchange.feed(b"")
    assert response is not None  # feed(b"") returns or raises
    return response


def _stable_source(host: str) -> str | None:
    """Toward a global IPv6 address: this host's stable source (net.prefer_stable_source), so that a dial-back
    server dials the address peers are given, not a temporary one. None (the kernel's choice) otherwise."""
    if not is_ip(host) or family_of(host) != 6 or not is_public(host):
        return None
    return source_toward(host)[0]


async def request(host: str, port: int, method: str, path: str,
                  body_fn: Callable[[float], bytes] | None = None, *, timeout: float,  # noqa: ASYNC109
                  content_type: str = "application/json", headers: tuple[tuple[str, str], ...] = (),
                  max_body: int = MAX_BODY, local_address: str | None = None) -> Response:
    """One request, `Connection: close`, everything within `timeout` seconds; the answer's body as bytes.
    `body_fn(handshake_s)` builds the body once the TCP handshake took `handshake_s`. Raises OSError (cannot
    connect) or HttpError (ResponseTimeout at the deadline)."""
    start = time.monotonic()
    if local_address is None:
        local_address = _stable_source(host)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, local_addr=(local_address, 0) if local_address else None)
            try:
                exchange = Exchange(max_body)
                body = None if body_fn is None else body_fn(time.monotonic() - start)
                writer.write(exchange.request(method, path, host_port(host, port), body, content_type=content_type,
                                              headers=headers))
                while True:
                    response = exchange.receive(await reader.read(READ_SIZE))
                    if response is not None:
                        return response
            finally:
                writer.close()
    except TimeoutError:
        raise ResponseTimeout(f"no complete answer within {timeout:.1f} s") from None


async def request_json(host: str, port: int, method: str, path: str,
                       body_fn: Callable[[float], dict[str, Any]] | None = None, *, timeout: float,  # noqa: ASYNC109
                       local_address: str | None = None) -> JsonResponse:
    """`request` with a JSON body and answer: `body_fn(handshake_s)` builds the JSON body once the TCP handshake
    took `handshake_s` (dial-back derives the server's probe deadline from it); the answer's body as a JSON
    object ({} when it is not one)."""
    encode = None if body_fn is None else (lambda handshake_s: json.dumps(body_fn(handshake_s)).encode())
    response = await request(host, port, method, path, encode, timeout=timeout, local_address=local_address)
    return JsonResponse(response.status, _json_object(response.body))
