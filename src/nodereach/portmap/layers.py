"""Is the gateway's reported external address really on the gateway? One TTL=1 datagram tells.

A datagram to the gateway's own WAN address is delivered locally by the gateway (hop 1). If instead the
gateway *forwards* it, the TTL runs out there and it answers ICMP time-exceeded: the external address it
reported (often learned by STUN, as miniupnpd does) belongs to another NAT in front of it, so a mapping on
this gateway cannot make the node reachable. Read through IP_RECVERR: no root needed. Silence proves
nothing (routers may not send ICMP), so the answer is True / False / None.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from nodereach.icmp import ERRQUEUE_ANCBUF, ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED, IP_RECVERR, IcmpError, parse_errqueue

PROBE_PORT = 9  # discard: nothing answers, a local delivery yields port-unreachable or silence


def _read_error(sock: socket.socket) -> IcmpError | None:
    """One ICMP error from the queue; None when the queue is empty (a local error is skipped as empty)."""
    try:
        _data, ancdata, _flags, _addr = sock.recvmsg(512, ERRQUEUE_ANCBUF, socket.MSG_ERRQUEUE)
    except OSError:  # BlockingIOError: empty
        return None
    return parse_errqueue(ancdata)


async def external_on_gateway(external: str, *, wait: float = 0.5) -> tuple[bool | None, str | None]:
    """(True, None): the gateway owns `external`; (False, router): a router forwarded it further (another
    NAT in front); (None, None): no ICMP answer, unknown."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    done: asyncio.Future[tuple[bool | None, str | None]] = loop.create_future()
    try:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 1)
        sock.connect((external, PROBE_PORT))

        def readable() -> None:
            while True:
                try:
                    sock.recv(64)
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    pass
                err = _read_error(sock)
                if err is None:
                    return
                icmp_type, _code, offender = err
                if done.done():
                    continue
                if icmp_type == ICMP_TIME_EXCEEDED:
                    done.set_result((False, offender))
                elif icmp_type == ICMP_DEST_UNREACH and offender == external:
                    done.set_result((True, None))

        loop.add_reader(sock.fileno(), readable)
        try:
            for _ in range(2):
                with contextlib.suppress(OSError):
                    sock.send(b"nodereach-ttl-probe")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait / 2):
                        return await asyncio.shield(done)
            return None, None
        finally:
            loop.remove_reader(sock.fileno())
    except OSError:
        return None, None
    finally:
        sock.close()
