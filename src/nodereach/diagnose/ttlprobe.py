"""TTL-limited UDP probes read through IP_RECVERR (no root): which routers stand before the internet.

Each TTL gets its own connected UDP socket; an ICMP time-exceeded for it lands in the socket's error queue
with the router's address (SO_EE_OFFENDER). The probe payload is a STUN Binding request to the server's
STUN port, so a probe that reaches the server gets a normal reply instead of another ICMP error (servers
rate-limit ICMP; we keep their budget for the port-filter probes).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable

from nodereach.icmp import ERRQUEUE_ANCBUF, ICMP_TIME_EXCEEDED, IP_RECVERR, parse_errqueue
from nodereach.stun import message as M

__all__ = ["IP_RECVERR", "parse_errqueue", "trace"]  # IP_RECVERR, parse_errqueue: re-exported


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
            resend_at = start + rto() * (1.5 if resends == 0 else 3.5) if resends < 2 else end
            wait = min(end, resend_at) - now if resend_at > now else min(end - now, 0.02)
            await asyncio.wait(pending, timeout=max(0.0, min(wait, 0.05)))
            if resends < 2 and time.monotonic() >= resend_at:
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
