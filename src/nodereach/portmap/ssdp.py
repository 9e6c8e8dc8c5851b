"""SSDP search for an Internet Gateway Device that stops as soon as the gateway answers.

Our own M-SEARCH on one socket (the messages are `ssdp_codec`'s), shared by the keeper (which imports its
UPnP drivers only once an IGD answered) and the check's probe (igd_probe).
Replies count only from on-link addresses, and the LOCATION must be on the host that answered: a device
elsewhere cannot steer us to a description on another machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any

from nodereach.portmap.errors import GatewayTimeout
from nodereach.portmap.gateway import Gateway
from nodereach.portmap.multicast import listen_group
from nodereach.portmap.ssdp_codec import (
    SEARCH_TARGETS,
    SSDP_GROUP,
    SSDP_GROUP6,
    SSDP_PORT,
    Found,
    build_msearch,
    parse_search_response,
)

__all__ = ["search_igd"]

MULTICAST_HOPS = 2
"""UDA 1.1 §1.3.2: the M-SEARCH's IP TTL should default to 2 (async-upnp-client and miniupnpc send that)."""
MAX_OTHERS = 8
"""Answers of other LAN devices kept while waiting for the gateway's (a hostile device may send many)."""
Address = tuple[str, int] | tuple[str, int, int, int]
OnFound = Callable[[Found], None]


class _Replies(asyncio.DatagramProtocol):
    """Search responses: to our search socket, or to the multicast group (some routers answer there)."""

    def __init__(self, gw: Gateway, on_found: OnFound) -> None:
        self.gw = gw
        self.on_found = on_found

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        found = parse_search_response(data, str(addr[0]), self.gw.on_link)
        if found is not None:
            self.on_found(found)

    def error_received(self, exc: Exception) -> None:
        return None  # ICMP errors of the unicast search: nothing listens on the gateway's port 1900


async def _listen_group(gw: Gateway, on_found: OnFound) -> asyncio.DatagramTransport | None:
    # None when port 1900 is held by a daemon without SO_REUSEPORT: unicast answers still work
    return await listen_group(SSDP_GROUP, SSDP_PORT, gw.local_address, lambda: _Replies(gw, on_found))


def _search_socket(source: Address, v6: bool, interface_index: int | None) -> socket.socket:
    """One UDP socket for the searches and their answers, its multicast bound to the LAN interface."""
    sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if v6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, MULTICAST_HOPS)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, interface_index or 0)
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, MULTICAST_HOPS)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(str(source[0])))
        sock.bind(source)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def search_igd(gw: Gateway, *, wait: float, grace: float = 0.3) -> Found:
    """First IGD answer from the gateway itself; another on-link device only if the gateway stays silent.

    Sends M-SEARCH to the multicast group and unicast to the gateway (UDA 2.0 §1.3.2), repeating once,
    ignores the source port of replies (some routers answer from another port) and also hears answers sent
    to the multicast group instead of to us (some routers do that).
    """
    loop = asyncio.get_running_loop()
    from_gateway: asyncio.Future[Found] = loop.create_future()
    others: list[Found] = []
    first_other: asyncio.Event = asyncio.Event()

    def on_found(found: Found) -> None:
        if found.host == gw.address.split("%", 1)[0]:
            if not from_gateway.done():
                from_gateway.set_result(found)
        elif len(others) < MAX_OTHERS:
            others.append(found)
            first_other.set()

    v6 = ":" in gw.local_address
    if v6 and gw.interface_index is None:
        raise GatewayTimeout("UPnP: no interface for an IPv6 SSDP search")
    # IPv6: M-SEARCH to ff02::c on the interface toward the gateway, from our global address (miniupnpd
    # answers with a LOCATION on its global address, measured in the lab), and unicast to the gateway.
    index = gw.interface_index or 0
    source: Address = (gw.local_address, 0, 0, index) if v6 else (gw.local_address, 0)
    unicast = gw.address.split("%", 1)[0]
    group_to: Address = (SSDP_GROUP6, SSDP_PORT, 0, index) if v6 else (SSDP_GROUP, SSDP_PORT)
    unicast_to: Address = (unicast, SSDP_PORT, 0, index) if v6 else (unicast, SSDP_PORT)
    searches: list[tuple[bytes, Address]] = []
    for st in SEARCH_TARGETS:
        searches += [(build_msearch(st, ipv6=v6), group_to), (build_msearch(st, host=unicast), unicast_to)]
    try:
        sock = _search_socket(source, v6, gw.interface_index)
    except OSError as exc:
        raise GatewayTimeout(f"UPnP: cannot send an SSDP search ({exc.strerror or exc})") from exc
    transport, _ = await loop.create_datagram_endpoint(lambda: _Replies(gw, on_found), sock=sock)
    group = None
    try:
        if not v6:
            group = await _listen_group(gw, on_found)

        def send() -> None:
            for data, target in searches:
                with contextlib.suppress(OSError):
                    transport.sendto(data, target)

        send()
        resend = loop.call_later(min(0.5, wait / 3), send)
        try:
            async with asyncio.timeout(wait):
                other_wait: asyncio.Future[Any] = asyncio.ensure_future(first_other.wait())
                try:
                    await asyncio.wait([from_gateway, other_wait], return_when=asyncio.FIRST_COMPLETED)
                    if from_gateway.done():
                        return from_gateway.result()
                    # Someone else answered first; give the real gateway a short grace period.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(grace):
                            return await asyncio.shield(from_gateway)
                    return others[0]
                finally:
                    other_wait.cancel()
        except TimeoutError:
            pass
        finally:
            resend.cancel()
        if others:
            return others[0]
        raise GatewayTimeout(f"UPnP: no Internet Gateway Device answered SSDP within {wait:.1f} s")
    finally:
        transport.close()
        if group is not None:
            group.close()
