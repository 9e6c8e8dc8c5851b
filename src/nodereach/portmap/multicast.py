"""Join an IPv4 multicast group on the LAN interface and receive its datagrams (SSDP, PCP/NAT-PMP notices)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable


async def listen_group(group: str, port: int, local_address: str,
                       protocol_factory: Callable[[], asyncio.DatagramProtocol],
                       ) -> asyncio.DatagramTransport | None:
    """A transport bound to group:port and joined on local_address's interface; None when that is
    impossible (e.g. the port is held by a daemon without SO_REUSEPORT): callers then do without."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(AttributeError, OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((group, port))
        mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(local_address))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        sock.setblocking(False)
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(protocol_factory, sock=sock)
        return transport
    except OSError:
        sock.close()
        return None
