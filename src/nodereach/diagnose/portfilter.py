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
                        return PortPath(port, "tcp", state)
                attempts = [t for t in attempts if not t.done()]
            if not attempts and started >= tries:
                return PortPath(port, "tcp", "error")  # every attempt failed locally: nothing to conclude
            if time.monotonic() >= end():
                return PortPath(port, "tcp", "silent")
    finally:
        for t in attempts:
            t.cancel()


async def _udp(host: str, port: int, wait_s: Deadline, rto: float, tries: int = 4) -> PortPath:
    end = _end_fn(wait_s)
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

    try:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 0)
        sock.connect((host, port))
        loop.add_reader(sock.fileno(), readable)
        # One send per RTO (one at most in flight: a closed port's ICMP is rate limited by the server, a burst of
        # ~6 then 1/s per requester, shared by every UDP port probed), as many as the loss asks, at most 6.
        sends = min(tries, UDP_MAX_SENDS)
        sent = 0
        next_send = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= end():
                return PortPath(port, "udp", "silent")
            if sent < sends and now >= next_send:
                with contextlib.suppress(OSError):
                    sock.send(b"nodereach port-path probe")
                sent += 1
                next_send = now + rto
            stop = min(end(), next_send if sent < sends else end(), now + max(0.05, rto))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, stop - time.monotonic())):
                    return PortPath(port, "udp", await asyncio.shield(fut))
    except OSError:
        return PortPath(port, "udp", "error")
    finally:
        with contextlib.suppress(Exception):
            loop.remove_reader(sock.fileno())
        sock.close()


async def probe_paths(host: str, tcp_ports: list[int], udp_ports: list[int], *, wait_s: Deadline,
                      rto: float, tries: int = 4, on_answer: Callable[[int], None] | None = None,
                      pace: float | None = None) -> list[PortPath]:
    """Probe each port (plus the control port) in parallel, `tries` attempts each (from the measured loss),
    TCP attempts `pace` apart."""
    tcp = sorted({*tcp_ports, CONTROL_PORT})
    udp = sorted({*udp_ports, CONTROL_PORT}) if udp_ports else []
    jobs = [_tcp(host, p, wait_s, rto, tries, on_answer, pace) for p in tcp]
    jobs += [_udp(host, p, wait_s, rto, tries) for p in udp]
    return list(await asyncio.gather(*jobs))


def blocked_ports(results: Sequence[PortPath], protocol: Transport) -> list[int] | None:
    """Ports silent while another port of the same protocol answered; None when nothing can be concluded."""
    mine = [r for r in results if r.protocol == protocol]
    answered = [r for r in mine if r.state in ("open", "refused")]
    if not answered:
        return None
    return sorted(r.port for r in mine if r.state == "silent" and r.port != CONTROL_PORT)
