"""TTL-limited probes read through IP_RECVERR (no root): which routers stand before the internet.

UDP: each TTL gets its own connected UDP socket; an ICMP time-exceeded for it lands in the socket's error
queue with the router's address (SO_EE_OFFENDER). The probe payload is a STUN Binding request to the server's
STUN port, so a probe that reaches the server gets a normal reply instead of another ICMP error (servers
rate-limit ICMP; we keep their budget for the port-filter probes).

TCP: a SYN with a small TTL toward the server's STUN-over-TCP port. Linux queues the ICMP error a connecting
socket receives just the same (tcp_v4_err -> ip_icmp_error, with IP_RECVERR set) and fails the connect with
EHOSTUNREACH; the SYN that reaches the server completes the handshake (or is refused): the path's end. This
sees the whole path where a filter drops outbound UDP after the first router.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable

from nodereach.icmp import (
    ERRQUEUE_ANCBUF,
    ICMP6_TIME_EXCEEDED,
    ICMP_TIME_EXCEEDED,
    IP_RECVERR,
    IPV6_RECVERR,
    IcmpError,
    parse_errqueue,
)
from nodereach.net import prefer_stable_source
from nodereach.stun import message as M

__all__ = ["IP_RECVERR", "parse_errqueue", "trace", "trace_tcp"]  # IP_RECVERR, parse_errqueue: re-exported

RESENDS = 2
"""Silent TTLs are probed again twice: at 1.5 RTO and 3.5 RTO after the first send."""
Hop = tuple[int, str | None, bool]
"""(ttl, router address or None, final: the probe reached the destination or an unreachable error)."""


class _TtlSocket:
    def __init__(self, ttl: int, dest: tuple[str, int], done: asyncio.Future[tuple[int, str | None, bool]]):
        self.ttl = ttl
        self.dest = dest
        self.done = done
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        self.sock.connect(dest)
        self.payload = M.encode_message(M.binding_request())

    def send(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.send(self.payload)

    def readable(self) -> None:
        while True:
            try:
                _data, anc, _flags, _addr = self.sock.recvmsg(512, ERRQUEUE_ANCBUF, socket.MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            parsed = parse_errqueue(anc)
            if parsed and not self.done.done():
                icmp_type, _code, offender = parsed
                self.done.set_result((self.ttl, offender, icmp_type != ICMP_TIME_EXCEEDED))
        while True:
            try:
                data = self.sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # a pending socket error (already read from the error queue)
            if data and not self.done.done():
                self.done.set_result((self.ttl, self.dest[0], True))  # reached the server itself

    def close(self) -> None:
        self.sock.close()


async def trace(dest: tuple[str, int], *, max_ttl: int, deadline: Callable[[], float],
                rto: Callable[[], float]) -> list[str | None]:
    """Addresses answering at TTL 1..max_ttl (None: silent), cut after the destination is reached.
    `deadline()` and `rto()` are re-read as the RTT estimate appears."""
    loop = asyncio.get_running_loop()
    probes: list[_TtlSocket] = []
    try:
        for ttl in range(1, max_ttl + 1):
            fut: asyncio.Future[tuple[int, str | None, bool]] = loop.create_future()
            try:
                p = _TtlSocket(ttl, dest, fut)
            except OSError:
                break
            probes.append(p)
            loop.add_reader(p.sock.fileno(), p.readable)
            p.send()
        start = time.monotonic()
        resends = 0
        while True:
            pending = [p.done for p in probes if not p.done.done()]
            if not pending:
                break
            now = time.monotonic()
            end = deadline()
            if now >= end:
                break
            resend_at = start + rto() * (1.5 if resends == 0 else 3.5) if resends < RESENDS else end
            wait = min(end, resend_at) - now if resend_at > now else min(end - now, 0.02)
            await asyncio.wait(pending, timeout=max(0.0, min(wait, 0.05)))
            if resends < RESENDS and time.monotonic() >= resend_at:
                resends += 1
                for p in probes:
                    if not p.done.done():
                        p.send()
        hops: list[str | None] = []
        for p in probes:
            if p.done.done():
                _ttl, addr, final = p.done.result()
                hops.append(addr)
                if final:
                    break
            else:
                hops.append(None)
        while hops and hops[-1] is None:
            hops.pop()
        return hops
    finally:
        for p in probes:
            with contextlib.suppress(Exception):
                loop.remove_reader(p.sock.fileno())
            p.close()
            if not p.done.done():
                p.done.cancel()


def _ttl_options(family: socket.AddressFamily) -> tuple[tuple[int, int], tuple[int, int], int]:
    """(level/option of RECVERR, of the hop limit, the ICMP type meaning "time exceeded") for a family."""
    if family == socket.AF_INET6:
        return (socket.IPPROTO_IPV6, IPV6_RECVERR), (socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS), \
            ICMP6_TIME_EXCEEDED
    return (socket.IPPROTO_IP, IP_RECVERR), (socket.IPPROTO_IP, socket.IP_TTL), ICMP_TIME_EXCEEDED


def _queued_error(sock: socket.socket) -> IcmpError | None:
    try:
        _data, anc, _flags, _addr = sock.recvmsg(512, ERRQUEUE_ANCBUF, socket.MSG_ERRQUEUE)
    except OSError:
        return None
    return parse_errqueue(anc)


async def _tcp_syn(dest: tuple[str, int], ttl: int) -> Hop | None:
    """One TTL-limited TCP SYN: the router whose ICMP error came back, or the destination itself when the
    handshake completed or was refused; None when nothing usable came (the caller's deadline ends it)."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in dest[0] else socket.AF_INET
    recverr, hops, time_exceeded = _ttl_options(family)
    sock = socket.socket(family, socket.SOCK_STREAM)
    prefer_stable_source(sock)
    try:
        sock.setblocking(False)
        sock.setsockopt(*recverr, 1)
        sock.setsockopt(*hops, ttl)
        try:
            await loop.sock_connect(sock, dest)
            return ttl, dest[0], True
        except ConnectionRefusedError:
            error = _queued_error(sock)  # a RST (the server) or an ICMP port/admin unreachable (a router)
            return ttl, error.offender if error is not None else dest[0], True
        except OSError:
            error = _queued_error(sock)
        if error is None:
            return None  # a local error (no route): nothing learned about the path
        return ttl, error.offender, error.type != time_exceeded
    finally:
        sock.close()


def _launch(attempts: dict[asyncio.Task[Hop | None], int], dest: tuple[str, int], ttls: list[int]) -> None:
    for ttl in ttls:
        attempts[asyncio.ensure_future(_tcp_syn(dest, ttl))] = ttl


async def trace_tcp(dest: tuple[str, int], *, max_ttl: int, deadline: Callable[[], float],
                    rto: Callable[[], float]) -> list[str | None]:
    """Like `trace`, with TCP SYNs toward a listening TCP port of the server (a silent TTL gets a fresh SYN at
    1.5 and 3.5 RTO: the kernel would wait a whole second before resending)."""
    attempts: dict[asyncio.Task[Hop | None], int] = {}
    found: dict[int, Hop] = {}
    start = time.monotonic()
    resends = 0
    try:
        _launch(attempts, dest, list(range(1, max_ttl + 1)))
        while True:
            final = min((t for t, (_ttl, _addr, last) in found.items() if last), default=max_ttl + 1)
            silent = [t for t in range(1, min(final, max_ttl + 1)) if t not in found]
            now = time.monotonic()
            end = deadline()
            if not silent or now >= end:
                break
            resend_at = start + rto() * (1.5 if resends == 0 else 3.5) if resends < RESENDS else end
            if now >= resend_at:
                resends += 1
                _launch(attempts, dest, silent)
                continue
            pending = [t for t in attempts if not t.done()]
            if not pending:
                await asyncio.sleep(max(0.0, min(end, resend_at) - now))
                continue
            done, _ = await asyncio.wait(pending, timeout=max(0.0, min(end, resend_at) - now),
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                hop = task.result() if not task.cancelled() and task.exception() is None else None
                if hop is not None and hop[0] not in found:
                    found[hop[0]] = hop
    finally:
        for task in attempts:
            task.cancel()
        await asyncio.gather(*attempts, return_exceptions=True)
    hops: list[str | None] = []
    for ttl in range(1, max_ttl + 1):
        hop = found.get(ttl)
        hops.append(hop[1] if hop is not None else None)
        if hop is not None and hop[2]:
            break
    while hops and hops[-1] is None:
        hops.pop()
    return hops
