"""nodereach's STUN client against nodereach's server and hand-written misbehaving peers on loopback:
demultiplexing, source checks, retransmission timing, adaptive RTO, caller sockets, IPv6, TCP."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from nodereach.stun import attributes as A
from nodereach.stun.client import StunClient, tcp_binding
from nodereach.stun.errors import StunConnectionError, StunError, StunErrorResponse, StunParseError, StunTimeout
from nodereach.stun.message import BINDING, SUCCESS, StunMessage, encode_message, parse_message
from nodereach.stun.rtt import SharedRtt
from nodereach.stun.server import StunServer, StunServerConfig
from nodereach.stun.transaction import BindingErrorResponse, PacedTries, Rfc8489Retransmit

FAST = Rfc8489Retransmit(rto=0.05, rc=3, rm=2)


@pytest.fixture
async def server():
    async with StunServer(StunServerConfig("127.0.0.1", "127.0.0.2", port=0, alt_port=0, rate_per_s=0)) as s:
        yield s


class Responder(asyncio.DatagramProtocol):
    """A scriptable fake server: drops the first `drop` requests, can answer from a second socket."""

    def __init__(self, drop: int = 0, spoof_from: asyncio.DatagramTransport | None = None) -> None:
        self.drop = drop
        self.seen: list[float] = []
        self.ids: list[bytes] = []
        self.spoof_from = spoof_from
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[override]
        self.seen.append(time.monotonic())
        req = parse_message(data)
        self.ids.append(req.transaction_id)
        if len(self.seen) <= self.drop:
            return
        resp = StunMessage(BINDING, SUCCESS, req.transaction_id)
        resp.add(A.XOR_MAPPED_ADDRESS, A.encode_xor_address(addr[:2], resp.key))
        out = self.spoof_from or self.transport
        assert out is not None
        out.sendto(encode_message(resp), addr)


async def _responder(**kw: object) -> tuple[Responder, asyncio.DatagramTransport]:
    loop = asyncio.get_running_loop()
    proto = Responder(**kw)  # type: ignore[arg-type]
    transport, _ = await loop.create_datagram_endpoint(lambda: proto, local_addr=("127.0.0.1", 0))
    return proto, transport


async def test_binding_and_rfc5780_sequence(server: StunServer) -> None:
    primary = server.addresses["primary"]
    async with StunClient(local=("127.0.0.1", 0)) as c:
        r = await c.binding(primary)
        assert r.mapped == c.local_address and r.source == primary and not r.legacy
        assert r.other_address == server.addresses["alt_both"] and r.response_origin == primary
        assert r.attempts == 1 and 0 <= r.rtt < 0.5
        assert c.learned_other_address(primary) == server.addresses["alt_both"]
        both = await c.binding(primary, change_ip=True, change_port=True)
        assert both.source == server.addresses["alt_both"]
        port_only = await c.binding(primary, change_port=True)
        assert port_only.source == server.addresses["alt_port"]
        ip_only = await c.binding(primary, change_ip=True)
        assert ip_only.source == server.addresses["alt_ip"]


async def test_change_request_needs_other_address(server: StunServer) -> None:
    async with StunClient(local=("127.0.0.1", 0)) as c:
        with pytest.raises(StunError, match="OTHER-ADDRESS"):
            await c.binding(server.addresses["primary"], change_ip=True)


async def test_many_concurrent_transactions_one_socket(server: StunServer) -> None:
    tids = [i.to_bytes(12, "big") for i in range(1, 301)]
    async with StunClient(local=("127.0.0.1", 0)) as c:
        results = await asyncio.gather(*(c.binding(server.addresses["primary"], transaction_id=t) for t in tids))
        assert [r.message.transaction_id for r in results] == tids  # each caller got the reply to its request
        assert all(r.mapped == c.local_address for r in results)


async def test_reply_from_unexpected_address_is_ignored() -> None:
    loop = asyncio.get_running_loop()
    spoof_t, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    _proto, t = await _responder(spoof_from=spoof_t)
    async with StunClient(local=("127.0.0.1", 0), retransmit=FAST) as c:
        with pytest.raises(StunTimeout):
            await c.binding(t.get_extra_info("sockname"))
        assert c.stats.stray == 3  # all three replies came from the wrong port
    t.close()
    spoof_t.close()


async def test_rfc8489_retransmission_schedule() -> None:
    proto, t = await _responder(drop=2)
    async with StunClient(local=("127.0.0.1", 0), retransmit=Rfc8489Retransmit(rto=0.1, rc=7, rm=16)) as c:
        r = await c.binding(t.get_extra_info("sockname"))
    assert r.attempts == 3
    gaps = [b - a for a, b in zip(proto.seen, proto.seen[1:], strict=False)]
    assert 0.09 < gaps[0] < 0.3 and 0.19 < gaps[1] < 0.45  # RTO, then 2 x RTO
    t.close()


async def test_timeout_after_rc_sends_and_rm_wait() -> None:
    proto, t = await _responder(drop=100)
    async with StunClient(local=("127.0.0.1", 0), retransmit=Rfc8489Retransmit(rto=0.02, rc=4, rm=5)) as c:
        t0 = time.monotonic()
        with pytest.raises(StunTimeout):
            await c.binding(t.get_extra_info("sockname"))
        elapsed = time.monotonic() - t0
    assert len(proto.seen) == 4
    assert 0.02 * (1 + 2 + 4 + 5) * 0.9 < elapsed < 1.0  # 0.24 s by the schedule
    t.close()


async def test_overall_timeout_caps_schedule() -> None:
    _proto, t = await _responder(drop=100)
    async with StunClient(local=("127.0.0.1", 0)) as c:  # RFC defaults would wait 39.5 s
        t0 = time.monotonic()
        with pytest.raises(StunTimeout):
            await c.binding(t.get_extra_info("sockname"), timeout=0.3)
        assert time.monotonic() - t0 < 0.6
    t.close()


async def test_adaptive_mode_derives_deadline_from_rtt(server: StunServer) -> None:
    policy = Rfc8489Retransmit(adaptive=True, min_rto=0.03)
    proto, t = await _responder(drop=1)
    dead = t.get_extra_info("sockname")
    async with StunClient(local=("127.0.0.1", 0), retransmit=policy) as c:
        assert c.current_rto("127.0.0.1") == 0.5  # no sample yet: RFC default
        first = await c.binding(server.addresses["primary"])  # loopback RTT sample
        assert c.current_rto("127.0.0.1") == pytest.approx(max(0.03, 3 * first.rtt))  # SRTT + 4 x SRTT/2
        proto.drop = 10**6
        t0 = time.monotonic()
        with pytest.raises(StunTimeout):
            await c.binding(dead)  # same host: the learned RTO applies
        elapsed = time.monotonic() - t0
    assert elapsed < max(0.6, 15 * first.rtt)  # 0.03 * (1+2+4+4) = 0.33 s instead of 39.5 s
    t.close()


async def test_caller_socket_is_used_and_left_open(server: StunServer) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    async with StunClient(sock=sock) as c:
        r = await c.binding(server.addresses["primary"])
        assert r.mapped == ("127.0.0.1", port) == r.local
    assert sock.fileno() != -1
    sock.sendto(b"still usable", server.addresses["primary"])
    sock.close()


async def test_address_family_mismatch_is_a_usage_error() -> None:
    async with StunClient(local=("127.0.0.1", 0)) as c:
        with pytest.raises(StunError, match="IPv4"):
            await c.binding(("::1", 3478))


async def test_ipv6() -> None:
    async with StunServer(StunServerConfig("::1", port=0, rate_per_s=0)) as s:
        async with StunClient(local=("::1", 0)) as c:
            r = await c.binding(s.addresses["primary"])
            assert r.mapped == c.local_address and r.mapped[0] == "::1"
        r = await tcp_binding(s.addresses["primary"], timeout=2)
        assert r.mapped is not None and r.mapped[0] == "::1"


async def test_tcp_binding_from_chosen_port(server: StunServer) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    r = await tcp_binding(server.addresses["primary"], local=("127.0.0.1", port), timeout=2)
    assert r.mapped == ("127.0.0.1", port) and r.other_address == server.addresses["alt_both"]


async def test_error_response_raises_typed_error() -> None:
    async with StunServer(StunServerConfig("127.0.0.1", port=0)) as basic, StunClient(local=("127.0.0.1", 0)) as c:
        with pytest.raises(StunErrorResponse) as info:
            await c.binding(basic.addresses["primary"], change_ip=True, other=("127.0.0.2", 1))
    assert info.value.code == 420 and info.value.unknown == (A.CHANGE_REQUEST,)


async def test_response_port_via_second_client(server: StunServer) -> None:
    async with StunClient(local=("127.0.0.1", 0)) as a, StunClient(local=("127.0.0.1", 0)) as b:
        r = await a.binding(server.addresses["primary"], response_port=b.local_address[1], reply_via=b)
        assert r.mapped == a.local_address and r.local == b.local_address


async def test_legacy_request(server: StunServer) -> None:
    async with StunClient(local=("127.0.0.1", 0)) as c:
        r = await c.binding(server.addresses["primary"], legacy=True)
        assert r.legacy and r.mapped == c.local_address and r.other_address == server.addresses["alt_both"]


async def test_try_alternate_carries_alternate_server() -> None:
    class Redirect(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[override]
            req = parse_message(data)
            resp = StunMessage(BINDING, 0x110, req.transaction_id)
            resp.add(A.ERROR_CODE, A.encode_error_code(300, "Try Alternate"))
            resp.add(A.ALTERNATE_SERVER, A.encode_address(("127.0.0.5", 3478)))
            self.transport.sendto(encode_message(resp), addr)  # type: ignore[attr-defined]

    loop = asyncio.get_running_loop()
    t, _ = await loop.create_datagram_endpoint(Redirect, local_addr=("127.0.0.1", 0))
    async with StunClient(local=("127.0.0.1", 0)) as c:
        with pytest.raises(StunErrorResponse) as info:
            await c.binding(t.get_extra_info("sockname"), timeout=1)
    assert (info.value.code, info.value.alternate) == (300, ("127.0.0.5", 3478))
    t.close()


async def test_rfc3489_server_reply_to_modern_request() -> None:
    """An old server answers with MAPPED-ADDRESS / CHANGED-ADDRESS only: still understood, flagged legacy."""

    class Old(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[override]
            req = parse_message(data)
            resp = StunMessage(BINDING, SUCCESS, req.transaction_id)
            resp.add(A.MAPPED_ADDRESS, A.encode_address(addr[:2]))
            resp.add(A.CHANGED_ADDRESS, A.encode_address(("127.0.0.2", 3479)))
            self.transport.sendto(encode_message(resp), addr)  # type: ignore[attr-defined]

    loop = asyncio.get_running_loop()
    t, _ = await loop.create_datagram_endpoint(Old, local_addr=("127.0.0.1", 0))
    async with StunClient(local=("127.0.0.1", 0)) as c:
        r = await c.binding(t.get_extra_info("sockname"), timeout=1)
        assert r.legacy and r.mapped == c.local_address and r.other_address == ("127.0.0.2", 3479)
    t.close()


async def test_reply_with_bad_fingerprint_is_dropped() -> None:
    class Corrupt(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[override]
            req = parse_message(data)
            resp = StunMessage(BINDING, SUCCESS, req.transaction_id)
            resp.add(A.XOR_MAPPED_ADDRESS, A.encode_xor_address(addr[:2], resp.key))
            out = bytearray(encode_message(resp, fingerprint=True))
            out[-1] ^= 0xFF
            self.transport.sendto(bytes(out), addr)  # type: ignore[attr-defined]

    loop = asyncio.get_running_loop()
    t, _ = await loop.create_datagram_endpoint(Corrupt, local_addr=("127.0.0.1", 0))
    async with StunClient(local=("127.0.0.1", 0), retransmit=FAST) as c:
        with pytest.raises(StunTimeout):
            await c.binding(t.get_extra_info("sockname"))
        assert c.stats.malformed == 3
    t.close()


# --- paced questions (PacedTries: what nodereach check uses) ------------------------------------------------

async def test_shared_rtt_across_clients_and_any_source(server: StunServer) -> None:
    """One SharedRtt for two sockets; CHANGE-REQUEST at once (no OTHER-ADDRESS yet), reply kept with its source."""
    primary = server.addresses["primary"]
    rtt = SharedRtt()
    async with StunClient(local=("127.0.0.1", 0), retransmit=PacedTries(rtt)) as a, \
            StunClient(local=("127.0.0.1", 0), retransmit=PacedTries(rtt)) as b:
        r1, r2 = await asyncio.gather(a.binding(primary, deadline=lambda: time.monotonic() + 2),
                                      b.binding(primary, change_ip=True, change_port=True, any_source=True,
                                                deadline=lambda: time.monotonic() + 2))
        assert r1.source == primary and r2.source == server.addresses["alt_both"]
        assert rtt.samples == 2 and rtt.srtt is not None and rtt.answered_tries == 2 and rtt.lost_tries == 0


async def test_paced_tries_fresh_ids_exact_sample_and_loss() -> None:
    proto, transport = await _responder(drop=2)
    addr = transport.get_extra_info("sockname")[:2]
    rtt = SharedRtt()
    rtt.add(0.02)  # RTO ~0.07 s
    try:
        async with StunClient(local=("127.0.0.1", 0), retransmit=PacedTries(rtt)) as c:
            r = await c.binding(addr, deadline=lambda: time.monotonic() + 2)
            # the schedule itself is checked time for time in test_stun_transaction.py
            assert r.attempts >= 3 and len(set(proto.ids)) == len(proto.ids) == len(proto.seen)  # fresh ids
            assert rtt.samples == 2  # the answered try was sent once: an exact sample, not ambiguous
            assert 1 <= r.lost < r.attempts and (rtt.answered_tries, rtt.lost_tries) == (r.lost + 1, r.lost)
            proto.drop = 10**6  # silent from now on: the deadline callable ends it
            t0 = time.monotonic()
            with pytest.raises(StunTimeout):
                await c.binding(addr, deadline=lambda: t0 + 0.3)
            assert 0.28 < time.monotonic() - t0 < 0.6
    finally:
        transport.close()


async def test_unsolicited_requests_and_answers_reach_the_hook(server: StunServer) -> None:
    got: list[tuple[int, tuple[str, int]]] = []
    async with StunClient(local=("127.0.0.1", 0), on_unsolicited=lambda m, a: got.append((m.cls, a))) as x, \
            StunClient(local=("127.0.0.1", 0)) as y:
        from nodereach.stun.message import REQUEST, binding_request

        y._transport.sendto(encode_message(binding_request()), x.local_address)  # type: ignore[union-attr]
        x._transport.sendto(b"\x00\x01garbage-that-is-not-stun", y.local_address)  # type: ignore[union-attr]
        y._transport.sendto(b"\x00\x01\x00\x08" + b"\x21\x12\xa4\x42" + b"\x00" * 12, x.local_address)  # type: ignore[union-attr]
        for _ in range(50):
            if got and x.stats.malformed_from:
                break
            await asyncio.sleep(0.01)
        assert got == [(REQUEST, y.local_address)]
        assert x.stats.malformed_from == {y.local_address: 1}


# --- TCP: every way it can end ------------------------------------------------------------------------------

async def _tcp_peer(behaviour: str) -> asyncio.Server:
    """A TCP peer that answers a Binding request with an error, garbage, a close, or nothing."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(4096)
        if behaviour == "error":
            req = parse_message(data)
            resp = StunMessage(BINDING, 0x110, req.transaction_id)
            resp.add(A.ERROR_CODE, A.encode_error_code(420, "Unknown Attribute"))
            writer.write(encode_message(resp))
        elif behaviour == "garbage":
            writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        elif behaviour == "silent":
            await asyncio.sleep(5)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize("behaviour", ["error", "garbage", "close", "silent", "refused"])
async def test_tcp_binding_outcomes(behaviour: str) -> None:
    if behaviour == "refused":
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        addr = probe.getsockname()
        probe.close()
        peer = None
    else:
        peer = await _tcp_peer(behaviour)
        addr = peer.sockets[0].getsockname()
    t0 = time.monotonic()
    try:
        if behaviour == "error":
            with pytest.raises(BindingErrorResponse) as info:
                await tcp_binding(addr, deadline=t0 + 2)
            assert info.value.reply is not None and info.value.reply.error == (420, "Unknown Attribute")
            assert info.value.reply.source == addr
        elif behaviour == "garbage":
            with pytest.raises(StunParseError):
                await tcp_binding(addr, deadline=t0 + 2)
        elif behaviour == "silent":
            with pytest.raises(StunTimeout):
                await tcp_binding(addr, deadline=t0 + 0.3, timeout=5)
            assert time.monotonic() - t0 < 1.5  # the earlier of deadline and timeout
        else:
            with pytest.raises(StunConnectionError) as cinfo:
                await tcp_binding(addr, timeout=2)
            assert cinfo.value.reason == ("refused" if behaviour == "refused" else
                                          "connection closed without a STUN reply")
    finally:
        if peer is not None:
            peer.close()


async def test_check_adapter_keeps_error_replies_and_reasons() -> None:
    """diagnose.stunio (the check's view): errors as values, failures as short reasons."""
    from nodereach.diagnose import stunio

    peer = await _tcp_peer("error")
    try:
        reply, why = await stunio.tcp_binding(peer.sockets[0].getsockname(), deadline=time.monotonic() + 2)
        assert why is None and reply is not None and reply.error == (420, "Unknown Attribute")
    finally:
        peer.close()
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    addr = probe.getsockname()
    probe.close()
    assert await stunio.tcp_binding(addr, deadline=time.monotonic() + 2) == (None, "refused")
    async with StunServer(StunServerConfig("127.0.0.1", port=0)) as basic:
        sock = await stunio.StunSocket(SharedRtt(), bind=("127.0.0.1", 0)).open()
        try:
            refused = await sock.request(basic.addresses["primary"], deadline=lambda: time.monotonic() + 2,
                                         change_ip=True)
            assert refused is not None and refused.error is not None and refused.error[0] == 420
            assert refused.source == basic.addresses["primary"]
        finally:
            sock.close()
