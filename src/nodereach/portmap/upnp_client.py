"""UPnP IGD v1/v2 driver through async-upnp-client, with the workarounds real routers need.

Pitfalls handled (see docs/portmap.md): leases are always sent as plain integers in raw actions (the
library's timedelta path sends `.seconds`, turning 7 days into 0); renewals send NewRemoteHost="" (the
library's 0.0.0.0 makes miniupnpd answer 718 to its own client); 718 conflicts move to another stable
external port or AddAnyPortMapping (whose NewReservedPort is read from the raw reply); 725/402
"permanent leases only" retries with 0 and remembers to delete on exit. Every mapping is read back with
GetSpecificPortMappingEntry: a router that says yes but maps another host is an error, not a success.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import typing
from typing import Any

from async_upnp_client.client import UpnpDevice, UpnpService
from async_upnp_client.client_factory import UpnpFactory
from async_upnp_client.exceptions import UpnpError

from nodereach.net import Transport
from nodereach.portmap.base import Grant, Method, Poll, Slot
from nodereach.portmap.errors import MalformedMessage, PortmapError
from nodereach.portmap.gateway import Gateway
from nodereach.portmap.http import ForbiddenUrl, GuardedRequester, SoapFault, check_url, parse_soap
from nodereach.portmap.ssdp import Found, search_igd

SERVICE_TYPES = (
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
)
DESCRIPTION = "nodereach"
MAX_LIST = 512
"""Most entries read from GetGenericPortMappingEntry (a lying router could claim millions)."""

ERR_NO_SUCH_ENTRY = 714
ERR_BAD_INDEX = 713
ERR_CONFLICT = 718
ERR_PERMANENT_ONLY = 725
ERR_INVALID_ARGS = 402
ERR_SAME_PORT_REQUIRED = 724
ERR_OTHER_MECHANISM = 729


def stable_ports(local: str, protocol: str, internal_port: int, count: int = 4) -> list[int]:
    """The internal port first, then external ports derived from (host, protocol, port): the same
    candidates after every restart, so peers that learned the endpoint keep finding it."""
    ports = [internal_port] if internal_port >= 1024 else []
    seed = f"{local}/{protocol}/{internal_port}".encode()
    i = 0
    while len(ports) < count + 1:
        digest = hashlib.sha256(seed + bytes([i])).digest()
        port = 1024 + int.from_bytes(digest[:4], "big") % (65535 - 1024)
        if port not in ports:
            ports.append(port)
        i += 1
    return ports


class UpnpClient:
    method: Method = "upnp"

    def __init__(self, gw: Gateway, found: Found, device: UpnpDevice, service: UpnpService, *, timeout: float) -> None:
        self.gateway = found.host
        self.gw = gw
        self.found = found
        self.device = device
        self.service = service
        # the factory was built with our GuardedRequester, so every service carries it
        self.requester = typing.cast(GuardedRequester, service.requester)
        self.timeout = timeout
        self.permanent_only = False

    @classmethod
    async def discover(cls, gw: Gateway, *, wait: float) -> UpnpClient:
        """SSDP search, then the description (same host as the SSDP reply) and a WAN*Connection service."""
        found = await search_igd(gw, wait=wait)
        return await cls.from_location(gw, found, wait=wait)

    @classmethod
    async def from_location(cls, gw: Gateway, found: Found, *, wait: float) -> UpnpClient:
        """Load the description at found.location (only from found.host, which must be on the LAN)."""
        if not gw.on_link(found.host):
            raise ForbiddenUrl(f"UPnP device {found.host} is not on the local network: refused")
        check_url(found.location, found.host)
        requester = GuardedRequester(found.host, timeout=wait)
        try:
            async with asyncio.timeout(wait * 2):
                device = await UpnpFactory(requester, non_strict=True).async_create_device(found.location)
        except ForbiddenUrl:
            raise
        except (UpnpError, TimeoutError, ValueError, KeyError, AttributeError, TypeError) as exc:
            raise PortmapError(f"UPnP: unusable device description at {found.location}: "
                               f"{type(exc).__name__}: {str(exc)[:200]}") from exc
        for stype in SERVICE_TYPES:
            for svc in device.all_services:
                if svc.service_type == stype:
                    check_url(svc.control_url, found.host)
                    return cls(gw, found, device, svc, timeout=wait)
        raise PortmapError(f"UPnP: {found.location} offers no WANIPConnection/WANPPPConnection service")

    @property
    def version(self) -> int:
        return int(self.service.service_type.rsplit(":", 1)[-1])

    async def call(self, action: str, **kwargs: Any) -> dict[str, str]:
        """Raw SOAP action: request built by the library, reply parsed here (bounded, defusedxml)."""
        if not self.service.has_action(action):
            raise PortmapError(f"UPnP: the gateway does not offer {action}")
        try:
            request = self.service.action(action).create_request(request_timeout=self.timeout, **kwargs)
        except Exception as exc:  # voluptuous/ValueError from a lying SCPD's argument types
            raise PortmapError(f"UPnP: cannot build {action}: {str(exc)[:200]}") from exc
        check_url(request.url, self.found.host)
        try:
            response = await self.requester.async_http_request(request)
        except UpnpError as exc:
            raise PortmapError(f"UPnP {action}: {str(exc)[:200]}") from exc
        return parse_soap(action, response.status_code, response.body or "")

    async def external_address(self) -> str | None:
        out = await self.call("GetExternalIPAddress")
        address = out.get("NewExternalIPAddress", "")
        if not address:
            return None
        try:
            return str(ipaddress.ip_address(address))
        except ValueError as exc:
            raise MalformedMessage(f"UPnP external address is not an address: {address[:60]!r}") from exc

    def _args(self, slot: Slot, external_port: int, lifetime: int) -> dict[str, Any]:
        return {"NewRemoteHost": "", "NewExternalPort": external_port, "NewProtocol": slot.protocol.upper(),
                "NewInternalPort": slot.internal_port, "NewInternalClient": self.gw.local_address,
                "NewEnabled": True, "NewPortMappingDescription": f"{DESCRIPTION} {slot.internal_port}/{slot.protocol}",
                "NewLeaseDuration": int(lifetime)}

    async def _add(self, slot: Slot, external_port: int, lifetime: int) -> int:
        """AddPortMapping with the permanent-lease fallback; returns the lease actually used."""
        if self.permanent_only:
            lifetime = 0
        try:
            await self.call("AddPortMapping", **self._args(slot, external_port, lifetime))
            return lifetime
        except SoapFault as fault:
            if fault.code in (ERR_PERMANENT_ONLY, ERR_INVALID_ARGS) and lifetime != 0:
                self.permanent_only = True
                await self.call("AddPortMapping", **self._args(slot, external_port, 0))
                return 0
            raise

    async def map(self, slot: Slot, external_port: int, lifetime: int) -> Grant:
        candidates = [external_port] if external_port else []
        candidates += [p for p in stable_ports(self.gw.local_address, slot.protocol, slot.internal_port)
                       if p not in candidates]
        last: SoapFault | None = None
        for port in candidates:
            try:
                used = await self._add(slot, port, lifetime)
            except SoapFault as fault:
                if fault.code in (ERR_CONFLICT, ERR_SAME_PORT_REQUIRED, ERR_OTHER_MECHANISM, 606):
                    last = fault
                    continue
                raise
            return await self._verified(slot, port, used)
        if self.service.has_action("AddAnyPortMapping"):
            out = await self.call("AddAnyPortMapping", **self._args(slot, candidates[0], lifetime))
            raw = out.get("NewReservedPort") or out.get("NewExternalPort") or ""
            if not raw.isdigit() or not 0 < int(raw) < 65536:
                raise MalformedMessage(f"UPnP AddAnyPortMapping returned no usable port ({raw[:20]!r})")
            return await self._verified(slot, int(raw), lifetime)
        assert last is not None
        raise PortmapError(f"UPnP: every external port tried for {slot.internal_port}/{slot.protocol} is taken "
                           f"({last.message})", "free the port on the router or choose another internal port")

    async def entry(self, protocol: Transport, external_port: int) -> dict[str, str] | None:
        try:
            return await self.call("GetSpecificPortMappingEntry", NewRemoteHost="", NewExternalPort=external_port,
                                   NewProtocol=protocol.upper())
        except SoapFault as fault:
            if fault.code in (ERR_NO_SUCH_ENTRY, ERR_INVALID_ARGS, 713):
                return None
            raise

    async def _verified(self, slot: Slot, external_port: int, lifetime: int) -> Grant:
        """Read the mapping back: it must exist and point at this host's internal port."""
        entry = await self.entry(slot.protocol, external_port)
        if entry is None:
            raise PortmapError(f"UPnP: the gateway accepted {external_port}/{slot.protocol} but has no such mapping")
        client = entry.get("NewInternalClient", "")
        port = entry.get("NewInternalPort", "")
        if client != self.gw.local_address or port != str(slot.internal_port):
            raise PortmapError(f"UPnP: the gateway maps {external_port}/{slot.protocol} to {client[:40]}:{port[:8]}, "
                               f"not to this host ({self.gw.local_address}:{slot.internal_port}): refusing it",
                               "the router is misbehaving; forward the port by hand")
        lease = entry.get("NewLeaseDuration", "")
        granted = int(lease) if lease.isdigit() and int(lease) < 2**32 else lifetime
        if granted == 0 and lifetime:
            granted = 0  # a permanent mapping (IGDv1): we delete it on exit
        address = await self.external_address()
        return Grant(slot.protocol, slot.internal_port, external_port, address, granted or lifetime)

    async def unmap(self, slot: Slot) -> None:
        if slot.grant is None:
            return
        try:
            await self.call("DeletePortMapping", NewRemoteHost="", NewExternalPort=slot.grant.external_port,
                            NewProtocol=slot.protocol.upper())
        except SoapFault as fault:
            if fault.code != ERR_NO_SUCH_ENTRY:
                raise

    async def poll(self, slots: list[Slot]) -> Poll:
        """A mapping missing from GetSpecificPortMappingEntry means the router lost its state."""
        poll = Poll(external_address=await self.external_address())
        for slot in slots:
            if slot.grant is None:
                continue
            entry = await self.entry(slot.protocol, slot.grant.external_port)
            if entry is None or entry.get("NewInternalClient") != self.gw.local_address:
                poll.missing.append((slot.protocol, slot.grant.external_port))
        poll.restarted = bool(poll.missing) and len(poll.missing) == len([s for s in slots if s.grant])
        return poll

    async def list_mappings(self) -> list[dict[str, str]]:
        """Every mapping on the router (GetGenericPortMappingEntry until the index runs out, bounded)."""
        out: list[dict[str, str]] = []
        for index in range(MAX_LIST):
            try:
                out.append(await self.call("GetGenericPortMappingEntry", NewPortMappingIndex=index))
            except SoapFault as fault:
                if fault.code in (ERR_BAD_INDEX, ERR_NO_SUCH_ENTRY, ERR_INVALID_ARGS):
                    break
                raise
        return out

    async def delete(self, protocol: Transport, external_port: int) -> None:
        await self.call("DeletePortMapping", NewRemoteHost="", NewExternalPort=external_port,
                        NewProtocol=protocol.upper())

    async def close(self) -> None:
        return None

