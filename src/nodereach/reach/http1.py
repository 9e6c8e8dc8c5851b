"""A minimal HTTP/1.1 JSON client for nodereach's own /v1 API: one request per connection, bounded response.

Why not aiohttp: importing it costs more than a whole dial-back probe at LAN RTTs, and the client only ever
talks to a nodereach server (JSON in, JSON out, `Connection: close`). The response parser is pure and total:
any bytes give (status, JSON object) or ValueError.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from nodereach import __version__

MAX_RESPONSE = 64 * 1024
"""Bytes read at most from the server (its answers are a few hundred bytes)."""
USER_AGENT = f"nodereach/{__version__}"


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_http_response(data: bytes) -> tuple[int, dict[str, Any]]:
    """Status and JSON object body of a (bounded) HTTP/1.1 response; a body that is not a JSON object gives {}.
    ValueError when it is not an HTTP response at all."""
    header, sep, rest = data[:MAX_RESPONSE].partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("truncated HTTP response")
    status_line = header.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/") or not status_line[1].isdigit() \
            or len(status_line[1]) != 3:
        raise ValueError("not an HTTP response")
    status = int(status_line[1])
    if b"chunked" in header.lower():
        rest = dechunk(rest)
    try:
        doc = json.loads(rest.decode("utf-8", "replace") or "{}")
    except (ValueError, RecursionError):
        doc = {}
    return status, doc if isinstance(doc, dict) else {}


def content_length(header: bytes) -> int | None:
    for line in header.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return int(value.strip())
    return None


def dechunk(data: bytes) -> bytes:
    """Chunked transfer coding -> body; stops at the last chunk or at the first malformed size."""
    out = b""
    while data:
        size_s, _, data = data.partition(b"\r\n")
        try:
            size = int(size_s.split(b";")[0], 16)
        except ValueError:
            break
        if size <= 0:
            break
        out += data[:size]
        data = data[size + 2:]
    return out


async def request_json(host: str, port: int, method: str, path: str,
                       body_fn: Callable[[float], dict[str, Any]] | None = None, *,
                       local_address: str | None = None) -> tuple[int, dict[str, Any]]:
    """One request, `Connection: close`. `body_fn(handshake_s)` builds the JSON body once the TCP handshake
    took `handshake_s` (dial-back derives the server's probe deadline from it). The caller bounds the time;
    raises OSError or ValueError."""
    start = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port, local_addr=(local_address, 0) if local_address else None)
    try:
        payload = b"" if body_fn is None else json.dumps(body_fn(time.monotonic() - start)).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: {host_port(host, port)}\r\nUser-Agent: {USER_AGENT}\r\n"
        if body_fn is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        writer.write(f"{head}Connection: close\r\n\r\n".encode() + payload)
        data = b""
        while len(data) < MAX_RESPONSE:
            chunk = await reader.read(8192)
            if not chunk:
                break
            data += chunk
            header, sep, rest = data.partition(b"\r\n\r\n")
            if sep and (length := content_length(header)) is not None and len(rest) >= length:
                break
    finally:
        writer.close()
    return parse_http_response(data)
