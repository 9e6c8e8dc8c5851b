"""One request/response exchange with the gateway over UDP port 5351, with retransmission and a deadline.

The socket is connected to (gateway, 5351), so the kernel drops datagrams from any other address or port
(spoofed or stray replies never reach the parser); we check the source again anyway. RFC 6886 §3.1
retransmission: first resend after 250 ms, doubling. RFC 6887 §8.1.1 asks for IRT = 3 s, which would
exceed our short deadlines on a LAN, so PCP uses the same doubling schedule with its ±10 % jitter.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any, TypeVar

from nodereach.net import canonical
from nodereach.portmap.errors import GatewayTimeout, MalformedMessage, NotAvailable, PortmapError

T = TypeVar("T")

INITIAL_RTO = 0.25
MAX_DATAGRAM = 1100  # RFC 6887 §7: nothing longer is a valid reply; the read buffer is bounded too


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, peer: tuple[str, int]) -> None:
        self.peer = peer
        self.queue: asyncio.Queue[bytes | Exception] = asyncio.Queue(maxsize=64)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, ...]) -> None:
        if (str(addr[0]).split("%", 1)[0], addr[1]) != self.peer:  # IPv6 link-local sources carry %scope
            return
        if not self.queue.full():
            self.queue.put_nowait(data[:MAX_DATAGRAM + 1])

    def error_received(self, exc: Exception) -> None:
        if not self.queue.full():
            self.queue.put_nowait(exc)


async def exchange(gateway: str, port: int, build: Callable[[str], bytes], parse: Callable[[bytes], T | None], *,
                   wait: float, what: str, initial_rto: float = INITIAL_RTO, local: str | None = None) -> T:
    """Send build(local_address) until parse() accepts a reply or the deadline passes.

    parse returns None for a reply that is not ours (ignored) and raises MalformedMessage for garbage,
    which is also ignored while waiting: a hostile neighbour cannot make us give up before the deadline.
    `local` binds our end (the address a PCP pinhole is for, when the kernel would pick another source).
    """
    loop = asyncio.get_running_loop()
    try:
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _Proto((canonical(gateway.split("%", 1)[0]), port)), remote_addr=(gateway, port),
            local_addr=(local, 0) if local else None)
    except OSError as exc:  # no route (link down, address gone): a gateway problem, not a crash
        raise PortmapError(f"{what}: cannot reach {gateway}:{port}: {exc.strerror or exc}") from exc
    try:
        local = transport.get_extra_info("sockname")[0]
        request = build(local)
        deadline = loop.time() + wait
        rto = initial_rto
        malformed: MalformedMessage | None = None
        refused = False
        next_send = loop.time()
        while True:
            now = loop.time()
            if now >= deadline:
                break
            if now >= next_send:
                transport.sendto(request)
                next_send = now + rto * (1 + random.uniform(-0.1, 0.1))
                rto *= 2
            try:
                # Not asyncio.wait_for: on Python 3.11 it returns a reply that arrives in the same loop
                # iteration as a cancel and drops the cancel (CPython gh-86296; 3.12 rebuilt it on timeouts,
                # gh-96764), so a keeper stopped while a reply was in flight ran on forever. asyncio.timeout
                # keeps the cancel.
                async with asyncio.timeout_at(min(next_send, deadline)):
                    item = await proto.queue.get()
            except TimeoutError:
                continue
            if isinstance(item, ConnectionRefusedError):
                refused = True  # ICMP port unreachable: nothing listens there
                break
            if isinstance(item, Exception):
                continue  # other ICMP errors (host unreachable while the link flaps): keep trying
            try:
                result = parse(item)
            except MalformedMessage as exc:
                malformed = exc
                continue
            if result is not None:
                return result
        if malformed is not None:
            raise malformed
        if refused:
            raise NotAvailable(f"{what}: nothing listens on {gateway}:{port} (port unreachable)")
        raise GatewayTimeout(f"{what}: no answer from {gateway}:{port} within {wait:.1f} s")
    finally:
        transport.close()
