"""Join a multicast group on the LAN interface and receive its datagrams (SSDP, PCP/NAT-PMP notices).

IPv4 groups are joined by the interface's address, IPv6 groups (ff02::c, ff02::1: link scope) by its index.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
from collections.abc import Callable
from pathlib import Path

IF_INET6 = (Path("/proc/thread-self/net/if_inet6"), Path("/proc/net/if_inet6"))
"""thread-self first: /proc/net is the main thread's network namespace, and a thread that entered another one
(the lab runs keepers so) would read the wrong table."""


def from_gateway(source: str, gateway: str) -> bool:
    """A multicast datagram from the gateway: its own address, or (IPv6) a link-local one, because routers
    send link-scope multicast from their link-local address (miniupnpd's NOTIFYs on ff02::c do)."""
    host = source.split("%", 1)[0]
    if host == gateway.split("%", 1)[0]:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.version == 6 and ip.is_link_local and ":" in gateway


def interface_of(address: str) -> int | None:
    """The index of the interface that holds IPv6 `address` (Linux /proc/net/if_inet6, no privileges)."""
    try:
        packed = socket.inet_pton(socket.AF_INET6, address.split("%", 1)[0]).hex()
    except (OSError, ValueError):
        return None
    for table in IF_INET6:
        try:
            lines = table.read_text().splitlines()[:4096]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) >= 2 and fields[0] == packed:
                return int(fields[1], 16)
        return None
    return None


async def listen_group(group: str, port: int, local_address: str,
                       protocol_factory: Callable[[], asyncio.DatagramProtocol],
                       ) -> asyncio.DatagramTransport | None:
    """A transport bound to group:port and joined on local_address's interface; None when that is
    impossible (e.g. the port is held by a daemon without SO_REUSEPORT): callers then do without."""
    v6 = ":" in group
    sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(AttributeError, OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if v6:
            index = interface_of(local_address)
            if index is None:
                sock.close()
                return None
            sock.bind((group, port, 0, index))  # only this group's datagrams, on this link
            mreq6 = socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", index)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq6)
        else:
            sock.bind((group, port))
            mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(local_address))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        sock.setblocking(False)
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(protocol_factory, sock=sock)
        return transport
    except OSError:
        sock.close()
        return None


class Joined:
    """Several group listeners closed as one (a driver's watch() that listens in two places)."""

    def __init__(self, transports: list[asyncio.DatagramTransport]) -> None:
        self.transports = transports

    def close(self) -> None:
        for transport in self.transports:
            transport.close()
