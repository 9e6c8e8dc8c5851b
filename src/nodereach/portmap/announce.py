"""Listen for the gateway's unsolicited announcements: PCP ANNOUNCE after a restart (RFC 6887 §14.1.3) and
NAT-PMP address-change notices (RFC 6886 §3.2.1), sent to 224.0.0.1:5350 over IPv4 and to the all-nodes
group ff02::1 port 5350 over IPv6.

Anyone on the LAN can send such a datagram, so its content is never trusted: it only makes the keeper poll
the gateway now instead of at the next interval. Datagrams from other sources are ignored; over IPv6 the
gateway's link-local address counts too (a router sends link-scope multicast from it). Measured: miniupnpd
2.3.1 sends its start-up ANNOUNCE to 224.0.0.1 only, so the IPv6 group matters for other PCP servers.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

from nodereach.portmap.multicast import from_gateway, listen_group

GROUP = "224.0.0.1"
GROUP6 = "ff02::1"
PORT = 5350


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, gateway: str, wake: Callable[[], None]) -> None:
        self.gateway = gateway
        self.wake = wake

    def datagram_received(self, data: bytes, addr: tuple[str | Any, ...]) -> None:
        if 2 <= len(data) <= 1100 and from_gateway(str(addr[0]), self.gateway):
            self.wake()


async def listen(gateway: str, local_address: str, wake: Callable[[], None]) -> asyncio.DatagramTransport | None:
    """Join the announcement group on the LAN interface and call wake() per announcement; None if that is
    impossible."""
    group = GROUP6 if ":" in local_address else GROUP
    return await listen_group(group, PORT, local_address, lambda: _Proto(gateway, wake))


def local_address_toward(gateway: str, port: int) -> str | None:
    """Our source address toward the gateway: a connected UDP socket asks the kernel, nothing is sent."""
    family = socket.AF_INET6 if ":" in gateway else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((gateway, port))
            return str(sock.getsockname()[0])
    except OSError:
        return None


async def listen_for(gateway: str, port: int, wake: Callable[[], None]) -> asyncio.DatagramTransport | None:
    """The PCP/NAT-PMP drivers' watch(): announcements from `gateway` on the interface that reaches it."""
    local = local_address_toward(gateway, port)
    if local is None:
        return None
    return await listen(gateway, local, wake)
