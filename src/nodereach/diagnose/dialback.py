"""Inbound reachability of the node's ports through the dial-back service (`POST /v1/probe`, docs/dialback).

A lean client for the check: a raw HTTP/1.1 request over asyncio streams (importing aiohttp costs more than
the whole probe at LAN RTTs) and the reach package's token codec. As in nodereach.reach.client: when the
port is free, nodereach listens there for the duration and echoes the server's token (proof that the probe
reached this host); when the node holds the port, TCP is judged by the server's handshake and UDP is
unobservable. Never raises: failures are `reachable=None` with a reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from nodereach.diagnose.model import PortResult
from nodereach.reach import codec

MAX_RESPONSE = 64 * 1024


class _Listener:
    def __init__(self, protocol: str, port: int) -> None:
        self.protocol = protocol
        self.port = port
        self.token = secrets.token_bytes(16)
        self.received = False
        self.connections = 0
        """TCP connections accepted during the test: the server's probe got through even if the token was lost."""
        self._closer: Any = None

    async def open(self) -> bool:
        """False when the port is taken (the node's own listener holds it)."""
        loop = asyncio.get_running_loop()
        try:
            if self.protocol == "tcp":
                self._closer = await asyncio.start_server(self._tcp, host="0.0.0.0", port=self.port,
                                                          reuse_address=True, backlog=16)
            else:
                transport, _ = await loop.create_datagram_endpoint(lambda: _UdpEcho(self),
                                                                   local_addr=("0.0.0.0", self.port))
                self._closer = transport
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
        return True

    async def _tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        decoder = codec.StreamDecoder()
        try:
            async with asyncio.timeout(2.0):
                while True:
                    data = await reader.read(codec.MAX_MESSAGE)
                    if not data:
                        return
                    for m in decoder.feed(data):
                        if m.kind == codec.Kind.PROBE and m.token == self.token:
                            self.received = True
                            writer.write(codec.echo(m.token))
                            await writer.drain()
                        return
        except (TimeoutError, OSError, codec.DialbackCodecError):
            return
        finally:
            writer.close()

    async def close(self) -> None:
        """Close and wait until the port is free again (a retry may bind it right away)."""
        closer, self._closer = self._closer, None
        if closer is None:
            return
        closer.close()
        if isinstance(closer, asyncio.AbstractServer):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await closer.wait_closed()
        else:
            for _ in range(3):  # the transport closes its socket on a later loop iteration
                await asyncio.sleep(0)


class _UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, owner: _Listener) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            m = codec.decode(data)
        except codec.DialbackCodecError:
            return
        if m.kind == codec.Kind.PROBE and m.token == self.owner.token and self.transport is not None:
            self.owner.received = True
            self.transport.sendto(codec.echo(m.token), addr)


async def _post_json(host: str, port: int, path: str,
                     body_fn: Callable[[float], dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    """A minimal HTTP/1.1 POST with `Connection: close`; bounded response size. Raises OSError/ValueError.
    The body is built after the handshake, from its duration (the probe deadline derives from it)."""
    start = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port)
    payload = json.dumps(body_fn(time.monotonic() - start)).encode()
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    head = (f"POST {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\nUser-Agent: nodereach-check\r\n\r\n").encode()
    try:
        writer.write(head + payload)
        data = b""
        while len(data) < MAX_RESPONSE:
            chunk = await reader.read(8192)
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data:
                header, _, rest = data.partition(b"\r\n\r\n")
                length = _content_length(header)
                if length is not None and len(rest) >= length:
                    break
    finally:
        writer.close()
    return parse_http_response(data)


def parse_http_response(data: bytes) -> tuple[int, dict[str, Any]]:
    """Status and JSON object body of a (bounded) HTTP/1.1 response; ValueError for anything else."""
    header, sep, rest = data[:MAX_RESPONSE].partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("truncated HTTP response")
    status_line = header.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/") or not status_line[1].isdigit() \
            or len(status_line[1]) != 3:
        raise ValueError("not an HTTP response")
    status = int(status_line[1])
    if b"chunked" in header.lower():
        rest = _dechunk(rest)
    try:
        doc = json.loads(rest.decode("utf-8", "replace") or "{}")
    except (ValueError, RecursionError):
        doc = {}
    return status, doc if isinstance(doc, dict) else {}


def _content_length(header: bytes) -> int | None:
    for line in header.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return int(value.strip())
    return None


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_s, _, data = data.partition(b"\r\n")
        try:
            size = int(size_s.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2:]
    return out


async def probe(host: str, http_port: int, port: int, protocol: str, *,
                server_wait: Callable[[float], float], http_timeout: float, copies: int = 1) -> PortResult:
    """Ask the dial-back service at host:http_port to reach our `port`/`protocol` from outside.
    `server_wait(handshake_s)` gives the server's probe deadline once the HTTP handshake time is known."""
    result = PortResult(port=port, protocol=protocol, reachable=None, reason="no-server")  # type: ignore[arg-type]
    listener: _Listener | None = _Listener(protocol, port)
    try:
        assert listener is not None
        result.listener = "nodereach" if await listener.open() else "node"
    except OSError:
        result.reason = "local-error"
        return result
    if result.listener == "node":
        listener = None
    token = listener.token.hex() if listener is not None else None

    def body(handshake_s: float) -> dict[str, Any]:
        doc: dict[str, Any] = {"port": port, "protocol": protocol,
                               "timeout_ms": max(200, int(server_wait(handshake_s) * 1000))}
        if token:
            doc["token"] = token
        return doc

    async def ask() -> tuple[int, dict[str, Any]] | None:
        try:
            async with asyncio.timeout(http_timeout):
                return await _post_json(host, http_port, "/v1/probe", body)
        except (TimeoutError, OSError, ValueError):
            return None

    try:
        # Several independent probes of one listener: each is one SYN (or datagram series) from the server, so
        # a lost packet does not turn "reachable" into "not reachable" without costing a longer deadline.
        answers = [a for a in await asyncio.gather(*(ask() for _ in range(max(1, copies)))) if a is not None]
    finally:
        if listener is not None:
            await listener.close()
    if not answers:
        result.reason = "no-server"
        return result
    ok = [a for a in answers if a[0] == 200]

    def rank(answer: tuple[int, dict[str, Any]]) -> int:
        d = answer[1]
        return 2 if d.get("verified") is True else 1 if d.get("reachable") is True else 0

    status, doc = max(ok, key=rank) if ok else answers[0]
    if status != 200:
        code = str(doc.get("error", ""))
        result.reason = {429: "rate-limited", 503: "server-busy"}.get(status, "server-error")
        if status == 403 and code == "refused-port":
            result.reason = "refused-port"
        if status == 404:
            result.reason = "no-server"
        return result
    rtt = doc.get("rtt_ms")
    result.rtt_ms = float(rtt) if isinstance(rtt, int | float) else None
    server_says = doc.get("reachable")
    reason = str(doc.get("reason", "server-error"))[:40]
    if listener is not None:
        if doc.get("verified") is True or listener.received:
            result.reachable, result.reason = True, "ok"
        elif server_says is True and listener.connections:
            result.reachable, result.reason = True, "ok"  # our listener accepted it; only the token got lost
        elif server_says is True:
            result.reachable, result.reason = False, "other-host"
        else:
            result.reachable = False
            result.reason = "no-mapping-or-filtered" if reason in ("timeout", "no-echo", "unverified") else reason
        return result
    if protocol == "tcp":
        result.reachable = server_says if isinstance(server_says, bool) else None
        result.reason = "ok" if server_says is True else reason
    elif server_says is False:
        result.reachable, result.reason = False, reason
    else:
        result.reason = "udp-unobservable"
    return result

