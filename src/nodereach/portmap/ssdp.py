"""SSDP search for an Internet Gateway Device that stops as soon as the gateway answers.

async-upnp-client's async_search always waits out its whole timeout; its SsdpSearchListener with a callback
lets us stop early. Replies count only from on-link addresses, and the LOCATION must be on the host that
answered: a device elsewhere cannot steer us to a description on another machine.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from async_upnp_client.search import SsdpSearchListener
from async_upnp_client.ssdp import decode_ssdp_packet, is_valid_ssdp_packet
from async_upnp_client.utils import CaseInsensitiveDict

from nodereach.portmap.errors import GatewayTimeout
from nodereach.portmap.gateway import Gateway
from nodereach.portmap.multicast import listen_group
from nodereach.portmap.upnp_notify import parse_boot_id

SEARCH_TARGETS = (
    "urn:schemas-upnp-org:device:InternetGatewayDevice:2",
    "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
)
SSDP_PORT = 1900
SSDP_GROUP = "239.255.255.250"
MAX_LOCATION = 512
MAX_DATAGRAM = 2048


class _GroupListener(asyncio.DatagramProtocol):
    """Search responses some routers send to the multicast group instead of back to the asker."""

    def __init__(self, on_reply: Callable[[CaseInsensitiveDict], None]) -> None:
        self.on_reply = on_reply

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if len(data) > MAX_DATAGRAM or not data.startswith(b"HTTP/1.1 200") or not is_valid_ssdp_packet(data):
            return
        try:
            _line, headers = decode_ssdp_packet(data, None, addr)
        except Exception:  # hostile bytes: ignore the datagram
            return
        self.on_reply(headers)


async def _listen_group(local_address: str, on_reply: Callable[[CaseInsensitiveDict], None],
                        ) -> asyncio.DatagramTransport | None:
    # None when port 1900 is held by a daemon without SO_REUSEPORT: unicast answers still work
    return await listen_group(SSDP_GROUP, SSDP_PORT, local_address, lambda: _GroupListener(on_reply))


@dataclass(frozen=True, slots=True)
class Found:
    location: str
    host: str
    st: str
    boot_id: int | None = None
    """BOOTID.UPNP.ORG of the reply (UDA 1.1): a later NOTIFY with another one means the device restarted."""


def _accept(headers: CaseInsensitiveDict, gw: Gateway) -> Found | None:
    remote = headers.get_lower("_remote_addr")
    location = headers.get_lower("_location_original") or headers.get_lower("location")
    st = headers.get_lower("st") or ""
    if not remote or not isinstance(location, str) or len(location) > MAX_LOCATION:
        return None
    source = str(remote[0])
    if not gw.on_link(source):
        return None
    if "InternetGatewayDevice" not in st and "WANIPConnection" not in st and "WANPPPConnection" not in st:
        return None
    try:
        host = urlsplit(location).hostname
    except ValueError:
        return None
    if host != source:
        return None
    return Found(location, source, st, parse_boot_id(headers.get_lower("bootid.upnp.org")))


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

    def on_reply(headers: CaseInsensitiveDict) -> None:
        found = _accept(headers, gw)
        if found is None:
            return
        if found.host == gw.address:
            if not from_gateway.done():
                from_gateway.set_result(found)
        else:
            others.append(found)
            first_other.set()

    v6 = ":" in gw.local_address
    if v6 and gw.interface_index is None:
        raise GatewayTimeout("UPnP: no interface for an IPv6 SSDP search")
    # IPv6: M-SEARCH to ff02::c on the interface toward the gateway, from our global address (miniupnpd
    # answers with a LOCATION on its global address, measured in the lab), and unicast to the gateway.
    source: tuple[str, int] | tuple[str, int, int, int] = (
        (gw.local_address, 0, 0, gw.interface_index or 0) if v6 else (gw.local_address, 0))
    unicast: tuple[str, int] | tuple[str, int, int, int] = (
        (gw.address.split("%", 1)[0], SSDP_PORT, 0, gw.interface_index or 0) if v6 else (gw.address, SSDP_PORT))
    listeners = [SsdpSearchListener(callback=on_reply, source=source, search_target=st, timeout=2)
                 for st in SEARCH_TARGETS]
    started: list[SsdpSearchListener] = []
    group = None
    try:
        if not v6:
            group = await _listen_group(gw.local_address, on_reply)
        for lst in listeners:
            await lst.async_start()
            started.append(lst)

        def send() -> None:
            for lst in started:
                with contextlib.suppress(OSError):
                    lst.async_search()
                with contextlib.suppress(OSError):
                    lst.async_search(override_target=unicast)

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
        for lst in started:
            lst.async_stop()
        if group is not None:
            group.close()
