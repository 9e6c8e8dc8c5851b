"""Outbound policy filters: can traffic leave toward particular destination ports?

A closed port on the server answers TCP with RST and UDP with ICMP port-unreachable; either proves the path
is open. Silence on a port while another port of the same server answered means something on the way drops
that port. If every port is silent the server may simply drop closed ports: then nothing is concluded.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import msgspec

from nodereach.diagnose.ttlprobe import IP_RECVERR
from nodereach.net import Transport

WELL_KNOWN_TCP = (30303, 4001, 6881, 8333, 9000, 443)
"""Ports P2P networks use (Ethereum, IPFS, BitTorrent, Bitcoin, Ethereum consensus) and HTTPS."""
UDP_MAX_SENDS = 6
CONTROL_PORT = 3481
"""A port next to nodereach's (normally closed): its RST / ICMP shows the server answers closed ports."""


PathState = Literal["open", "refused", "silent", "unreachable", "error"]
"""open / refused: the port answered (the path is open); silent: nothing came back; unreachable: a router said
so; error: a local failure (nothing learned)."""


class PortPath(msgspec.Struct, frozen=True):
    port: int
    protocol: Transport
    state: PathState
    tries: int | None = None
    """Attempts sent (TCP connects, UDP datagrams) before the answer or the deadline; None: not counted."""


@dataclass(frozen=True)
class MoreTries:
    """When a UDP port stays silent while another UDP port of the server answered: keep asking it, one datagram
    per RTO, until `needed()` tries were made (the run's loss-aware count, stun.rtt.tries_for_evidence) or
    `hard_end()`. Its regular deadline leaves room for about three datagrams an RTO apart, and at 10% loss each
    way three all go unanswered about once in 150 (measured: a forwarded port reported blocked once in a
    reruns-off full run); a port that is really filtered pays the extra tries, every other port answers first."""

    answered: asyncio.Event
    needed: Callable[[], int]
    hard_end: Callable[[], float]


async def _tcp_once(host: str, port: int) -> PathState:
    writer = None
    try:
        _r, writer = await asyncio.open_connection(host, port)
        return "open"
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        return "unreachable" if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH) else "error"
    finally:
        if writer is not None:
            writer.close()


Deadline = float | Callable[[], float]
"""A wait in seconds, or a callable giving the absolute time.monotonic() deadline (re-read: it follows the
check's loss estimate as evidence arrives)."""


def _end_fn(wait_s: Deadline) -> Callable[[], float]:
    if callable(wait_s):
        return wait_s
    end = time.monotonic() + wait_s
    return lambda: end


async def _tcp(host: str, port: int, wait_s: Deadline, rto: float, tries: int = 4,
               on_answer: Callable[[int], None] | None = None, pace: float | None = None) -> PortPath:
    """Fresh connection attempts every `pace` (default 1.5 RTO; the kernel would wait a whole second before
    resending a lost SYN), `tries` of them (more when loss was measured: silence means "blocked"); the first
    answer of any attempt decides. on_answer(attempts started) feeds the check's loss estimate."""
    end = _end_fn(wait_s)
    gap = max(0.01, pace) if pace is not None else max(0.05, rto * 1.5)
    attempts: list[asyncio.Task[PathState]] = []
    started = 0
    try:
        while True:
            attempts.append(asyncio.ensure_future(_tcp_once(host, port)))
            started += 1
            next_attempt = time.monotonic() + gap if started < tries else float("inf")
            while attempts:
                now = time.monotonic()
                stop = min(end(), next_attempt, now + max(0.05, rto))
                if now >= min(end(), next_attempt):
                    break
                done, _ = await asyncio.wait(attempts, timeout=stop - now, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    state = t.result()
                    if state in ("open", "refused", "unreachable"):
                        if on_answer is not None and state != "unreachable":
                            on_answer(started)
                        return PortPath(port, "tcp", state, started)
                attempts = [t for t in attempts if not t.done()]
            if not attempts and started >= tries:
                return PortPath(port, "tcp", "error", started)  # every attempt failed locally: nothing to conclude
            if time.monotonic() >= end():
                return PortPath(port, "tcp", "silent", started)
    finally:
        for t in attempts:
            t.cancel()


async def _udp(host: str, port: int, wait_s: Deadline, rto: float, tries: int = 4,
               more: MoreTries | None = None) -> PortPath:
    regular_end = _end_fn(wait_s)
    sent = 0
    last_send = 0.0

    def end() -> float:
        """The regular deadline, or, while another UDP port answered and this one is silent, time for the tries
        the loss asks for (`more`), the last one's answer included."""
        base = regular_end()
        if more is None or not more.answered.is_set():
            return base
        if sent < more.needed():
            return max(base, more.hard_end())
        return max(base, min(more.hard_end(), last_send + rto))

    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    fut: asyncio.Future[PathState] = loop.create_future()

    def readable() -> None:
        state: PathState
        try:
            sock.recv(2048)
            state = "open"
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionRefusedError:
            state = "refused"
        except OSError as exc:
            state = "unreachable" if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH) else "error"
        if not fut.done():
            fut.set_result(state)
            if more is not None and state in ("open", "refused"):
                more.answered.set()

    try:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 0)
        sock.connect((host, port))
        loop.add_reader(sock.fileno(), readable)
        # One send per RTO (one at most in flight: a closed port's ICMP is rate limited by the server, a burst of
        # ~6 then 1/s per requester, shared by every UDP port probed), as many as the loss asks, at most 6.
        regular = min(tries, UDP_MAX_SENDS)
        next_send = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= end():
                return PortPath(port, "udp", "silent", sent)
            sends = max(regular, more.needed()) if more is not None and more.answered.is_set() else regular
            if sent < sends and now >= next_send:
                with contextlib.suppress(OSError):
                    sock.send(b"nodereach port-path probe")
                sent += 1
                last_send = now
                next_send = now + rto
            stop = min(end(), next_send if sent < sends else end(), now + max(0.05, rto))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, stop - time.monotonic())):
                    return PortPath(port, "udp", await asyncio.shield(fut), sent)
    except OSError:
        return PortPath(port, "udp", "error", sent)
    finally:
        with contextlib.suppress(Exception):
            loop.remove_reader(sock.fileno())
        sock.close()


async def probe_paths(host: str, tcp_ports: list[int], udp_ports: list[int], *, wait_s: Deadline,
                      rto: float, tries: int = 4, on_answer: Callable[[int], None] | None = None,
                      pace: float | None = None, needed: Callable[[], int] | None = None,
                      hard_end: Callable[[], float] | None = None) -> list[PortPath]:
    """Probe each port (plus the control port) in parallel, `tries` attempts each (from the measured loss),
    TCP attempts `pace` apart. With `needed` and `hard_end`, a UDP port silent while another answered gets
    the tries the loss asks for (MoreTries)."""
    tcp = sorted({*tcp_ports, CONTROL_PORT})
    udp = sorted({*udp_ports, CONTROL_PORT}) if udp_ports else []
    more = MoreTries(asyncio.Event(), needed, hard_end) if needed is not None and hard_end is not None else None
    jobs = [_tcp(host, p, wait_s, rto, tries, on_answer, pace) for p in tcp]
    jobs += [_udp(host, p, wait_s, rto, tries, more) for p in udp]
    return list(await asyncio.gather(*jobs))


def _silence_counts(r: PortPath, needed: int | None) -> bool:
    """Silence is an answer ("filtered") only after as many tries as the run's loss asks for."""
    return r.tries is None or needed is None or r.tries >= needed


def blocked_ports(results: Sequence[PortPath], protocol: Transport, needed: int | None = None) -> list[int] | None:
    """Ports silent, after `needed` tries (the run's loss-aware count; None: any), while another port of the
    same protocol answered; None when nothing can be concluded."""
    mine = [r for r in results if r.protocol == protocol]
    answered = [r for r in mine if r.state in ("open", "refused")]
    if not answered:
        return None
    return sorted(r.port for r in mine if r.state == "silent" and r.port != CONTROL_PORT
                  and _silence_counts(r, needed))


def unsettled_ports(results: Sequence[PortPath], protocol: Transport, needed: int | None) -> list[PortPath]:
    """Silent ports whose tries were too few for the loss to call them filtered (the run ended first)."""
    mine = [r for r in results if r.protocol == protocol]
    if not any(r.state in ("open", "refused") for r in mine):
        return []
    return [r for r in mine if r.state == "silent" and r.port != CONTROL_PORT and not _silence_counts(r, needed)]
