"""nodereach's STUN server on loopback (127.0.0.1 + 127.0.0.2 = two addresses): RFC 5780 behaviour,
error codes, reply sizes (amplification), rate limiting, and survival of hostile input."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodereach.stun import attributes as A
from nodereach.stun.message import (
    BINDING,
    ERROR,
    INDICATION,
    SUCCESS,
    StunMessage,
    binding_request,
    encode_message,
    parse_message,
)
from nodereach.stun.ratelimit import SourceRateLimiter
from nodereach.stun.server import StunServer, StunServerConfig


class Probe:
    """A raw UDP socket, so the tests see exactly what the server sends and from where."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.addr = self.sock.getsockname()[:2]

    async def ask(self, data: bytes, dest: tuple[str, int], wait: float = 1.0) -> tuple[bytes, tuple] | None:
        loop = asyncio.get_running_loop()
        await loop.sock_sendto(self.sock, data, dest)
        try:
            data, addr = await asyncio.wait_for(loop.sock_recvfrom(self.sock, 4096), wait)
        except TimeoutError:
            return None
        return data, addr[:2]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
async def full_server():
    async with StunServer(StunServerConfig("127.0.0.1", "127.0.0.2", port=0, alt_port=0)) as server:
        yield server


@pytest.fixture
async def basic_server():
    async with StunServer(StunServerConfig("127.0.0.1", port=0)) as server:
        yield server


async def test_full_mode_binds_two_ips_two_ports(full_server: StunServer) -> None:
    a = full_server.addresses
    assert a["primary"][0] == a["alt_port"][0] == "127.0.0.1"
    assert a["alt_ip"][0] == a["alt_both"][0] == "127.0.0.2"
    assert a["primary"][1] == a["alt_ip"][1] != a["alt_port"][1] == a["alt_both"][1]


async def test_plain_binding_fast_path(full_server: StunServer) -> None:
    p = Probe()
    req = binding_request()
    got = await p.ask(encode_message(req), full_server.addresses["primary"])
    assert got is not None
    data, src = got
    msg = parse_message(data)
    assert (msg.cls, msg.transaction_id) == (SUCCESS, req.transaction_id)
    assert msg.mapped_address == p.addr and msg.xor_mapped_address == p.addr
    assert msg.response_origin == full_server.addresses["primary"] == src
    assert msg.other_address == full_server.addresses["alt_both"]
    assert len(data) == 56  # XOR-MAPPED + RESPONSE-ORIGIN + OTHER-ADDRESS, nothing else
    assert msg.get(A.MAPPED_ADDRESS) is None and msg.get(A.SOFTWARE) is None
    p.close()


@pytest.mark.parametrize(("ci", "cp", "role"), [(False, False, "primary"), (True, False, "alt_ip"),
                                                (False, True, "alt_port"), (True, True, "alt_both")])
async def test_change_request_answered_from_right_socket(full_server: StunServer, ci: bool, cp: bool,
                                                         role: str) -> None:
    p = Probe()
    got = await p.ask(encode_message(binding_request(change_ip=ci, change_port=cp, software="t")),
                      full_server.addresses["primary"])
    assert got is not None
    data, src = got
    assert src == full_server.addresses[role]
    assert parse_message(data).response_origin == full_server.addresses[role]
    p.close()


async def test_other_address_relative_to_receiving_socket(full_server: StunServer) -> None:
    p = Probe()
    got = await p.ask(encode_message(binding_request()), full_server.addresses["alt_both"])
    assert got is not None
    assert parse_message(got[0]).other_address == full_server.addresses["primary"]
    p.close()


async def test_response_port(full_server: StunServer) -> None:
    sender, receiver = Probe(), Probe()
    req = binding_request(response_port=receiver.addr[1])
    loop = asyncio.get_running_loop()
    await loop.sock_sendto(sender.sock, encode_message(req), full_server.addresses["primary"])
    data, _ = await asyncio.wait_for(loop.sock_recvfrom(receiver.sock, 2048), 1.0)
    msg = parse_message(data)
    assert msg.transaction_id == req.transaction_id and msg.mapped_address == sender.addr
    sender.close()
    receiver.close()


async def test_response_port_with_padding_is_400(full_server: StunServer) -> None:
    p = Probe()
    req = encode_message(binding_request(response_port=p.addr[1], padding=8))
    got = await p.ask(req, full_server.addresses["primary"])
    assert got is not None
    msg = parse_message(got[0])
    assert msg.cls == ERROR and msg.error_code is not None and msg.error_code[0] == 400
    assert len(got[0]) <= len(req) * 1.2
    assert full_server.stats.errors == {400: 1}
    p.close()


async def test_change_request_in_basic_mode_is_420(basic_server: StunServer) -> None:
    p = Probe()
    got = await p.ask(encode_message(binding_request(change_ip=True)), basic_server.addresses["primary"])
    assert got is not None
    msg = parse_message(got[0])
    assert msg.error_code is not None and msg.error_code[0] == 420
    assert msg.unknown_attributes == (A.CHANGE_REQUEST,)
    plain = await p.ask(encode_message(binding_request()), basic_server.addresses["primary"])
    assert plain is not None and len(plain[0]) == 32  # basic mode: XOR-MAPPED-ADDRESS only
    assert parse_message(plain[0]).other_address is None
    stats = basic_server.stats  # the 420 came from the fast path (stun/fastpath.py): counted as the full path does
    assert (stats.requests, stats.replies, stats.errors, stats.malformed) == (2, 2, {420: 1}, 0)
    p.close()


async def test_unknown_required_attribute_is_420(basic_server: StunServer) -> None:
    p = Probe()
    req = StunMessage(BINDING, 0, os.urandom(12), [(0x7F01, b"abcd"), (0xC0FE, b"optional")])
    got = await p.ask(encode_message(req), basic_server.addresses["primary"])
    assert got is not None
    msg = parse_message(got[0])
    assert msg.error_code is not None and msg.error_code[0] == 420 and msg.unknown_attributes == (0x7F01,)
    p.close()


async def test_padding_never_exceeds_request_size(full_server: StunServer) -> None:
    p = Probe()
    for pad in (0, 4, 40, 1000):
        req = encode_message(binding_request(padding=pad))
        got = await p.ask(req, full_server.addresses["primary"])
        assert got is not None
        assert len(got[0]) <= max(len(req), 56)
        if pad >= 40:
            assert len(got[0]) == len(req)  # mirrors the request size: the PMTU test still works
    p.close()


async def test_legacy_rfc3489_request(full_server: StunServer) -> None:
    p = Probe()
    req = binding_request(legacy=True)
    got = await p.ask(encode_message(req), full_server.addresses["primary"])
    assert got is not None
    msg = parse_message(got[0])
    assert msg.legacy and msg.transaction_id == req.transaction_id
    assert msg.get(A.MAPPED_ADDRESS) is not None and msg.get(A.XOR_MAPPED_ADDRESS) is None
    assert msg.mapped_address == p.addr
    assert msg.response_origin == full_server.addresses["primary"]
    assert msg.other_address == full_server.addresses["alt_both"]  # CHANGED-ADDRESS
    p.close()


async def test_fingerprint_echoed(basic_server: StunServer) -> None:
    p = Probe()
    got = await p.ask(encode_message(binding_request(), fingerprint=True), basic_server.addresses["primary"])
    assert got is not None
    assert parse_message(got[0]).check_fingerprint() is True
    p.close()


async def test_hostile_input_counted_and_dropped(full_server: StunServer) -> None:
    p = Probe()
    dest = full_server.addresses["primary"]
    junk = [b"", b"\x00", os.urandom(20), b"\x00\x01\x00\x08" + A.MAGIC_COOKIE_BYTES + os.urandom(12),
            b"GET / HTTP/1.1\r\n\r\n", os.urandom(1400)]
    for data in junk:
        assert await p.ask(data, dest, wait=0.05) is None
    indication = encode_message(StunMessage(BINDING, INDICATION, os.urandom(12)))
    response = encode_message(StunMessage(BINDING, SUCCESS, os.urandom(12)))
    assert await p.ask(indication, dest, wait=0.05) is None
    assert await p.ask(response, dest, wait=0.05) is None
    assert full_server.stats.malformed >= 5 and full_server.stats.ignored == 2
    assert await p.ask(encode_message(binding_request()), dest) is not None  # still serving
    p.close()


async def test_rate_limit_per_source() -> None:
    cfg = StunServerConfig("127.0.0.1", port=0, rate_per_s=1.0, burst=5)
    async with StunServer(cfg) as server:
        flooder = Probe("127.0.0.1")
        loop = asyncio.get_running_loop()
        for _ in range(50):
            await loop.sock_sendto(flooder.sock, encode_message(binding_request()), server.addresses["primary"])
        polite = Probe("127.0.0.3")  # another source address: its own bucket
        assert await polite.ask(encode_message(binding_request()), server.addresses["primary"]) is not None
        await asyncio.sleep(0)  # let the flood drain
        for _ in range(200):
            if server.stats.rate_limited + server.stats.replies >= 51:
                break
            await asyncio.sleep(0.005)
        assert server.stats.rate_limited >= 40
        assert server.stats.replies <= 7
        flooder.close()
        polite.close()


def test_rate_limiter_bounded_and_refills() -> None:
    lim = SourceRateLimiter(rate_per_s=10, burst=2, max_sources=1000)
    assert lim.allow("a", 0.0) and lim.allow("a", 0.0) and not lim.allow("a", 0.0)
    assert lim.allow("a", 0.1)  # one token refilled
    for i in range(5000):
        lim.allow(f"10.0.{i // 256}.{i % 256}", 1.0)
    assert len(lim) == 1000


async def test_tcp_binding_and_hostile_stream(full_server: StunServer) -> None:
    host, port = full_server.addresses["primary"]
    reader, writer = await asyncio.open_connection(host, port)
    req = binding_request()
    writer.write(encode_message(req) + encode_message(binding_request(change_ip=True)))
    data = await asyncio.wait_for(reader.readexactly(20), 1)
    length = int.from_bytes(data[2:4], "big")
    msg = parse_message(data + await reader.readexactly(length))
    assert msg.transaction_id == req.transaction_id
    assert msg.mapped_address == writer.get_extra_info("sockname")[:2]
    data = await asyncio.wait_for(reader.readexactly(20), 1)
    err = parse_message(data + await reader.readexactly(int.from_bytes(data[2:4], "big")))
    assert err.error_code is not None and err.error_code[0] == 420  # no CHANGE-REQUEST over TCP
    writer.write(b"\xff" * 40)  # not STUN: the server hangs up
    assert await asyncio.wait_for(reader.read(), 1) == b""
    writer.close()
    assert full_server.stats.malformed == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=60), st.integers(1, 6))
def test_rate_limiter_matches_token_bucket(gaps: list[int], burst: int) -> None:
    """GCRA gives the same admissions as a plain token bucket (rate 4/s, times in exact quarter seconds)."""
    lim = SourceRateLimiter(rate_per_s=4, burst=burst, max_sources=10)
    tokens, last, now = float(burst), 0.0, 0.0
    for gap in gaps:
        now += gap / 8
        tokens = min(float(burst), tokens + (now - last) * 4)
        last = now
        expect = tokens >= 1.0
        if expect:
            tokens -= 1.0
        assert lim.allow("s", now) is expect


@pytest.mark.parametrize(("full", "request_bytes", "reply_len"), [
    (False, encode_message(binding_request()), 32),
    (True, encode_message(binding_request()), 56),
    (False, encode_message(binding_request(), fingerprint=True), 40),
    (True, encode_message(binding_request(), fingerprint=True), 64),
    (False, encode_message(binding_request(change_ip=True)), 56),
    (True, encode_message(binding_request(change_ip=True)), 56),
    (False, encode_message(binding_request(legacy=True)), 44),
    (True, encode_message(binding_request(legacy=True)), 56),
    (True, encode_message(binding_request(response_port=9, padding=0)) + b"", None),
    (True, encode_message(StunMessage(BINDING, 0, os.urandom(12), [(0x7F01, b"")])), 56),
])
async def test_documented_amplification(full: bool, request_bytes: bytes, reply_len: int | None) -> None:
    """The reply sizes in the server's docstring table are what goes on the wire."""
    cfg = StunServerConfig("127.0.0.1", "127.0.0.2" if full else None, port=0, alt_port=0)
    async with StunServer(cfg) as server:
        p = Probe()
        if reply_len is None:  # RESPONSE-PORT + zero-length PADDING: 32 B -> 400 of 40 B
            request_bytes = encode_message(binding_request(response_port=p.addr[1], padding=0).add(A.PADDING, b""))
            reply_len = 40
        got = await p.ask(request_bytes, server.addresses["primary"])
        assert got is not None and len(got[0]) == reply_len
        p.close()


async def test_close_with_open_tcp_connections_is_quick_and_quiet() -> None:
    server = StunServer(StunServerConfig("127.0.0.1", port=0))
    await server.start()
    conns = [await asyncio.open_connection(*server.addresses["primary"]) for _ in range(5)]
    for _ in range(100):
        if server.stats.tcp_connections == 5:
            break
        await asyncio.sleep(0.01)
    assert server.stats.tcp_connections == 5
    loop = asyncio.get_running_loop()
    errors: list[dict] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    t0 = time.monotonic()
    await server.close()
    assert time.monotonic() - t0 < 1.0
    for reader, writer in conns:
        assert await asyncio.wait_for(reader.read(), 1) == b""
        writer.close()
    await asyncio.sleep(0.05)
    assert errors == []


def test_reuse_port_workers_share_the_load() -> None:
    """`python -m nodereach.stun --workers 2`: both processes answer on the same ports."""
    import json
    import select
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "nodereach.stun", "--address", "127.0.0.1", "--port", "0",
                             "--no-tcp", "--rate", "0", "--workers", "2"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert select.select([proc.stdout], [], [], 15)[0]
        addr = tuple(json.loads(proc.stdout.readline())["addresses"]["primary"])
        answered = 0
        for _ in range(64):  # 64 source ports: the kernel hashes them over both workers
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(2)
                req = binding_request()
                s.sendto(encode_message(req), addr)
                answered += parse_message(s.recv(2048)).transaction_id == req.transaction_id
        assert answered == 64
        proc.stdin.close()
        assert select.select([proc.stdout], [], [], 10)[0]
        parent = json.loads(proc.stdout.readline())["stats"]
        assert 0 < parent["replies"] < 64  # the rest went to the other worker (P(all one side) = 2^-63)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_request_with_bad_fingerprint_is_dropped(basic_server: StunServer) -> None:
    p = Probe()
    data = bytearray(encode_message(binding_request(), fingerprint=True))
    data[-1] ^= 0xFF
    assert await p.ask(bytes(data), basic_server.addresses["primary"], wait=0.1) is None
    assert basic_server.stats.malformed == 1 and basic_server.stats.replies == 0
    p.close()


@pytest.mark.parametrize(("address", "alt", "port", "alt_port"), [
    ("127.0.0.1", "::1", 0, 0), ("127.0.0.1", "127.0.0.1", 0, 0), ("127.0.0.1", "127.0.0.2", 5000, 5000),
    ("0.0.0.0", "127.0.0.2", 0, 0), ("::", "::1", 0, 0)])
def test_bad_rfc5780_config_is_a_clear_error(address: str, alt: str, port: int, alt_port: int) -> None:
    from nodereach.stun.errors import StunError

    with pytest.raises(StunError, match="RFC 5780 needs"):
        StunServer(StunServerConfig(address, alt, port=port, alt_port=alt_port))


async def test_port_in_use_is_a_clear_error(basic_server: StunServer) -> None:
    from nodereach.stun.errors import StunError

    taken = basic_server.addresses["primary"][1]
    with pytest.raises(StunError, match="cannot bind STUN") as info:
        await StunServer(StunServerConfig("127.0.0.1", port=taken)).start()
    assert info.value.hint


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


async def test_wildcard_answers_from_the_address_each_request_was_sent_to() -> None:
    """Bound to 0.0.0.0, a reply to a request sent to 127.0.0.2 must come from 127.0.0.2 (the kernel alone
    would pick 127.0.0.1 by route). A connected client socket drops replies from any other address, as a NAT
    or firewall on a real client's path would."""
    async with StunServer(StunServerConfig("0.0.0.0", port=0)) as server:
        port = server.addresses["primary"][1]
        for dest in ("127.0.0.1", "127.0.0.2"):
            for request in (encode_message(binding_request()), encode_message(binding_request(), fingerprint=True)):
                p = Probe()
                try:
                    p.sock.connect((dest, port))
                    got = await p.ask(request, (dest, port))
                finally:
                    p.close()
                assert got is not None, f"no reply from {dest} (answered from another address?)"
                assert got[1] == (dest, port)
                assert parse_message(got[0]).xor_mapped_address == p.addr
    assert server.stats.replies == 4 and server.stats.send_failed == 0


async def test_ipv6_wildcard_answers_over_ipv6_only() -> None:
    if not _has_ipv6_loopback():
        pytest.skip("this host has no ::1")
    async with StunServer(StunServerConfig("::", port=0)) as server:
        port = server.addresses["primary"][1]
        p = Probe("::1")
        try:
            p.sock.connect(("::1", port))
            got = await p.ask(encode_message(binding_request()), ("::1", port))
        finally:
            p.close()
        assert got is not None and got[1] == ("::1", port)
        assert parse_message(got[0]).xor_mapped_address == p.addr
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as v4:  # IPV6_V6ONLY: IPv4 is not taken
            v4.bind(("127.0.0.1", port))


def test_script_with_stdin_at_dev_null_serves_and_stops_on_sigterm() -> None:
    """`python -m nodereach.stun < /dev/null` (systemd's StandardInput=null): /dev/null cannot be polled and never
    closes, so only a signal stops it; it once logged a traceback from asyncio's pipe reader."""
    import json
    import select
    import signal
    import subprocess
    import sys

    with open(os.devnull, "rb") as null:
        proc = subprocess.Popen([sys.executable, "-m", "nodereach.stun", "--address", "127.0.0.1", "--port", "0",
                                 "--no-tcp"], stdin=null, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert select.select([proc.stdout], [], [], 15)[0]
        addr = tuple(json.loads(proc.stdout.readline())["addresses"]["primary"])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(encode_message(binding_request()), addr)
            assert parse_message(s.recv(2048)).xor_mapped_address is not None
        assert proc.poll() is None  # no EOF on /dev/null ends it
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert json.loads(out.splitlines()[-1])["stats"]["replies"] == 1
    assert b"Traceback" not in err, err.decode()
