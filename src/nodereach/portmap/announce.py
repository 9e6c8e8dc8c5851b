"""Listen for the gateway's unsolicited announcements (224.0.0.1:5350): PCP ANNOUNCE after a restart
(RFC 6887 §14.1.3) and NAT-PMP address-change notices (RFC 6886 §3.2.1).

Anyone on the LAN can send such a datagram, so its content is never trusted: it only makes the keeper poll
the gateway now instead of at the next interval. Datagrams from other sources are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable

GROUP = "224.0.0.1"
PORT = 5350


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, gateway: str, wake: Callable[[], None]) -> None:
        self.gateway = gateway
        self.wake = wake

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        if addr[0] == self.gateway and 2 <= len(data) <= 1100:
            self.wake()


async def listen(gateway: str, local_address: str, wake: Callable[[], None]) -> asyncio.DatagramTransport | None:
    """Join 224.0.0.1 on the LAN interface and call wake() per announcement; None if that is impossible."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(AttributeError, OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((GROUP, PORT))
        mreq = struct.pack("4s4s", socket.inet_aton(GROUP), socket.inet_aton(local_address))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Proto(gateway, wake), sock=sock)
        return transport
    except OSError:
        sock.close()
        return None
