"""UPnP IGD v1/v2 driver for IPv4 port mappings (WANIPConnection / WANPPPConnection), with the workarounds real
routers need. The actions go through upnp_device.IgdService.call: arguments typed by igd_actions, guarded HTTP
over reach.http1 (no aiohttp, no async-upnp-client).

Pitfalls handled (see docs/portmap.md; each is commented with its reference where it is handled): leases
are always sent as plain integers (async-upnp-client's timedelta path, which nodereach used before, sends
`.seconds`, turning 7 days into 0: igd_actions types NewLeaseDuration as ui4 from an int); every action sends
NewRemoteHost="" (that library's 0.0.0.0 makes miniupnpd answer 718 to its own client); 718 conflicts move to
another stable external port or AddAnyPortMapping (whose NewReservedPort is read from the raw reply); 725/402
"permanent leases only" retries with 0 and remembers to delete on exit.
Every mapping is read back with GetSpecificPortMappingEntry: a router that says yes but maps another host is
an error, not a success.

References used below:
- [IGD1] UPnP WANIPConnection:1 Service Template 1.01 (2001), §2.4.14-2.4.17 (the action error tables):
  https://upnp.org/specs/gw/UPnP-gw-WANIPConnection-v1-Service.pdf
- [IGD2] UPnP WANIPConnection:2 Service (SDCP, 2010), AddPortMapping / AddAnyPortMapping:
  https://upnp.org/specs/gw/UPnP-gw-WANIPConnection-v2-Service.pdf
- [miniupnpd] miniupnpd 2.3.1 (the lab's router; Debian's). Files named below (upnpsoap.c#L..., ...) are
  at https://github.com/miniupnp/miniupnp/blob/miniupnpd_2_3_1/miniupnpd/ (upnpc.c: miniupnpc/src/)
- [aupnp] async-upnp-client 0.49.0 (nodereach's UPnP client until 2026-11-30), profiles/igd.py:
  https://github.com/StevenLooman/async_upnp_client/blob/0.49.0/async_upnp_client/profiles/igd.py
"""

from __future__ import annotations

import hashlib

from nodereach.net import Transport
from nodereach.portmap.base import Grant, Poll, Slot
from nodereach.portmap.errors import MalformedMessage, PortmapError
from nodereach.portmap.igd_actions import WAN_SERVICES, Value
from nodereach.portmap.soap import ActionNotOffered, SoapFault, external_ip
from nodereach.portmap.ssdp_codec import Found
from nodereach.portmap.upnp_device import ERR_INVALID_ARGS, ERR_NOT_AUTHORIZED, IgdService

DESCRIPTION = "nodereach"
MAX_LIST = 512
"""Most entries read from GetGenericPortMappingEntry (a lying router could claim millions)."""

# UPnP action error codes (UPnPError/errorCode in a SOAP fault), named as the specs name them; 402 and 606
# (ERR_INVALID_ARGS, ERR_NOT_AUTHORIZED) are in upnp_device.py: the pinhole service answers them too.
ERR_BAD_INDEX = 713
"""SpecifiedArrayIndexInvalid ([IGD1] §2.4.14 GetGenericPortMappingEntry): the end of the list (the spec has
no entry count), upnpsoap.c#L1081."""
ERR_NO_SUCH_ENTRY = 714
"""NoSuchEntryInArray ([IGD1] §2.4.15 GetSpecificPortMappingEntry, §2.4.17 DeletePortMapping):
upnpsoap.c#L815, #L928."""
ERR_CONFLICT = 718
"""ConflictInMappingEntry ([IGD1] §2.4.16): the external port is mapped to another client, or (miniupnpd) the
same client with a different NewRemoteHost: upnpredirect.c#L400-L422, upnpsoap.c#L572."""
ERR_SAME_PORT_REQUIRED = 724
"""SamePortValuesRequired ([IGD1] §2.4.16; deprecated in IGD2): the router maps only external == internal."""
ERR_PERMANENT_ONLY = 725
"""OnlyPermanentLeasesSupported ([IGD1] §2.4.16; deprecated in IGD2): only NewLeaseDuration=0 is accepted."""
ERR_OTHER_MECHANISM = 729
"""ConflictWithOtherMechanisms ([IGD2] AddPortMapping): the port is taken outside UPnP (a static forward, a
local service); miniupnpd built with CHECK_PORTINUSE: upnpsoap.c#L563."""


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


class UpnpClient(IgdService):
    SERVICE_TYPES = WAN_SERVICES
    permanent_only = False
    """Set when the router accepted only a permanent lease (725/402, see _add): the keeper deletes on exit."""

    @classmethod
    def _no_service(cls, found: Found) -> PortmapError:
        return PortmapError(f"UPnP: {found.location} offers no WANIPConnection/WANPPPConnection service")

    @property
    def version(self) -> int:
        return int(self.control.service_type.rsplit(":", 1)[-1])

    async def external_address(self) -> str | None:
        return external_ip(await self.call("GetExternalIPAddress"))

    def _args(self, slot: Slot, external_port: int, lifetime: int) -> dict[str, Value]:
        # NewRemoteHost "" (the wildcard), not [aupnp]'s `remote_host.exploded` "0.0.0.0" (igd.py#L526): miniupnpd
        # stores the wildcard as "" and treats "0.0.0.0" as another remote host, so renewing our own mapping
        # fails with 718 (upnpredirect.c#L400-L422; lab-notes "async-upnp-client ... pitfalls").
        # NewLeaseDuration as a plain int, not [aupnp]'s `int(lease_duration.seconds)` (igd.py#L533): a
        # timedelta's .seconds drops the days, so 7 days would be sent as 0 (permanent on IGDv1 routers).
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
            # Routers that refuse any lease but 0: 725 as [IGD1] §2.4.16 says (NETGEAR, MikroTik RouterOS:
            # https://github.com/benoitc/erlang-nat/issues/5, https://github.com/benoitc/erlang-nat/issues/14),
            # or 402 Invalid Args instead (ARRIS NVG578LX: https://github.com/tailscale/tailscale/issues/15223,
            # handled the same way in https://github.com/tailscale/tailscale/pull/15231). Retry once with 0 and
            # remember it: the keeper deletes permanent mappings on exit.
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
                # This external port is not available to us (see each code's docstring): taken by another
                # client (718) or outside UPnP (729), below the router's permitted range (606, miniupnpd's
                # default rules), or not equal to the internal port (724). The next stable candidate may be.
                if fault.code in (ERR_CONFLICT, ERR_SAME_PORT_REQUIRED, ERR_OTHER_MECHANISM, ERR_NOT_AUTHORIZED):
                    last = fault
                    continue
                raise
            return await self._verified(slot, port, used)
        try:
            out = await self.call("AddAnyPortMapping", **self._args(slot, candidates[0], lifetime))
        except ActionNotOffered:
            # [IGD2] only: an IGDv1 router answers 401 Invalid Action (miniupnpd's ExecuteSoapAction() does for
            # any action it lacks); the SCPD is not read, so asking is how we learn it is not offered.
            out = None
        if out is not None:
            # [IGD2] names the out argument NewReservedPort (miniupnpd sends exactly that: upnpsoap.c#L587,
            # while its SCPD calls it NewExternalPort, so an SCPD-driven parse such as [aupnp]'s returned {} in the
            # lab); read it by name from the reply, and accept NewExternalPort from stacks that reuse the in
            # argument's name.
            raw = out.get("NewReservedPort") or out.get("NewExternalPort") or ""
            if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) < 65536:
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
            # 714 is what [IGD1] §2.4.15 and miniupnpd (upnpsoap.c#L815) answer for a missing mapping. 402 and
            # 713 are read the same way defensively (no vendor report found; miniupnpd sends 402 only for
            # missing or zero arguments): a router that cannot find the entry cannot vouch for it either.
            if fault.code in (ERR_NO_SUCH_ENTRY, ERR_INVALID_ARGS, ERR_BAD_INDEX):
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
        granted = int(lease) if (lease.isascii() and lease.isdigit()) and int(lease) < 2**32 else lifetime
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
            if fault.code != ERR_NO_SUCH_ENTRY:  # already gone (expired, or the router restarted): done
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
                # The only end-of-list signal: 713 per [IGD1] §2.4.14 and miniupnpd (upnpsoap.c#L1081); some
                # stacks answer 714 or 402 past the last entry (miniupnpc's upnpc stops on any error: upnpc.c#L177).
                if fault.code in (ERR_BAD_INDEX, ERR_NO_SUCH_ENTRY, ERR_INVALID_ARGS):
                    break
                raise
        return out

    async def delete(self, protocol: Transport, external_port: int) -> None:
        await self.call("DeletePortMapping", NewRemoteHost="", NewExternalPort=external_port,
                        NewProtocol=protocol.upper())

