"""HTTP for UPnP with the guard rails a hostile LAN device needs, over the lean HTTP/1.1 client (reach.http1 on
h11): the description fetch and the action call that the check's probe (igd_probe) and the drivers
(upnp_device and its subclasses) share.

Every request: only plain http to the one host that answered SSDP (soap.check_url before each one), no
redirects (a 3xx is an answer like any other, never followed), bodies capped (the description at
igd_description.MAX_DESCRIPTION, an action's answer at MAX_ANSWER), the whole exchange under a deadline, our end
bound to `local_address` where given (IPv6 pinholes: the router authorises the address that asks). Failures are
portmap errors: GatewayTimeout, MalformedMessage, SoapFault (ActionNotOffered), PortmapError.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from urllib.parse import urlsplit

from nodereach.portmap import igd_actions
from nodereach.portmap.errors import GatewayTimeout, MalformedMessage, PortmapError
from nodereach.portmap.igd_description import MAX_DESCRIPTION, Control, Description, parse_description
from nodereach.portmap.soap import CONTENT_TYPE, check_url, parse_soap
from nodereach.portmap.ssdp_codec import Found

MAX_ANSWER = 16 * 1024
"""Bytes of an action's answer read at most (miniupnpd's GetSpecificPortMappingEntryResponse is ~600)."""


def split_url(url: str) -> tuple[str, int, str]:
    """(host, port, target) of an http URL already checked by soap.check_url."""
    try:
        parts = urlsplit(url)
        port = parts.port or 80
    except ValueError as exc:
        raise MalformedMessage(f"UPnP URL does not parse: {url[:80]!r}") from exc
    if parts.hostname is None:
        raise MalformedMessage(f"UPnP URL without a host: {url[:80]!r}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, port, target


async def exchange(url: str, method: str, what: str, *, host: str, deadline: float, max_body: int,
                   body: bytes | None = None, headers: tuple[tuple[str, str], ...] = (),
                   local_address: str | None = None) -> tuple[int, bytes]:
    """One bounded exchange with the device on `host` before `deadline` (the loop's clock): (status, body)."""
    from nodereach.reach import http1

    check_url(url, host)
    target_host, port, target = split_url(url)
    left = deadline - asyncio.get_running_loop().time()
    if left <= 0:
        raise GatewayTimeout(f"UPnP {what}: no time left")
    try:
        response = await http1.request(target_host, port, method, target,
                                       None if body is None else (lambda _s: body), timeout=left,
                                       content_type=CONTENT_TYPE, headers=headers, max_body=max_body,
                                       local_address=local_address)
    except http1.ResponseTimeout as exc:
        raise GatewayTimeout(f"UPnP {what}: no complete answer from {url[:200]} in time") from exc
    except http1.ResponseTooLarge as exc:
        raise MalformedMessage(f"UPnP {what} from {url[:200]}: too large ({exc})") from exc
    except http1.HttpError as exc:
        raise MalformedMessage(f"UPnP {what} from {url[:200]}: {exc}") from exc
    except OSError as exc:
        raise PortmapError(f"UPnP {what}: cannot reach {url[:200]}: {exc.strerror or exc}") from exc
    return response.status, response.body


async def fetch_description(found: Found, *, deadline: float, local_address: str | None = None) -> Description:
    """The device description at found.location, only from found.host."""
    status, body = await exchange(found.location, "GET", "description", host=found.host, deadline=deadline,
                                  max_body=MAX_DESCRIPTION, local_address=local_address)
    if status != 200:  # a redirect included: never followed
        raise MalformedMessage(f"UPnP description at {found.location[:200]}: HTTP {status}")
    return parse_description(body, found.location, found.host)


async def call_action(control: Control, action: str, values: Mapping[str, igd_actions.Value], *, host: str,
                      deadline: float, local_address: str | None = None) -> dict[str, str]:
    """`action` on the service at `control`, its arguments typed by igd_actions; the out-arguments."""
    body, headers = igd_actions.request(control.service_type, action, values)
    status, answer = await exchange(control.url, "POST", action, host=host, deadline=deadline, body=body,
                                    headers=headers, max_body=MAX_ANSWER, local_address=local_address)
    return parse_soap(action, status, answer)
