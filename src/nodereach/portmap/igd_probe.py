"""Does the gateway offer UPnP IGD port mapping? The check's probe: the keeper's SSDP search (ssdp.search_igd:
multicast, and unicast to the gateway; messages and the rules for which answers count in ssdp_codec), and only
when the gateway answers: its device description and one SOAP action, GetExternalIPAddress, bounded in size and
under one deadline.

The description parse (igd_description), the typed action table (igd_actions) and the guarded HTTP exchanges
(portmap.http over reach.http1 on h11) are the ones the `open`/`watch` drivers (upnp_client, upnp_pinhole) use:
one implementation. Importing this module costs about a millisecond; defusedxml and h11 are loaded once a
device answered. No aiohttp anywhere on this path.

IPv4 only (the check asks the gateway's port mapping over IPv4; IPv6 pinholes are `open --family 6`'s).
"""

from __future__ import annotations

import asyncio

from nodereach.portmap import igd_actions
from nodereach.portmap.errors import NotOffered
from nodereach.portmap.gateway import Gateway
from nodereach.portmap.http import call_action, fetch_description
from nodereach.portmap.igd_actions import WAN_SERVICES
from nodereach.portmap.igd_description import Control, Description, parse_description
from nodereach.portmap.soap import external_ip, parse_soap
from nodereach.portmap.ssdp import search_igd
from nodereach.portmap.ssdp_codec import Found

__all__ = ["WAN_SERVICES", "Control", "control_of", "external_address", "external_address_of",
           "external_address_request", "probe", "wan_control"]


# --- sans-IO: the description and the one action ----------------------------------------------------------


def control_of(description: bytes | str, location: str, host: str) -> Control:
    """The best WAN*Connection service of a device description fetched from `location` (UDA 1.1 §2.3), its
    control URL resolved against URLBase (UDA 1.0 descriptions) or the location and checked to be plain http on
    `host`. MalformedMessage for a description that is not one, NotOffered when it offers no such service,
    ForbiddenUrl for a control URL elsewhere."""
    return wan_control(parse_description(description, location, host))


def wan_control(description: Description) -> Control:
    """The best WAN*Connection service of a parsed description; NotOffered when it has none."""
    control = description.control(WAN_SERVICES)
    if control is None:
        raise NotOffered(f"UPnP: the device at {description.location[:200]} offers no WANIPConnection/"
                         "WANPPPConnection service", "its port mapping may be switched off in the router's settings")
    return control


def external_address_request(control: Control) -> tuple[bytes, tuple[tuple[str, str], ...]]:
    """(body, headers) of GetExternalIPAddress ([IGD1] WANIPConnection:1 §2.4.18: no arguments)."""
    return igd_actions.request(control.service_type, "GetExternalIPAddress", {})


def external_address_of(status: int, body: bytes | str) -> str | None:
    """NewExternalIPAddress of the answer: an address, None when the router has none yet (empty: no WAN
    connection). SoapFault for an action error, MalformedMessage for anything else."""
    return external_ip(parse_soap("GetExternalIPAddress", status, body))


# --- I/O: the two HTTP exchanges (the search is the keeper's: ssdp.search_igd) -------------------------------


async def external_address(found: Found, deadline: float) -> tuple[str | None, Control]:
    """The description at found.location (only from found.host), then GetExternalIPAddress, both before
    `deadline` (the loop's clock)."""
    control = wan_control(await fetch_description(found, deadline=deadline))
    answer = await call_action(control, "GetExternalIPAddress", {}, host=found.host, deadline=deadline)
    return external_ip(answer), control


async def probe(gw: Gateway, *, wait: float, http_s: float) -> tuple[str | None, Control]:
    """(external address, service) of the gateway's UPnP IGD: SSDP within `wait` seconds, then the description
    and the action within `http_s`. Raises PortmapError (GatewayTimeout when nothing answered the search)."""
    if ":" in gw.address:
        raise NotOffered("UPnP: the check's probe asks IPv4 gateways only")
    found = await search_igd(gw, wait=wait)
    return await external_address(found, asyncio.get_running_loop().time() + http_s)
