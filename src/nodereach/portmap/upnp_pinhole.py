"""IPv6 pinholes through UPnP IGD v2's WANIPv6FirewallControl:1: AddPinhole, UpdatePinhole, DeletePinhole,
CheckPinholeWorking, GetFirewallStatus, GetOutboundPinholeTimeout.

A pinhole opens the router's IPv6 firewall for inbound traffic to one address and port of this host; there
is no translation, so the "external" endpoint is the host's own global address and the same port. UPnP has
no action that lists pinholes: `nodereach mappings` lists the ones the state file recorded.

References:
- [6FC] UPnP WANIPv6FirewallControl:1 Service (2010), §2.4 (actions) and §2.5 (error codes):
  https://upnp.org/specs/gw/UPnP-gw-WANIPv6FirewallControl-v1-Service.pdf
- [miniupnpd] miniupnpd 2.3.1 (Debian's, the lab's router), miniupnpd/upnpsoap.c, functions AddPinhole,
  UpdatePinhole, CheckPinholeWorking, PinholeVerification:
  https://github.com/miniupnp/miniupnp/blob/miniupnpd_2_3_1/miniupnpd/upnpsoap.c
"""

from __future__ import annotations

from nodereach.net import Transport, canonical
from nodereach.portmap.base import Grant, Poll, Slot
from nodereach.portmap.errors import MalformedMessage, NotOffered, PortmapError
from nodereach.portmap.gateway import Gateway
from nodereach.portmap.igd_actions import FIREWALL_SERVICE
from nodereach.portmap.igd_description import Control, Description
from nodereach.portmap.soap import ActionNotOffered, SoapFault
from nodereach.portmap.ssdp_codec import Found
from nodereach.portmap.upnp_device import ERR_INVALID_ARGS, ERR_NOT_AUTHORIZED, IgdService

SERVICE_TYPE = FIREWALL_SERVICE
PROTOCOL_NUMBERS: dict[Transport, int] = {"tcp": 6, "udp": 17}
MAX_LEASE = 86400
"""[6FC] §2.3.5: LeaseTime is 1..86400 seconds (miniupnpd answers 402 outside)."""

# [6FC] §2.5 action error codes, named as the spec names them.
ERR_PINHOLE_SPACE_EXHAUSTED = 701
ERR_FIREWALL_DISABLED = 702
ERR_INBOUND_PINHOLE_NOT_ALLOWED = 703
ERR_NO_SUCH_ENTRY = 704
ERR_PROTOCOL_NOT_SUPPORTED = 705
ERR_INTERNAL_PORT_WILDCARDING = 706
ERR_PROTOCOL_WILDCARDING = 707
ERR_WILDCARD_SRC_IP = 708
ERR_NO_TRAFFIC = 709
"""CheckPinholeWorking: the pinhole exists but has carried no packet yet ([6FC] NoTrafficReceived)."""
ERR_ACTION_FAILED = 501

GONE = (ERR_NO_SUCH_ENTRY, ERR_INVALID_ARGS)
"""A pinhole that is no longer there. [6FC] says 704; miniupnpd 2.3.1 answers 402 to UpdatePinhole,
CheckPinholeWorking and DeletePinhole for a UniqueID it does not know (measured in the lab), so 402 for an id
we got from it means the same."""


def pinhole_error(fault: SoapFault, port: int, protocol: str) -> PortmapError:
    """What a refused AddPinhole means for the operator, with what to do next."""
    what = f"UPnP: the gateway refused an IPv6 pinhole for {port}/{protocol}"
    by_hand = "or allow inbound to the port in the router's IPv6 firewall by hand"
    if fault.code == ERR_NOT_AUTHORIZED:
        return PortmapError(f"{what}: not authorized (error 606); routers only let a host open pinholes to its "
                            "own address, from that address, for ports 1024 and up",
                            f"run nodereach on the node's own host and use a port >= 1024, {by_hand}")
    if fault.code == ERR_INBOUND_PINHOLE_NOT_ALLOWED:
        return PortmapError(f"{what}: the router does not allow inbound pinholes (error 703)",
                            f"allow UPnP IPv6 pinholes in the router's settings, {by_hand}")
    if fault.code == ERR_FIREWALL_DISABLED:
        return PortmapError(f"{what}: the router's IPv6 firewall is off (error 702), so inbound IPv6 needs no "
                            "pinhole", "check reachability with `nodereach check`")
    if fault.code == ERR_PINHOLE_SPACE_EXHAUSTED:
        return PortmapError(f"{what}: the router has no room for more pinholes (error 701)",
                            f"remove unused pinholes (`nodereach mappings`), {by_hand}")
    if fault.code == ERR_PROTOCOL_NOT_SUPPORTED:
        return PortmapError(f"{what}: the router does not support {protocol.upper()} pinholes (error 705)", by_hand)
    return PortmapError(f"{what}: error {fault.code} ({fault.description})", f"retry later, {by_hand}")


class UpnpPinholeClient(IgdService):
    """Driver for IPv6 pinholes over UPnP. Every SOAP call leaves from the host's stable global address (the
    pinhole's internal client), over the description's IPv6 URL."""

    SERVICE_TYPES = (SERVICE_TYPE,)

    check_offered = True
    """Cleared once the router answered that it does not offer CheckPinholeWorking (401/602; the SCPD, which
    would say so, is never read): `alive` then asks UpdatePinhole instead."""

    def __init__(self, gw: Gateway, found: Found, description: Description, control: Control, *,
                 timeout: float, local_address: str | None = None) -> None:
        super().__init__(gw, found, description, control, timeout=timeout, local_address=local_address)
        # miniupnpd 2.3.1 compares InternalClient with the caller's address as text (PinholeVerification():
        # strcmp() of inet_ntop(client) and the argument; 606 otherwise: measured in the lab, an expanded or
        # upper-case form of the same address is refused; later versions compare the binary addresses).
        # inet_ntop's form is RFC 5952's canonical one, which canonical() gives.
        self.internal_client = canonical(gw.local_address)

    @classmethod
    def _http_source(cls, gw: Gateway, found: Found) -> str | None:
        if ":" not in found.host:
            # SOAP over IPv4 comes from an IPv4 address: AddPinhole is then always refused (606)
            raise NotOffered(f"UPnP: the gateway's description is at an IPv4 URL ({found.location}); IPv6 "
                               "pinholes need it over IPv6")
        return gw.local_address  # the pinhole's internal client must be the caller

    @classmethod
    def _no_service(cls, found: Found) -> PortmapError:
        return NotOffered(f"UPnP: {found.location} offers no IPv6 firewall control (WANIPv6FirewallControl:1)",
                          "allow inbound to the port in the router's IPv6 firewall by hand")

    async def firewall_status(self) -> tuple[bool, bool]:
        """(firewall enabled, inbound pinholes allowed): GetFirewallStatus ([6FC] §2.4.1)."""
        out = await self.call("GetFirewallStatus")
        return out.get("FirewallEnabled") == "1", out.get("InboundPinholeAllowed") == "1"

    async def outbound_timeout(self, protocol: Transport, port: int) -> int | None:
        """How long the firewall keeps state for outbound traffic from `port` (GetOutboundPinholeTimeout,
        optional in [6FC]); None when the router does not say (miniupnpd 2.3.1 always answers 501)."""
        try:
            out = await self.call("GetOutboundPinholeTimeout", RemoteHost="", RemotePort=0,
                                  InternalClient=self.internal_client, InternalPort=port,
                                  Protocol=PROTOCOL_NUMBERS[protocol])
        except SoapFault:
            return None
        raw = out.get("OutboundPinholeTimeout", "")
        return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 10 else None

    @staticmethod
    def _unique_id(out: dict[str, str]) -> int:
        raw = out.get("UniqueID", "")
        if not (raw.isascii() and raw.isdigit()) or int(raw) > 65535:  # "²".isdigit() is true
            raise MalformedMessage(f"UPnP AddPinhole returned no usable UniqueID ({raw[:20]!r})")
        return int(raw)

    async def map(self, slot: Slot, external_port: int, lifetime: int) -> Grant:
        """Open (or renew: UpdatePinhole on the UniqueID we hold) a pinhole to our address and slot's port.
        `external_port` is ignored: a pinhole does not translate."""
        lease = max(1, min(int(lifetime), MAX_LEASE))
        if slot.grant is not None and slot.grant.pinhole_id is not None:
            try:
                await self.call("UpdatePinhole", UniqueID=slot.grant.pinhole_id, NewLeaseTime=lease)
                return self._grant(slot, lease, slot.grant.pinhole_id)
            except SoapFault as fault:
                if fault.code not in GONE:
                    raise pinhole_error(fault, slot.internal_port, slot.protocol) from fault
                # gone (router restarted): open it again below
        try:
            # RemoteHost "" and RemotePort 0 are the wildcards ([6FC] §2.4.2): any peer may connect in.
            out = await self.call("AddPinhole", RemoteHost="", RemotePort=0, InternalClient=self.internal_client,
                                  InternalPort=slot.internal_port, Protocol=PROTOCOL_NUMBERS[slot.protocol],
                                  LeaseTime=lease)
        except SoapFault as fault:
            raise pinhole_error(fault, slot.internal_port, slot.protocol) from fault
        return self._grant(slot, lease, self._unique_id(out))

    def _grant(self, slot: Slot, lease: int, unique_id: int) -> Grant:
        return Grant(slot.protocol, slot.internal_port, slot.internal_port, self.internal_client, lease,
                     pinhole_id=unique_id)

    async def unmap(self, slot: Slot) -> None:
        if slot.grant is None or slot.grant.pinhole_id is None:
            return
        await self.delete(slot.grant.pinhole_id)

    async def delete(self, unique_id: int) -> None:
        try:
            await self.call("DeletePinhole", UniqueID=unique_id)
        except SoapFault as fault:
            if fault.code not in GONE:
                raise

    async def close_matching(self, protocol: Transport, port: int) -> None:
        """Close the pinhole to our address and `port` whoever opened it: AddPinhole with the same arguments
        returns the existing pinhole's UniqueID ([6FC] §2.4.2: it extends it instead of adding one), which
        DeletePinhole then closes. The way out when PCP will not delete (PcpClient.unmap)."""
        try:
            out = await self.call("AddPinhole", RemoteHost="", RemotePort=0, InternalClient=self.internal_client,
                                  InternalPort=port, Protocol=PROTOCOL_NUMBERS[protocol], LeaseTime=1)
        except SoapFault as fault:
            raise pinhole_error(fault, port, protocol) from fault
        await self.delete(self._unique_id(out))

    async def alive(self, unique_id: int, lease: int) -> bool:
        """Is the pinhole still there? CheckPinholeWorking (no side effect) where offered, else UpdatePinhole."""
        try:
            if self.check_offered:
                try:
                    await self.call("CheckPinholeWorking", UniqueID=unique_id)
                    return True
                except ActionNotOffered:
                    self.check_offered = False  # not offered: ask the other way from now on
            await self.call("UpdatePinhole", UniqueID=unique_id, NewLeaseTime=max(1, min(lease, MAX_LEASE)))
        except SoapFault as fault:
            if fault.code == ERR_NO_TRAFFIC:
                return True  # there, it just has not carried a packet yet
            if fault.code in GONE:
                return False
            raise
        return True

    async def poll(self, slots: list[Slot]) -> Poll:
        poll = Poll(external_address=self.internal_client)
        held = [s for s in slots if s.grant is not None and s.grant.pinhole_id is not None]
        for slot in held:
            assert slot.grant is not None and slot.grant.pinhole_id is not None
            if not await self.alive(slot.grant.pinhole_id, slot.grant.lifetime):
                poll.missing.append((slot.protocol, slot.grant.external_port))
        poll.restarted = bool(held) and len(poll.missing) == len(held)
        return poll

    async def external_address(self) -> str | None:
        return self.internal_client
