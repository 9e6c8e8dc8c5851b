"""HTTP for UPnP with the guard rails a hostile LAN device needs.

Every request async-upnp-client makes goes through GuardedRequester: only plain http to one allowed host
(the one that answered SSDP and serves the description), no redirects, bodies capped, every request under a
deadline. The URL checks and the SOAP answer's parse (defusedxml, bounded) are portmap.soap's, shared with the
check's lean IGD probe; they are re-exported here for the drivers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp
from async_upnp_client.client import UpnpRequester
from async_upnp_client.const import HttpRequest, HttpResponse
from async_upnp_client.exceptions import UpnpCommunicationError

from nodereach.portmap.soap import MAX_BODY, ForbiddenUrl, SoapFault, check_url, parse_soap

__all__ = ["MAX_BODY", "ForbiddenUrl", "GuardedRequester", "SoapFault", "check_url", "parse_soap"]


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
