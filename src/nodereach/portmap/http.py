"""HTTP for UPnP with the guard rails a hostile LAN device needs.

Every request async-upnp-client makes goes through GuardedRequester: only plain http to one allowed host
(the one that answered SSDP and serves the description), no redirects, bodies capped, every request under a
deadline. SOAP replies are parsed here with defusedxml (entities forbidden), bounded in size.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from urllib.parse import urlsplit
from xml.etree.ElementTree import Element, ParseError

import aiohttp
import defusedxml.ElementTree as DET
from async_upnp_client.client import UpnpRequester
from async_upnp_client.const import HttpRequest, HttpResponse
from async_upnp_client.exceptions import UpnpCommunicationError
from defusedxml import DefusedXmlException

from nodereach.portmap.errors import MalformedMessage, PortmapError

MAX_BODY = 256 * 1024
"""Largest description / SOAP reply we read (real IGD descriptions are a few KiB)."""


class ForbiddenUrl(PortmapError):
    """A URL from a UPnP device that points off the LAN or to another host: refused."""


def check_url(url: str, allowed_host: str) -> None:
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ForbiddenUrl(f"UPnP device gave a non-http URL: {url[:200]!r}")
    if parts.hostname is None or parts.hostname != allowed_host:
        raise ForbiddenUrl(f"UPnP device gave a URL on another host ({parts.hostname!r}, expected "
                           f"{allowed_host}): refused")
    if parts.username or parts.password:
        raise ForbiddenUrl("UPnP URL with credentials: refused")


class GuardedRequester(UpnpRequester):
    """UpnpRequester that talks only to `allowed_host`, caps bodies and never follows redirects."""

    def __init__(self, allowed_host: str, *, timeout: float, max_body: int = MAX_BODY,
                 local_address: str | None = None) -> None:
        self.allowed_host = allowed_host
        self.timeout = timeout
        self.max_body = max_body
        self.local_address = local_address
        """Bind our end of each connection to this address (None: the kernel's choice)."""

    async def async_http_request(self, http_request: HttpRequest) -> HttpResponse:
        check_url(http_request.url, self.allowed_host)
        timeout = aiohttp.ClientTimeout(total=http_request.timeout or self.timeout)
        try:
            connector = aiohttp.TCPConnector(local_addr=(self.local_address, 0)) if self.local_address else None
            async with asyncio.timeout(http_request.timeout or self.timeout), aiohttp.ClientSession(
                    timeout=timeout, connector=connector) as session, session.request(
                    http_request.method, http_request.url, headers=dict(http_request.headers or {}),
                    data=http_request.body, allow_redirects=False,
                    max_line_size=8190, max_field_size=8190) as resp:
                declared = resp.content_length
                if declared is not None and declared > self.max_body:
                    raise UpnpCommunicationError(f"reply too large ({declared} bytes)")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(16384):
                    body += chunk
                    if len(body) > self.max_body:
                        raise UpnpCommunicationError(f"reply larger than {self.max_body} bytes")
                headers: Mapping[str, str] = dict(resp.headers)
                return HttpResponse(resp.status, headers, body.decode("utf-8", errors="replace"))
        except TimeoutError as exc:
            raise UpnpCommunicationError(f"no reply from {http_request.url} in time") from exc
        except aiohttp.ClientError as exc:
            raise UpnpCommunicationError(f"{type(exc).__name__}: {exc}") from exc


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


class SoapFault(PortmapError):
    """A UPnP action error (UPnPError errorCode/errorDescription in a SOAP fault)."""

    def __init__(self, action: str, code: int | None, description: str) -> None:
        super().__init__(f"UPnP {action} failed: error {code} ({description})")
        self.action = action
        self.code = code
        self.description = description


def parse_soap(action: str, status: int, body: str) -> dict[str, str]:
    """Out-arguments of `action` from a raw SOAP reply; SoapFault for a fault, MalformedMessage otherwise."""
    if len(body) > MAX_BODY:
        raise MalformedMessage("SOAP reply too large")
    try:
        root: Element = DET.fromstring(body)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        raise MalformedMessage(f"SOAP reply for {action} is not XML ({type(exc).__name__})") from exc
    for el in root.iter():
        if _local(el.tag) == "Fault":
            code_text = desc = None
            for sub in el.iter():
                if _local(sub.tag) == "errorCode":
                    code_text = (sub.text or "").strip()
                elif _local(sub.tag) == "errorDescription":
                    desc = (sub.text or "").strip()
            digits = code_text is not None and code_text.isascii() and code_text.isdigit() and len(code_text) < 6
            code = int(code_text) if digits and code_text else None
            raise SoapFault(action, code, (desc or "no description")[:200])
    if status != 200:
        raise MalformedMessage(f"UPnP {action}: HTTP {status} without a SOAP fault")
    for el in root.iter():
        if _local(el.tag) == f"{action}Response":
            return {_local(child.tag): (child.text or "").strip() for child in el}
    raise MalformedMessage(f"SOAP reply without {action}Response")
