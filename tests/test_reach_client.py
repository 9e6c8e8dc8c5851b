"""Dial-back client: server address forms, bad servers (never a traceback or hang), result merging, the
lean path (no aiohttp), parallel copies and the port being free again right after a probe."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import pytest

from nodereach.errors import UsageError
from nodereach.reach import client
from nodereach.reach.client import DialBackResult, _combine, dial_back, parse_server, probe_port, server_info
from nodereach.reach.limits import LimitsConfig
from nodereach.reach.listener import EchoListener
from nodereach.reach.service import DialbackConfig, DialbackService
from reach_helpers import free_port


@pytest.mark.parametrize("text, expected", [
    ("203.0.113.10", ("203.0.113.10", 3480)),
    ("203.0.113.10:8080", ("203.0.113.10", 8080)),
    ("reach.example.net", ("reach.example.net", 3480)),
    ("http://reach.example.net:81/", ("reach.example.net", 81)),
    ("2001:db8::1", ("2001:db8::1", 3480)),
    ("[2001:db8::1]:3999", ("2001:db8::1", 3999)),
    ("[2001:db8::1]", ("2001:db8::1", 3480)),
])
def test_parse_server(text: str, expected: tuple[str, int]) -> None:
    assert parse_server(text) == expected


@pytest.mark.parametrize("text", ["", ":3480", "host:abc", "host:0", "host:70000", "[2001:db8::1", "[::1]x"])
def test_parse_server_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_server(text)


async def test_bad_arguments_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        await probe_port("127.0.0.1", 30303, "sctp", timeout=1)
    with pytest.raises(UsageError):
        await probe_port("127.0.0.1", 0, "tcp", timeout=1)


async def test_no_server_listening() -> None:
    start = time.monotonic()
    r = await probe_port(f"127.0.0.1:{free_port()}", free_port(), "tcp", timeout=2)
    assert (r.reachable, r.reason) == (None, "no-server") and time.monotonic() - start < 1
    assert r.detail


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """Accepts TCP and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    srv = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        for w in held:
            w.close()
        srv.close()


async def test_silent_server_bounded_by_timeout(silent_server: int) -> None:
    start = time.monotonic()
    r = await probe_port(f"127.0.0.1:{silent_server}", free_port(), "udp", timeout=0.8)
    took = time.monotonic() - start
    assert (r.reachable, r.reason) == (None, "no-server") and took < 1.5


async def test_garbage_server_is_server_error() -> None:
    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1000)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n\x00\xffxyz")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    try:
        r = await probe_port(f"127.0.0.1:{srv.sockets[0].getsockname()[1]}", free_port(), "tcp", timeout=2)
    finally:
        srv.close()
    assert r.reachable is None and r.reason in ("server-error", "no-server")


async def test_rate_limited_and_info() -> None:
    svc = DialbackService(DialbackConfig(limits=LimitsConfig(address_burst=1, address_rate=0.001)))
    port = (await svc.start(["127.0.0.1"], 0))[0][1]
    try:
        server = f"127.0.0.1:{port}"
        assert (await probe_port(server, free_port(), "tcp", timeout=2)).reason == "ok"
        r = await probe_port(server, free_port(), "tcp", timeout=2)
        assert (r.reachable, r.reason) == (None, "rate-limited") and r.detail
        info = await server_info(server, timeout=2)
        assert info is not None and info["service"] == "nodereach"
        assert await server_info(f"127.0.0.1:{free_port()}", timeout=1) is None
    finally:
        await svc.close()


def _listener(received: bool) -> EchoListener:
    lst = EchoListener("tcp", "0.0.0.0", 1)
    lst.received = received
    return lst


@pytest.mark.parametrize("doc, received, expected", [
    ({"reachable": True, "reason": "ok", "verified": True}, True, (True, "ok")),
    ({"reachable": True, "reason": "unverified", "verified": False}, False, (False, "other-host")),
    ({"reachable": False, "reason": "timeout", "verified": False}, True, (True, "ok")),  # echo lost, probe arrived
    ({"reachable": False, "reason": "refused"}, False, (False, "refused")),
    ({"reachable": None, "reason": "no-echo"}, False, (False, "timeout")),
])
def test_combine_with_own_listener(doc: dict, received: bool, expected: tuple[bool, str]) -> None:
    r = _combine(DialBackResult(1, "udp", None, "server-error"), {"address": "198.51.100.2", **doc},
                 _listener(received))
    assert (r.reachable, r.reason) == expected and r.observed_address == "198.51.100.2"


def test_combine_node_listener_udp_is_honest() -> None:
    r = _combine(DialBackResult(1, "udp", None, "x"), {"reachable": None, "reason": "no-echo"}, None)
    assert (r.reachable, r.reason) == (None, "udp-unobservable")
    r = _combine(DialBackResult(1, "udp", None, "x"), {"reachable": False, "reason": "refused"}, None)
    assert (r.reachable, r.reason) == (False, "refused")
    r = _combine(DialBackResult(1, "tcp", None, "x"), {"reachable": False, "reason": "timeout"}, None)
    assert (r.reachable, r.reason) == (False, "timeout")


async def test_port_held_by_node_is_detected() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as node:
        node.bind(("0.0.0.0", 0))
        lst = EchoListener("udp", "0.0.0.0", node.getsockname()[1])
        assert await lst.open() is False


async def test_server_by_host_name() -> None:
    """A host name (here from /etc/hosts: no DNS traffic) is resolved once and the probe uses its family."""
    svc = DialbackService(DialbackConfig(alt_addresses=("127.0.0.2",)))
    port = (await svc.start(["127.0.0.1"], 0))[0][1]
    try:
        r = await probe_port(f"localhost:{port}", free_port(), "udp", timeout=2)
        assert (r.reachable, r.reason, r.observed_address) == (True, "ok", "127.0.0.1")
    finally:
        await svc.close()


def test_token_lost_but_our_listener_accepted_is_ok() -> None:
    """The server completed the handshake and our listener accepted a connection: the echo got lost, not the
    probe (the check asks again under loss; this keeps a lost token segment from reading as 'other host')."""
    lst = _listener(False)
    lst.connections = 1
    r = _combine(DialBackResult(1, "tcp", None, "x"), {"reachable": True, "reason": "unverified"}, lst)
    assert (r.reachable, r.reason) == (True, "ok")


def test_best_of_several_answers() -> None:
    neg = (200, {"reachable": False, "reason": "timeout"})
    pos = (200, {"reachable": True, "reason": "unverified"})
    ver = (200, {"reachable": True, "reason": "ok", "verified": True})
    none = (None, {"message": "timed out"})
    best = client._best
    assert best([neg, ver, pos]) == ver and best([neg, pos]) == pos and best([none, neg]) == neg
    assert best([none, (429, {"error": "rate-limited-address"})])[0] == 429 and best([none, none]) == none


async def _http_server(reply: bytes) -> asyncio.Server:
    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1000)
        writer.write(reply)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(on_conn, "127.0.0.1", 0)


async def test_not_a_dialback_api_is_no_server() -> None:
    srv = await _http_server(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    try:
        r = await probe_port(f"127.0.0.1:{srv.sockets[0].getsockname()[1]}", free_port(), "tcp", timeout=2)
    finally:
        srv.close()
    assert (r.reachable, r.reason) == (None, "no-server")


async def test_oversized_answer_is_bounded() -> None:
    """A server that streams endlessly: the client reads at most 64 KiB and gives a typed answer in time."""
    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1000)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
        with contextlib.suppress(OSError):
            for _ in range(200):  # bounded: 200 x 8 KiB
                writer.write(b"[" * 8192)
                await writer.drain()
        writer.close()

    srv = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    start = time.monotonic()
    try:
        r = await probe_port(f"127.0.0.1:{srv.sockets[0].getsockname()[1]}", free_port(), "tcp", timeout=2)
    finally:
        srv.close()
    assert (r.reachable, r.reason) == (None, "server-error") and time.monotonic() - start < 2


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
async def test_dial_back_copies_and_deadline_from_handshake(protocol: str) -> None:
    """The check's entry: two probes of one listener at once; the deadline callback sees the handshake time."""
    svc = DialbackService(DialbackConfig(alt_addresses=("127.0.0.2",),
                                         limits=LimitsConfig(address_burst=100, network_burst=100)))
    http_port = (await svc.start(["127.0.0.1"], 0))[0][1]
    seen: list[float] = []

    def server_wait(handshake_s: float) -> float:
        seen.append(handshake_s)
        return 0.5

    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    port = free_port(kind)
    try:
        r = await dial_back("127.0.0.1", http_port, port, protocol, server_wait=server_wait, http_timeout=2.0,
                            copies=2)
    finally:
        await svc.close()
    assert (r.reachable, r.reason, r.listener, r.received) == (True, "ok", "nodereach", True)
    assert len(seen) == 2 and all(0 <= h < 0.5 for h in seen)
    # The port is free again at once: the check's retry under loss binds it right away.
    with socket.socket(socket.AF_INET, kind) as again:
        if kind == socket.SOCK_STREAM:
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("0.0.0.0", port))


def test_probe_path_does_not_import_aiohttp() -> None:
    """Importing aiohttp costs more than a whole probe at LAN RTTs: the client and the check's adapter avoid it.
    Even h11 (~10 ms) waits until a probe runs (http1.warm_up), off the check's start-up."""
    code = ("import sys, nodereach.reach.client, nodereach.diagnose.dialback; "
            "sys.exit(1 if {'aiohttp', 'h11'} & set(sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code], timeout=30).returncode == 0
