"""The check's STUN probes, one top-level coroutine each; every one returns a value (diagnose.observations).

A probe's inputs are its socket, its destination, the run's `Context` and, where it depends on another probe,
that probe's result as an awaitable (tests II/III need test I's OTHER-ADDRESS; hairpinning needs both public
endpoints). The engine decides when each runs; a probe never waits longer than its deadline allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable

from nodereach.diagnose import ttlprobe
from nodereach.diagnose.budget import Context
from nodereach.diagnose.observations import (
    FilteringTests,
    Hairpin,
    MappingTests,
    PathTrace,
    ServerAnswer,
    TcpTest,
)
from nodereach.diagnose.options import ResolvedServer
from nodereach.diagnose.stunio import StunSocket, tcp_binding
from nodereach.net import Family, SockAddr
from nodereach.stun import message as M
from nodereach.stun.transaction import BindingReply

TRACE_MAX_TTL = 8
"""TTL-limited probes go this far: a home NAT, a second NAT or CGNAT, and the first public routers."""
TRACE_RTOS = 4
"""A silent TTL is given up after this many RTOs (routers rate-limit ICMP; the path is not a negative answer
that decides a classification)."""
HAIRPIN_RTOS = 2


async def request(sock: StunSocket, dest: SockAddr, ctx: Context, *, change_ip: bool = False,
                  change_port: bool = False) -> BindingReply | None:
    """One question to a STUN server, asked as paced tries (stun.transaction.Question) until the loss seen so
    far makes its silence a "no" (< 1e-4 chance of a wrong one): Budget.negative, which follows the estimate
    and never passes the run's end."""
    return await sock.request(dest, deadline=ctx.budget.negative_from_now(), change_ip=change_ip,
                              change_port=change_port)


async def test1(sock: StunSocket, server: ResolvedServer, family: Family, ctx: Context) -> ServerAnswer:
    """RFC 5780 test I to one server. A reply from any other address is set aside, never trusted."""
    dest = server.stun(family)
    if dest is None:
        return ServerAnswer(server, None)
    reply = await request(sock, dest, ctx)
    garbage = sock.garbage.get(dest, 0)
    if reply is not None and reply.source != dest:
        return ServerAnswer(server, None, foreign_source=reply.source, garbage=garbage)
    return ServerAnswer(server, reply, garbage=garbage)


def usable(reply: BindingReply | None) -> BindingReply | None:
    """A success reply with a mapped address, else None."""
    return reply if reply is not None and reply.error is None and reply.mapped is not None else None


async def mapping_tests(sock: StunSocket, dest: SockAddr, first: Awaitable[ServerAnswer],
                        ctx: Context) -> MappingTests | None:
    """RFC 5780 tests II and III, once test I named the OTHER-ADDRESS (None: it named none)."""
    answer = await first
    reply = answer.reply
    other = reply.other_address if reply is not None and reply.error is None else None
    if other is None:
        return None
    alt_ip: SockAddr = (other[0], dest[1])
    r2, r3 = await asyncio.gather(request(sock, alt_ip, ctx), request(sock, other, ctx))
    t2 = r2.mapped if r2 is not None and r2.error is None and r2.source == alt_ip else None
    t3 = r3.mapped if r3 is not None and r3.error is None and r3.source == other else None
    return MappingTests(other, t2, t3)


async def filtering_tests(sock: StunSocket, dest: SockAddr, plain: Awaitable[BindingReply | None],
                          ctx: Context) -> FilteringTests:
    """RFC 5780 §4.4 CHANGE-REQUEST tests, sent together with the socket's plain request (`plain`, started by
    the caller so that hairpinning can aim at its public endpoint as soon as it is known)."""
    change_both, change_port = await asyncio.gather(request(sock, dest, ctx, change_ip=True, change_port=True),
                                                    request(sock, dest, ctx, change_port=True))
    return FilteringTests(await plain, change_both, change_port)


async def tcp_test(dest: SockAddr, ctx: Context) -> TcpTest:
    """STUN over TCP. Its round trip (request to reply on the open connection) seeds the RTT estimate until a
    STUN reply over UDP gives a real one (TCP may have hidden a retransmission)."""
    reply, reason = await tcp_binding(dest, deadline=ctx.budget.end - 0.05)
    if reply is not None:
        ctx.rtt.add(reply.rtt, provisional=True)
    return TcpTest(reply, reason)


async def path_trace(dest: SockAddr, tcp_dest: SockAddr | None, ctx: Context) -> PathTrace:
    """TTL-limited probes toward the server over UDP and, in parallel, TCP (a UDP filter on the way hides the
    routers beyond it; TCP SYNs pass)."""
    deadline = ctx.budget.negative_from_now(TRACE_RTOS)
    jobs = [ttlprobe.trace(dest, max_ttl=TRACE_MAX_TTL, deadline=deadline, rto=ctx.rto)]
    if tcp_dest is not None:
        jobs.append(ttlprobe.trace_tcp(tcp_dest, max_ttl=TRACE_MAX_TTL, deadline=deadline, rto=ctx.rto))
    found = await asyncio.gather(*jobs)
    return PathTrace(udp=tuple(found[0]), tcp=tuple(found[1]) if len(found) > 1 else ())


async def hairpin(m_sock: StunSocket, f_sock: StunSocket, first: Awaitable[ServerAnswer],
                  plain: Awaitable[BindingReply | None], ctx: Context) -> Hairpin:
    """RFC 5780 §4.5: a Binding request from the mapping socket to the filtering socket's public endpoint;
    the NAT hairpins if it arrives. Needs both sockets mapped (test I and the filtering socket's first reply)."""
    answer, reply = await asyncio.gather(first, plain)
    target = usable(reply)
    if usable(answer.reply) is None or target is None or target.mapped is None:
        return Hairpin(False, False, "no public endpoint to aim at")
    msg = M.binding_request()
    data = M.encode_message(msg)
    deadline = min(ctx.budget.end, time.monotonic() + max(0.1, ctx.rtt.rto * HAIRPIN_RTOS))
    while time.monotonic() < deadline and msg.transaction_id not in f_sock.requests_seen:
        m_sock.send_raw(data, target.mapped)
        f_sock.request_event.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, min(ctx.rtt.rto, deadline - time.monotonic()))):
                await f_sock.request_event.wait()
    return Hairpin(True, msg.transaction_id in f_sock.requests_seen)
