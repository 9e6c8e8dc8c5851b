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
from dataclasses import dataclass

from nodereach.diagnose.ttlprobe import IP_RECVERR

WELL_KNOWN_TCP = (30303, 4001, 6881, 8333, 9000, 443)
"""Ports P2P networks use (Ethereum, IPFS, BitTorrent, Bitcoin, Ethereum consensus) and HTTPS."""
CONTROL_PORT = 3481
"""A port next to nodereach's (normally closed): its RST / ICMP shows the server answers closed ports."""


@dataclass
class PortPath:
    port: int
    protocol: str
    state: str  # open | refused | silent | unreachable | error


async def _tcp(host: str, port: int, wait_s: float) -> PortPath:
    writer = None
    try:
        async with asyncio.timeout(wait_s):
            _r, writer = await asyncio.open_connection(host, port)
        return PortPath(port, "tcp", "open")
    except ConnectionRefusedError:
        return PortPath(port, "tcp", "refused")
    except TimeoutError:
        return PortPath(port, "tcp", "silent")
    except OSError as exc:
        state = "unreachable" if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH) else "error"
        return PortPath(port, "tcp", state)
    finally:
        if writer is not None:
            writer.close()


async def _udp(host: str, port: int, wait_s: float, rto: float) -> PortPath:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    fut: asyncio.Future[str] = loop.create_future()

    def readable() -> None:
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
        deadline = time.monotonic() + wait_s
        # Two sends at most: a closed port's ICMP is rate limited by the server (about one per second).
        for attempt in range(2):
            with contextlib.suppress(OSError):
                sock.send(b"nodereach port-path probe")
            wait = deadline - time.monotonic() if attempt else min(rto * 2, deadline - time.monotonic())
            if wait <= 0:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    return PortPath(port, "udp", await asyncio.shield(fut))
        return PortPath(port, "udp", "silent")
    except OSError:
        return PortPath(port, "udp", "error")
    finally:
        with contextlib.suppress(Exception):
            loop.remove_reader(sock.fileno())
        sock.close()


async def probe_paths(host: str, tcp_ports: list[int], udp_ports: list[int], *, wait_s: float,
                      rto: float) -> list[PortPath]:
    """Probe each port (plus the control port) in parallel."""
    tcp = sorted({*tcp_ports, CONTROL_PORT})
    udp = sorted({*udp_ports, CONTROL_PORT}) if udp_ports else []
    jobs = [_tcp(host, p, wait_s) for p in tcp] + [_udp(host, p, wait_s, rto) for p in udp]
    return list(await asyncio.gather(*jobs))


def blocked_ports(results: list[PortPath], protocol: str) -> list[int] | None:
    """Ports silent while another port of the same protocol answered; None when nothing can be concluded."""
    mine = [r for r in results if r.protocol == protocol]
    answered = [r for r in mine if r.state in ("open", "refused")]
    if not answered:
        return None
    return sorted(r.port for r in mine if r.state == "silent" and r.port != CONTROL_PORT)
