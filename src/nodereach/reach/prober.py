"""Server-side probe drivers: try to reach one address:port over TCP or UDP, within a deadline.

Thin asyncio I/O around reach.codec. The caller (service) has already decided the target is the requester's
own address; this module only sends to the (host, port) it is given and never more bytes than `budget`.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from nodereach.reach import codec

A = TypeVar("A")

# On-wire sizes used for the amplification budget (IPv4 headers; IPv6 adds IPV6_EXTRA per packet).
TCP_SYN_BYTES = 60
TCP_SEGMENT_OVERHEAD = 52
UDP_OVERHEAD = 28
IPV6_EXTRA = 20
"""An IPv6 header is 20 bytes longer than an IPv4 one (per packet, on both sides of the budget)."""


def ip_extra(ipv6: bool) -> int:
    """What one packet costs more than the IPv4 sizes above."""
    return IPV6_EXTRA if ipv6 else 0


@dataclass(slots=True)
class ProbeOutcome:
    reachable: bool | None
    reason: str
    """ok | refused | timeout | reset | unreachable | no-echo | unverified | token-mismatch | error"""
    rtt_ms: float | None = None
    verified: bool = False
    """True when the listener echoed our token (nodereach's own listener on the requester's host)."""
    source: str | None = None
    bytes_sent: int = 0


def reason_for(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES,
                                                  errno.EPERM, errno.EHOSTDOWN):
        return "unreachable"
    return "error"


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def make_socket(host: str, kind: socket.SocketKind, source: str | None) -> socket.socket:
    sock = socket.socket(_family(host), kind)
    try:
        sock.setblocking(False)
        if source is not None:
            sock.bind((source, 0))
    except BaseException:
        sock.close()
        raise
    return sock


def syns(seconds: float) -> int:
    """SYNs the kernel sends within `seconds` (initial RTO 1 s, doubling: at 0, 1 s, 3 s)."""
    return 1 + (seconds > 1.0) + (seconds > 3.0)


SCHEDULE = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
"""When a probe's tries go out, as fractions of its deadline T: fresh SYNs (TCP) or datagrams (UDP) spread over
the first half, the second half left for the last one's answer (the client derives T from its RTT). Each try
is an independent chance: under 10% loss each way (19% per round trip) six miss a reachable port with
probability 5e-5, where one SYN and the kernel's own retransmission a second later would take > 1 s and still
miss it 3.6% of the time."""


def syn_deadline(timeout: float, fits: Callable[[float], bool]) -> float:
    """`timeout`, or cut to 3 s, then to 1 s (the kernel's SYN retransmissions: syns()) until what a TCP try costs
    within it `fits` the byte budget; 1 s is the floor (one SYN)."""
    while timeout > 1.0 and not fits(timeout):
        timeout = 1.0 if timeout <= 3.0 else 3.0
    return timeout


def tcp_min_budget(timeout: float, ipv6: bool = False) -> int:
    """Bytes the cheapest TCP probe may cost: every SYN the deadline allows, or one SYN + ACK + FIN + ACK."""
    extra = ip_extra(ipv6)
    return max(syns(timeout) * (TCP_SYN_BYTES + extra), TCP_SYN_BYTES + extra + 3 * (TCP_SEGMENT_OVERHEAD + extra))


def tcp_tries(timeout: float, budget: int, ipv6: bool = False, connected: int | None = None) -> int:
    """Fresh connection attempts the byte budget allows within `timeout`: each costs the SYNs the kernel sends
    while it lives (retransmissions after 1 s included), and the one that connects also what follows its
    handshake: `connected` bytes (by default ACK, FIN and last ACK; a proof adds its request and the ACKs of
    the answer)."""
    extra = ip_extra(ipv6)
    cost = 3 * (TCP_SEGMENT_OVERHEAD + extra) if connected is None else connected
    for tries, at in enumerate(SCHEDULE):
        cost += syns(timeout * (1.0 - at)) * (TCP_SYN_BYTES + extra)
        if cost > budget:
            return tries
    return len(SCHEDULE)


@dataclass(slots=True)
class Attempt:
    sock: socket.socket
    started: float


def syn_bytes(attempts: list[Attempt], now: float, extra: int) -> int:
    """On-wire bytes of every SYN the attempts sent until `now` (the kernel's retransmissions too)."""
    return sum(syns(now - a.started) for a in attempts) * (TCP_SYN_BYTES + extra)


async def first_connection(host: str, port: int, source: str | None, span: float, tries: int,
                            attempts: list[Attempt]) -> tuple[Attempt | None, str, float]:
    """Fresh connection attempts at SCHEDULE[i] x span until one connects or is answered (refused, reset,
    unreachable), at most `span` seconds: (the deciding attempt or None, reason, when). Every attempt made is
    appended to `attempts` (the caller closes them and counts their SYNs)."""
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    deadline = start + span
    running: dict[asyncio.Future[None], Attempt] = {}
    try:
        while True:
            now = time.monotonic()
            if len(attempts) < tries and now >= start + SCHEDULE[len(attempts)] * span:
                try:
                    sock = make_socket(host, socket.SOCK_STREAM, source)
                except OSError:
                    return None, "error", now
                attempt = Attempt(sock, now)
                attempts.append(attempt)
                running[asyncio.ensure_future(loop.sock_connect(sock, (host, port)))] = attempt
                continue
            if now >= deadline:
                return None, "timeout", now
            if not running and len(attempts) >= tries:
                return None, "error", now  # every attempt failed locally: nothing learned
            wake = deadline if len(attempts) >= tries else min(deadline, start + SCHEDULE[len(attempts)] * span)
            if not running:
                await asyncio.sleep(max(0.0, wake - now))
                continue
            done, _ = await asyncio.wait(running, timeout=max(0.0, wake - now), return_when=asyncio.FIRST_COMPLETED)
            for fut in done:
                attempt = running.pop(fut)
                exc = fut.exception()
                if exc is None:
                    return attempt, "ok", time.monotonic()
                reason = reason_for(exc)
                if reason != "error":  # the target (or a router on the way) answered: refused, reset, unreachable
                    return attempt, reason, time.monotonic()
    finally:
        for fut in running:
            fut.cancel()


async def probe_tcp(host: str, port: int, *, token: bytes | None, source: str | None, timeout: float,  # noqa: ASYNC109
                    budget: int) -> ProbeOutcome:
    """A completed handshake proves the port open; an echoed token proves it is nodereach's listener.

    Fresh connection attempts go out on SCHEDULE (as many as the byte budget allows), the first answer of any
    decides. Byte accounting (on-wire, headers included): every SYN sent (the kernel's retransmissions too),
    then on success our ACK, FIN and last ACK (+ the token segment). The deadline is shortened so that at least
    one attempt with its SYN retransmissions fits the budget.
    """
    loop = asyncio.get_running_loop()
    ipv6 = _family(host) == socket.AF_INET6
    extra = ip_extra(ipv6)
    timeout = syn_deadline(timeout, lambda t: tcp_tries(t, budget, ipv6) > 0)
    tries = tcp_tries(timeout, budget, ipv6)
    if tries == 0:
        return ProbeOutcome(None, "error", source=source)
    attempts: list[Attempt] = []
    try:
        winner, reason, at = await first_connection(host, port, source, timeout, tries, attempts)
        syn_sent = syn_bytes(attempts, at, extra)
        if winner is None or reason != "ok":
            if reason == "error" and not attempts:
                return ProbeOutcome(None, "error", source=source)
            # A RST or ICMP error came back: its delay is a round trip too (a timeout has none).
            rtt_ms = (at - winner.started) * 1000 if winner is not None else None
            return ProbeOutcome(None if reason == "error" else False, reason, rtt_ms=rtt_ms, source=source,
                                bytes_sent=syn_sent)
        sock = winner.sock
        rtt = at - winner.started
        src = sock.getsockname()[0]
        sent = syn_sent + 3 * (TCP_SEGMENT_OVERHEAD + extra)
        outcome = ProbeOutcome(True, "ok", rtt_ms=rtt * 1000, source=src, bytes_sent=sent)
        for other in attempts:  # the others stop now (their SYNs are counted above)
            if other is not winner:
                other.sock.close()
        msg = codec.probe(token) if token else b""
        if not token or sent + len(msg) + TCP_SEGMENT_OVERHEAD + extra > budget:
            if token:
                outcome.reason = "unverified"
            return outcome
        outcome.bytes_sent += len(msg) + TCP_SEGMENT_OVERHEAD + extra
        # Wait for the echo a few RTTs (the node's own listener never answers: do not wait long for it).
        remaining = timeout - (at - attempts[0].started)
        wait = min(max(remaining, 0.1), max(0.3, 8 * rtt))
        decoder = codec.StreamDecoder()
        try:
            async with asyncio.timeout(wait):
                await loop.sock_sendall(sock, msg)
                while True:
                    data = await loop.sock_recv(sock, codec.MAX_MESSAGE)
                    if not data:
                        outcome.reason = "unverified"
                        return outcome
                    for m in decoder.feed(data):
                        if m.kind == codec.Kind.ECHO and m.token == token:
                            outcome.verified = True
                            return outcome
                        outcome.reason = "token-mismatch"
                        return outcome
        except (OSError, TimeoutError, codec.DialbackCodecError):
            outcome.reason = "unverified"
            return outcome
    finally:
        for attempt in attempts:
            attempt.sock.close()


class Decider(asyncio.DatagramProtocol, Generic[A]):
    """The protocol of a connected UDP socket whose first decision ends the exchange: an answer the subclass
    recognises (`decide`), or an ICMP error."""

    def __init__(self) -> None:
        self.done: asyncio.Future[A | str] = asyncio.get_running_loop().create_future()

    def decide(self, answer: A | str) -> None:
        if not self.done.done():
            self.done.set_result(answer)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable on a connected UDP socket: nothing listens (or a filter rejects).
        self.decide(reason_for(exc))

    @property
    def answer(self) -> A | None:
        """What decided, unless it was an ICMP error or nothing did."""
        result = self.done.result() if self.done.done() else None
        return None if isinstance(result, str) else result


class OverBudget(Exception):
    """Not even one datagram fits the byte budget."""

    def __init__(self, need: int) -> None:
        super().__init__(need)
        self.need = need


def datagram_bytes(payload: int, ipv6: bool = False) -> int:
    """On-wire bytes of one datagram carrying `payload` bytes (IP and UDP headers)."""
    return payload + UDP_OVERHEAD + ip_extra(ipv6)


async def send_datagrams(host: str, port: int, packet: bytes, decider: Decider[A], *,
                            source: str | None, timeout: float, budget: int,  # noqa: ASYNC109
                            at: Sequence[float]) -> ProbeOutcome:
    """Send `packet` to host:port at the fractions `at` of `timeout` (as many as `budget` pays for, counted
    on the wire) until the decider decides; the last wait runs to the deadline. Every datagram probe and proof
    goes through here, so nothing else decides how many bytes a request buys.

    The outcome: reachable when the decider took an answer (`decider.answer`), not reachable by an ICMP error
    (refused, unreachable: its reason), or "timeout" when nothing decided. Raises OverBudget before any
    socket exists, OSError when the socket cannot be made or connected."""
    size = datagram_bytes(len(packet), _family(host) == socket.AF_INET6)
    sends = min(len(at), budget // size)
    if sends < 1:
        raise OverBudget(size)
    sock = make_socket(host, socket.SOCK_DGRAM, source)
    try:
        sock.connect((host, port))
    except OSError:
        sock.close()
        raise
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: decider, sock=sock)
    src = sock.getsockname()[0]
    sent = 0
    start = time.monotonic()
    deadline = start + timeout
    try:
        gaps = [(b - a) * timeout for a, b in itertools.pairwise(at[:sends])]
        for gap in [*gaps, None]:
            last_send = time.monotonic()
            transport.sendto(packet)
            sent += size
            wait = (deadline - last_send) if gap is None else min(gap, deadline - last_send)
            if wait <= 0:
                break
            try:
                async with asyncio.timeout(wait):
                    result = await asyncio.shield(decider.done)
            except TimeoutError:
                continue
            rtt_ms = (time.monotonic() - last_send) * 1000
            if isinstance(result, str):
                return ProbeOutcome(False, result, rtt_ms=rtt_ms, source=src, bytes_sent=sent)
            return ProbeOutcome(True, "ok", rtt_ms=rtt_ms, source=src, bytes_sent=sent)
        return ProbeOutcome(False, "timeout", source=src, bytes_sent=sent)
    finally:
        transport.close()


class _UdpProbe(Decider[codec.Message]):
    def __init__(self, token: bytes) -> None:
        super().__init__()
        self.token = token

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            m = codec.decode(data)
        except codec.DialbackCodecError:
            return
        if m.kind == codec.Kind.ECHO and m.token == self.token:
            self.decide(m)


async def probe_udp(host: str, port: int, *, token: bytes, source: str | None, timeout: float,  # noqa: ASYNC109
                    budget: int, expect_echo: bool) -> ProbeOutcome:
    """Send the token datagram (on SCHEDULE, as many as the budget allows) and wait for the echo.

    Without an echo: `expect_echo` (the client said its own listener holds the port) makes it "not reachable,
    timeout"; otherwise UDP cannot tell (a node ignores unknown datagrams): reachable None, "no-echo".
    """
    try:
        outcome = await send_datagrams(host, port, codec.probe(token), _UdpProbe(token), source=source,
                                       timeout=timeout, budget=budget, at=SCHEDULE)
    except OverBudget:
        return ProbeOutcome(None, "error", source=source)
    except OSError as exc:
        return ProbeOutcome(None, reason_for(exc), source=source)
    outcome.verified = outcome.reachable is True  # only our token's echo decides
    if outcome.reason == "timeout" and not expect_echo:
        outcome.reachable, outcome.reason = None, "no-echo"
    return outcome
