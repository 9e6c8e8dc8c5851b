"""One service of the gateway's UPnP IGD device, as both UPnP drivers hold it: discovery (SSDP, then the
description from the host that answered), the SOAP calls, the device's UUIDs and the restart watch.

`upnp_client.UpnpClient` (IPv4 port mappings, WANIPConnection) and `upnp_pinhole.UpnpPinholeClient` (IPv6
pinholes, WANIPv6FirewallControl) are subclasses that add their service's actions: a fix to discovery, to
how a call is guarded or to the restart watch is made here, once. The description parse (igd_description), the
typed arguments (igd_actions) and the guarded HTTP (portmap.http over reach.http1) are the check's probe's too;
no aiohttp, no async-upnp-client: a keeper on a UPnP-only router stays as small as on any other.

References:
- [UDA] UPnP Device Architecture 1.0 (2008), §3.2.2 (the action error codes every service shares):
  https://upnp.org/specs/arch/UPnP-arch-DeviceArchitecture-v1.0.pdf
- [IGD2] UPnP WANIPConnection:2 Service (SDCP, 2010), AddPortMapping:
  https://upnp.org/specs/gw/UPnP-gw-WANIPConnection-v2-Service.pdf
- [miniupnpd] miniupnpd 2.3.1 (the lab's router; Debian's). Files named below are at
  https://github.com/miniupnp/miniupnp/blob/miniupnpd_2_3_1/miniupnpd/
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ClassVar, Self

from nodereach.portmap import upnp_notify
from nodereach.portmap.base import Listener, Method
from nodereach.portmap.errors import PortmapError
from nodereach.portmap.gateway import Gateway
from nodereach.portmap.http import call_action, fetch_description
from nodereach.portmap.igd_actions import Value
from nodereach.portmap.igd_description import Control, Description
from nodereach.portmap.soap import ForbiddenUrl, check_url
from nodereach.portmap.ssdp import search_igd
from nodereach.portmap.ssdp_codec import Found

# UPnP action error codes (UPnPError/errorCode in a SOAP fault) that more than one service answers.
ERR_INVALID_ARGS = 402
"""Invalid Args ([UDA] §3.2.2); some routers also use it for 'no lease allowed'."""
ERR_NOT_AUTHORIZED = 606
"""Action not authorized ([IGD2] AddPortMapping). miniupnpd answers it when its permission rules refuse the
port (its sample miniupnpd.conf#L182-L186 and the lab's config allow only 1024-65535): upnpsoap.c#L568,
the rule check in upnpredirect.c#L353-L357; and (PinholeVerification in upnpsoap.c) to an AddPinhole for an
address other than the caller's."""


async def load_description(gw: Gateway, found: Found, *, wait: float, local_address: str | None = None,
                           ) -> Description:
    """The device description at found.location, fetched only from found.host (which must be on the LAN)
    within `wait` seconds. `local_address` binds our end of the connection (IPv6 pinholes: the caller must be
    the pinhole's internal client)."""
    if not gw.on_link(found.host):
        raise ForbiddenUrl(f"UPnP device {found.host} is not on the local network: refused")
    check_url(found.location, found.host)
    deadline = asyncio.get_running_loop().time() + wait
    return await fetch_description(found, deadline=deadline, local_address=local_address)


class IgdService:
    """A driver's hold on one service of the gateway's IGD device; subclasses name the service types they
    speak (`SERVICE_TYPES`) and what it means when the device offers none (`_no_service`)."""

    method: Method = "upnp"
    SERVICE_TYPES: ClassVar[tuple[str, ...]]
    """The service types this driver speaks, the preferred first."""

    def __init__(self, gw: Gateway, found: Found, description: Description, control: Control, *,
                 timeout: float, local_address: str | None = None) -> None:
        self.gateway = found.host
        self.gw = gw
        self.found = found
        self.description = description
        self.control = control
        self.timeout = timeout
        self.local_address = local_address
        """Our end of every connection to the device (None: the kernel's choice)."""

    @classmethod
    async def discover(cls, gw: Gateway, *, wait: float) -> Self:
        """SSDP search (over IPv6: ff02::c and unicast), then the description from the host that answered."""
        found = await search_igd(gw, wait=wait)
        return await cls.from_location(gw, found, wait=wait)

    @classmethod
    async def from_location(cls, gw: Gateway, found: Found, *, wait: float) -> Self:
        """Load the description at found.location (only from found.host, which must be on the LAN) and hold the
        first of SERVICE_TYPES it offers."""
        local_address = cls._http_source(gw, found)
        description = await load_description(gw, found, wait=wait, local_address=local_address)
        control = description.control(cls.SERVICE_TYPES)
        if control is None:
            raise cls._no_service(found)
        return cls(gw, found, description, control, timeout=wait, local_address=local_address)

    @classmethod
    def _http_source(cls, gw: Gateway, found: Found) -> str | None:
        """Our end of every HTTP connection to the device (None: the kernel's choice); raises when the
        device cannot serve this driver from where it answered."""
        return None

    @classmethod
    def _no_service(cls, found: Found) -> PortmapError:
        raise NotImplementedError

    @property
    def service_type(self) -> str:
        return self.control.service_type

    @property
    def uuids(self) -> list[str]:
        """The UDNs of the gateway's device tree: the USNs its own NOTIFYs carry."""
        return list(self.description.udns)

    async def watch(self, nudge: Callable[[], None]) -> Listener | None:
        """SSDP NOTIFYs from the gateway (over IPv6 on ff02::c, from its link-local address): a restart
        re-creates the mappings or re-opens the pinholes at once (upnp_notify.py)."""
        return await upnp_notify.listen(self.found.host, self.gw.local_address, self.uuids, self.found.boot_id,
                                        nudge)

    async def call(self, action: str, **values: Value) -> dict[str, str]:
        """`action` with its arguments typed by igd_actions, under `timeout`; its out-arguments. SoapFault for
        an action error (ActionNotOffered: the service has no such action), other PortmapErrors otherwise."""
        deadline = asyncio.get_running_loop().time() + self.timeout
        return await call_action(self.control, action, values, host=self.found.host, deadline=deadline,
                                 local_address=self.local_address)

    async def close(self) -> None:
        return None
