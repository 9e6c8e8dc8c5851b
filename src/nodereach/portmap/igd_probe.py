"""Does the gateway offer UPnP IGD port mapping? The check's probe, without aiohttp or async-upnp-client.

The keeper's SSDP search (ssdp.search_igd: multicast, and unicast to the gateway; messages and the rules for
which answers count in ssdp_codec), and only when the gateway answers: its device description and one SOAP
action, GetExternalIPAddress, over the lean HTTP/1.1 client (reach.http1 on h11), bounded in size and under
one deadline. Importing this module costs about a millisecond; defusedxml and h11 are loaded once a device
answered. `nodereach open` keeps its async-upnp-client drivers (upnp_client, upnp_pinhole): they need the
whole service description (argument types, every action) that this probe never reads.

IPv4 only (the check asks the gateway's port mapping over IPv4; IPv6 pinholes are `open --family 6`'s).
"""

from __future__ import annotations

import asyncio
from urllib.parse import urljoin, urlsplit

import msgspec

from nodereach.portmap.errors import GatewayTimeout, MalformedMessage, NotOffered, PortmapError
from nodereach.portmap.gateway import Gateway
from nodereach.portmap.soap import (
    CONTENT_TYPE,
    check_url,
    envelope,
    external_ip,
    local_name,
    parse_soap,
    parse_xml,
    soap_headers,
)
from nodereach.portmap.ssdp import search_igd
from nodereach.portmap.ssdp_codec import Found

WAN_SERVICES = (
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
)
"""The services that map ports, best first (the same choice as upnp_client.SERVICE_TYPES)."""
MAX_DESCRIPTION = 64 * 1024
"""Bytes of a device description read at most (real IGD descriptions are 2-10 KiB)."""
MAX_ANSWER = 16 * 1024
"""Bytes of a SOAP answer read at most (GetExternalIPAddressResponse is ~400)."""
MAX_URL = 512


class Control(msgspec.Struct, frozen=True):
    """The port-mapping service a description offers and where its actions go."""

    service_type: str
    url: str


# --- sans-IO: the description and the one action ----------------------------------------------------------


def control_of(description: bytes | str, location: str, host: str) -> Control:
    """The best WAN*Connection service of a device description fetched from `location` (UDA 1.1 §2.3), its
    control URL resolved against URLBase (UDA 1.0 descriptions) or the location and checked to be plain http on
    `host`. MalformedMessage for a description that is not one, NotOffered when it offers no such service,
    ForbiddenUrl for a control URL elsewhere."""
    root = parse_xml(description, "UPnP device description")
    if local_name(root.tag) != "root":
        raise MalformedMessage("UPnP device description without its <root> element")
    base = location
    for child in root:
        if local_name(child.tag) == "URLBase" and (child.text or "").strip():
            base = (child.text or "").strip()[:MAX_URL]
    offered: dict[str, str] = {}
    for element in root.iter():
        if local_name(element.tag) != "service":
            continue
        fields = {local_name(c.tag): (c.text or "").strip() for c in element}
        service_type, url = fields.get("serviceType", ""), fields.get("controlURL", "")
        if service_type in WAN_SERVICES and url and len(url) <= MAX_URL:
            offered.setdefault(service_type, url)
    for service_type in WAN_SERVICES:
        if service_type in offered:
            try:
                url = urljoin(base, offered[service_type])
            except ValueError as exc:
                raise MalformedMessage(f"UPnP control URL does not parse: {offered[service_type][:80]!r}") from exc
            check_url(url, host)
            return Control(service_type, url)
    raise NotOffered(f"UPnP: the device at {location[:200]} offers no WANIPConnection/WANPPPConnection service",
                     "its port mapping may be switched off in the router's settings")


def external_address_request(control: Control) -> tuple[bytes, tuple[tuple[str, str], ...]]:
    """(body, headers) of GetExternalIPAddress ([IGD1] WANIPConnection:1 §2.4.18: no arguments)."""
    return envelope(control.service_type, "GetExternalIPAddress"), soap_headers(control.service_type,
                                                                               "GetExternalIPAddress")


def external_address_of(status: int, body: bytes | str) -> str | None:
    """NewExternalIPAddress of the answer: an address, None when the router has none yet (empty: no WAN
    connection). SoapFault for an action error, MalformedMessage for anything else."""
    return external_ip(parse_soap("GetExternalIPAddress", status, body))


def split_url(url: str) -> tuple[str, int, str]:
    """(host, port, target) of an http URL already checked by soap.check_url."""
    try:
        parts = urlsplit(url)
        port = parts.port or 80
    except ValueError as exc:
        raise MalformedMessage(f"UPnP URL does not parse: {url[:80]!r}") from exc
    assert parts.hostname is not None  # check_url refused a URL without a host
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, port, target


# --- I/O: the two HTTP exchanges (the search is the keeper's: ssdp.search_igd) -------------------------------


async def _http(url: str, method: str, what: str, deadline: float, *, body: bytes | None = None,
                headers: tuple[tuple[str, str], ...] = (), max_body: int) -> tuple[int, bytes]:
    """One bounded exchange with the device; its failures as portmap errors."""
    from nodereach.reach import http1

    host, port, target = split_url(url)
    left = deadline - asyncio.get_running_loop().time()
    if left <= 0:
        raise GatewayTimeout(f"UPnP {what}: no time left")
    try:
        response = await http1.request(host, port, method, target, None if body is None else (lambda _s: body),
                                       timeout=left, content_type=CONTENT_TYPE, headers=headers, max_body=max_body)
    except http1.ResponseTimeout as exc:
        raise GatewayTimeout(f"UPnP {what}: no complete answer from {url[:200]} in time") from exc
    except http1.HttpError as exc:
        raise MalformedMessage(f"UPnP {what} from {url[:200]}: {exc}") from exc
    except OSError as exc:
        raise PortmapError(f"UPnP {what}: cannot reach {url[:200]}: {exc.strerror or exc}") from exc
    return response.status, response.body


async def external_address(found: Found, deadline: float) -> tuple[str | None, Control]:
    """The description at found.location (only from found.host), then GetExternalIPAddress, both before
    `deadline` (the loop's clock)."""
    check_url(found.location, found.host)
    status, description = await _http(found.location, "GET", "description", deadline, max_body=MAX_DESCRIPTION)
    if status != 200:
        raise MalformedMessage(f"UPnP description at {found.location[:200]}: HTTP {status}")
    control = control_of(description, found.location, found.host)
    body, headers = external_address_request(control)
    status, answer = await _http(control.url, "POST", "GetExternalIPAddress", deadline, body=body, headers=headers,
                                 max_body=MAX_ANSWER)
    return external_address_of(status, answer), control


async def probe(gw: Gateway, *, wait: float, http_s: float) -> tuple[str | None, Control]:
    """(external address, service) of the gateway's UPnP IGD: SSDP within `wait` seconds, then the description
    and the action within `http_s`. Raises PortmapError (GatewayTimeout when nothing answered the search)."""
    if ":" in gw.address:
        raise NotOffered("UPnP: the check's probe asks IPv4 gateways only")
    found = await search_igd(gw, wait=wait)
    return await external_address(found, asyncio.get_running_loop().time() + http_s)
