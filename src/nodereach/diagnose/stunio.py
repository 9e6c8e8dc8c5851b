"""Thin asyncio STUN driver for the diagnosis: many transactions per UDP socket, RTT-adaptive retransmission.

Uses nodereach.stun's sans-IO codec. The diagnosis needs control the generic client does not give: each
request's deadline comes from one shared RTT estimate (so negative answers cost a few RTTs, not seconds),
replies are kept with their source address (classification decides which source is acceptable), and the
socket also records Binding *requests* it receives (hairpinning test).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nodereach.stun import message as M
from nodereach.stun.errors import StunParseError
from nodereach.stun.framing import StreamDecoder

Addr = tuple[str, int]

INITIAL_RTO = 0.25
"""Retransmission timeout before any RTT was measured (the lab's worst case is ~100 ms RTT)."""
MIN_RTO = 0.03
MAX_DATAGRAM = 2048
BACKOFF = 1.3
"""Growth of the retransmission interval per try (gentle: loss on an access link is rarely congestion)."""
MISS_TARGET = 1e-4
"""A negative STUN answer decides a classification: the chance that every try was lost must stay below this."""
MIN_TRIES, MAX_TRIES = 4, 8


def tries_for_loss(loss: float, target: float = MISS_TARGET, lo: int = MIN_TRIES, hi: int = MAX_TRIES) -> int:
    """Fewest tries n (lo..hi) with loss**n < target: how often to ask before "no answer" means "no"."""
    if loss <= 0.0:
        return lo
    n = lo
    while n < hi and loss ** n >= target:
        n += 1
    return n


def wait_for_tries(rto: float, tries: int, backoff: float = BACKOFF) -> float:
    """Time from the first send until the reply to try number `tries` is due (sends every rto, growing by
    `backoff`; the last one gets one rto for its reply)."""
    return rto * (sum(backoff ** k for k in range(tries - 1)) + 1.0)


class RttEstimator:
    """RFC 6298-style smoothed RTT shared by every transaction of one check."""

    def __init__(self) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.samples = 0
        self.retransmits = 0
        self.recovered = 0
        """Replies that came only after a retransmission: evidence of loss on the path."""
        self.answered_tries = 0
        self.lost_tries = 0
        """Tries of answered transactions, and how many of them went unanswered (every send before the one
        that was answered counts as lost: conservative, a spurious retransmission looks like loss)."""
        self.first_sample = asyncio.Event()
        self.provisional = False

    def add(self, rtt: float, provisional: bool = False) -> None:
        """Add a sample. A provisional one (a TCP handshake, which may hide a SYN retransmission) only seeds
        the estimate until the first real STUN sample replaces it."""
        if provisional:
            if self.srtt is None:
                self.srtt, self.rttvar, self.provisional = rtt, rtt / 2, True
                self.first_sample.set()
            return
        self.samples += 1
        self.first_sample.set()
        if self.provisional:
            self.srtt, self.provisional = None, False
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt

    @property
    def rto(self) -> float:
        if self.srtt is None:
            return INITIAL_RTO
        return max(MIN_RTO, self.srtt * 1.5 + 2 * self.rttvar + 0.01)

    def record_answer(self, tries: int) -> None:
        """A transaction was answered after `tries` sends: tries-1 of them count as lost."""
        self.answered_tries += tries
        self.lost_tries += tries - 1

    @property
    def loss(self) -> float:
        """Round-trip loss per try, estimated from answered transactions. A prior of 1 loss in 10 tries keeps a
        few lucky samples from claiming a clean path while evidence is thin, and still gives today's 4 tries on
        a path that really is clean (1/(10+n) stays under 0.1)."""
        return (self.lost_tries + 1) / (self.answered_tries + 10)

    def tries_for_negative(self) -> int:
        """How many tries a transaction needs before its silence is a negative answer (loss-aware)."""
        return tries_for_loss(self.loss)

    def negative_wait(self, rtos: float | None = None) -> float:
        """How long to wait for an answer that may never come: `rtos` retransmission timeouts if given, else
        time for as many tries as the loss seen so far requires (4..8; 4 tries take ~5 RTOs)."""
        rto = INITIAL_RTO if self.srtt is None else self.rto
        wait = rto * rtos if rtos is not None else wait_for_tries(rto, self.tries_for_negative())
        return wait if self.srtt is None else max(0.12, wait)


@dataclass
class Reply:
    source: Addr
    mapped: Addr | None
    other_address: Addr | None
    response_origin: Addr | None
    error: tuple[int, str] | None
    rtt: float
    retransmitted: bool


@dataclass
class _Pending:
    future: asyncio.Future[Reply]
    sent_at: float
    first_sent: float
    attempts: int = 1


@dataclass
class SocketStats:
    garbage: dict[Addr, int] = field(default_factory=dict)
    stray: int = 0
    refused: int = 0


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, owner: StunSocket) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[override]
        self.owner._received(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        self.owner.stats.refused += 1


class StunSocket:
    """One UDP socket; `request()` runs one transaction on it, many may run at once."""

    def __init__(self, rtt: RttEstimator, family: socket.AddressFamily = socket.AF_INET,
                 bind: Addr | None = None) -> None:
        self.rtt = rtt
        self.family = family
        self.bind = bind or (("::" if family == socket.AF_INET6 else "0.0.0.0"), 0)
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: dict[bytes, _Pending] = {}
        self.stats = SocketStats()
        self.requests_seen: dict[bytes, Addr] = {}
        self.responses_seen: dict[bytes, Addr] = {}
        self.request_event = asyncio.Event()

    async def open(self) -> StunSocket:
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind(self.bind)
        except OSError:
            sock.close()
            raise
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(lambda: _Proto(self), sock=sock)
        return self

    @property
    def local(self) -> Addr:
        assert self.transport is not None
        name = self.transport.get_extra_info("sockname")
        return name[0], name[1]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        for p in self.pending.values():
            if not p.future.done():
                p.future.cancel()
        self.pending.clear()

    def _received(self, data: bytes, addr: Addr) -> None:
        try:
            msg = M.parse_message(data)
        except StunParseError:
            self.stats.garbage[addr] = self.stats.garbage.get(addr, 0) + 1
            return
        if msg.cls == M.REQUEST and msg.method == M.BINDING:
            self.requests_seen[msg.transaction_id] = addr
            self.request_event.set()
            return
        pending = self.pending.get(msg.transaction_id)
        if pending is None or pending.future.done() or msg.cls not in (M.SUCCESS, M.ERROR):
            self.stats.stray += 1
            if msg.cls == M.SUCCESS:
                self.responses_seen[msg.transaction_id] = addr  # e.g. a RESPONSE-PORT answer (lifetime test)
                self.request_event.set()
            return
        now = time.monotonic()
        retransmitted = pending.attempts > 1
        rtt = now - pending.sent_at
        self.rtt.record_answer(pending.attempts)
        if not retransmitted:
            self.rtt.add(rtt)
        else:
            self.rtt.recovered += 1
        try:
            reply = Reply(source=addr, mapped=msg.mapped_address, other_address=msg.other_address,
                          response_origin=msg.response_origin, error=msg.error_code, rtt=rtt,
                          retransmitted=retransmitted)
        except StunParseError:
            self.stats.garbage[addr] = self.stats.garbage.get(addr, 0) + 1
            return
        pending.future.set_result(reply)

    def send_raw(self, data: bytes, dest: Addr) -> None:
        if self.transport is not None:
            self.transport.sendto(data, dest)

    async def request(self, dest: Addr, *, deadline: Callable[[], float], change_ip: bool = False,
                      change_port: bool = False, response_port: int | None = None,
                      transaction_id: bytes | None = None) -> Reply | None:
        """Send a Binding request to `dest`, retransmitting every RTO (growing 1.3x) until a reply or the
        deadline. `deadline()` is re-read after every wait: it tightens as soon as an RTT is known."""
        assert self.transport is not None
        msg = M.binding_request(transaction_id=transaction_id, change_ip=change_ip, change_port=change_port,
                                response_port=response_port)
        data = M.encode_message(msg, fingerprint=True)
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        pending = _Pending(loop.create_future(), now, now)
        self.pending[msg.transaction_id] = pending
        try:
            attempt = 0
            while True:
                if attempt:
                    self.rtt.retransmits += 1
                    pending.attempts += 1
                pending.sent_at = time.monotonic()
                try:
                    self.transport.sendto(data, dest)
                except OSError:
                    return None
                next_send = pending.sent_at + self.rtt.rto * (BACKOFF ** attempt)
                attempt += 1
                while True:
                    now = time.monotonic()
                    end = deadline()
                    if now >= end:
                        return None
                    if now >= next_send:
                        break
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(min(next_send, end) - now):
                            return await asyncio.shield(pending.future)
        finally:
            self.pending.pop(msg.transaction_id, None)
            if not pending.future.done():
                pending.future.cancel()


async def tcp_binding(dest: Addr, *, deadline: float) -> tuple[Reply | None, str | None]:
    """One Binding request over TCP (RFC 8489 framing): proves outbound TCP and gives the TCP mapping."""
    start = time.monotonic()
    timeout = deadline - start
    if timeout <= 0:
        return None, "no time left"
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(dest[0], dest[1])
            connected = time.monotonic()
            msg = M.binding_request()
            writer.write(M.encode_message(msg, fingerprint=True))
            decoder = StreamDecoder()
            while True:
                chunk = await reader.read(4096)
                if not chunk:
                    return None, "connection closed without a STUN reply"
                for raw in decoder.feed(chunk):
                    reply = M.parse_message(raw)
                    if reply.transaction_id == msg.transaction_id and reply.cls in (M.SUCCESS, M.ERROR):
                        return Reply(source=dest, mapped=reply.mapped_address, other_address=reply.other_address,
                                     response_origin=reply.response_origin, error=reply.error_code,
                                     rtt=connected - start, retransmitted=False), None
                if decoder.pending > 4096:
                    return None, "oversized reply"
    except TimeoutError:
        return None, "timeout"
    except ConnectionRefusedError:
        return None, "refused"
    except StunParseError:
        return None, "garbage reply (not STUN)"
    except OSError as exc:
        return None, exc.strerror or str(exc)
    finally:
        if writer is not None:
            writer.close()
