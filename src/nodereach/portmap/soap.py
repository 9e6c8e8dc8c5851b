"""UPnP control without an HTTP library: URL checks, the SOAP request body and the parse of its answer.

Sans-IO and cheap to import: the check's IGD probe (igd_probe) and the `open`/`watch` drivers (upnp_device and
its subclasses, through portmap.http) share these. A UPnP device on the LAN is as hostile as any peer: URLs it
hands out must be plain http on the host that answered, and answers are parsed bounded, with defusedxml
(entities refused), imported only when an answer is parsed.

References:
- [UDA] UPnP Device Architecture 1.0 (2008), §3.2.1 (the control request), §3.2.2 (the action error codes):
  https://upnp.org/specs/arch/UPnP-arch-DeviceArchitecture-v1.0.pdf
- [miniupnpd] miniupnpd 2.3.1, miniupnpd/upnpsoap.c ExecuteSoapAction() (401 for an action it does not know):
  https://github.com/miniupnp/miniupnp/blob/miniupnpd_2_3_1/miniupnpd/upnpsoap.c
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from nodereach.portmap.errors import MalformedMessage, PortmapError

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

MAX_BODY = 256 * 1024
"""Largest description / SOAP reply we read (real IGD descriptions are a few KiB)."""
ENVELOPE_NS = "http://schemas.xmlsoap.org/soap/envelope/"
ENCODING_NS = "http://schemas.xmlsoap.org/soap/encoding/"


class ForbiddenUrl(PortmapError):
    """A URL from a UPnP device that points off the LAN or to another host: refused."""


class SoapFault(PortmapError):
    """A UPnP action error (UPnPError errorCode/errorDescription in a SOAP fault)."""

    def __init__(self, action: str, code: int | None, description: str) -> None:
        super().__init__(f"UPnP {action} failed: error {code} ({description})")
        self.action = action
        self.code = code
        self.description = description


ERR_INVALID_ACTION = 401
"""Invalid Action ([UDA] §3.2.2: no action by that name at this service); what miniupnpd answers to an action
it does not implement (ExecuteSoapAction())."""
ERR_OPTIONAL_ACTION_NOT_IMPLEMENTED = 602
"""Optional Action Not Implemented ([UDA] §3.2.2)."""


class ActionNotOffered(SoapFault):
    """The service does not offer the action (fault 401 or 602): the drivers' check that an action exists, in
    place of reading the service description (SCPD), which they never fetch."""

    def __init__(self, action: str, code: int, description: str) -> None:
        super().__init__(action, code, description)
        self.message = f"UPnP: the gateway does not offer {action} (error {code})"


def check_url(url: str, allowed_host: str) -> None:
    """ForbiddenUrl unless `url` is plain http on `allowed_host`, without credentials."""
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError as exc:  # a bracketed host that is no address, a bad port
        raise ForbiddenUrl(f"UPnP device gave an unusable URL: {url[:200]!r}") from exc
    if parts.scheme != "http":
        raise ForbiddenUrl(f"UPnP device gave a non-http URL: {url[:200]!r}")
    if hostname is None or hostname != allowed_host:
        raise ForbiddenUrl(f"UPnP device gave a URL on another host ({hostname!r}, expected "
                           f"{allowed_host}): refused")
    if parts.username or parts.password:
        raise ForbiddenUrl("UPnP URL with credentials: refused")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def envelope(service_type: str, action: str, args: Sequence[tuple[str, str]] = ()) -> bytes:
    """The SOAP request body of `action` on `service_type` (UPnP Device Architecture 1.0 §3.2.1), arguments in
    the order the service description lists them."""
    inner = "".join(f"<{name}>{_escape(value)}</{name}>" for name, value in args)
    return (f'<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="{ENVELOPE_NS}" s:encodingStyle="{ENCODING_NS}">'
            f'<s:Body><u:{action} xmlns:u="{_escape(service_type)}">{inner}</u:{action}></s:Body>'
            f"</s:Envelope>\r\n").encode()


def soap_headers(service_type: str, action: str) -> tuple[tuple[str, str], ...]:
    """The SOAPACTION header of a control request (quoted, as UDA 1.0 §3.2.1 writes it)."""
    return (("SOAPAction", f'"{service_type}#{action}"'),)


CONTENT_TYPE = 'text/xml; charset="utf-8"'


def parse_xml(body: str | bytes, what: str) -> Element:
    """`body` as an XML tree: defusedxml (no entity expansion, no external references), bounded in size;
    MalformedMessage for anything else."""
    import defusedxml.ElementTree as DET  # ~5 ms: only once a device answered
    from defusedxml import DefusedXmlException

    if len(body) > MAX_BODY:
        raise MalformedMessage(f"{what} too large")
    try:
        root: Element = DET.fromstring(body)
    except (DET.ParseError, DefusedXmlException, ValueError) as exc:
        raise MalformedMessage(f"{what} is not XML ({type(exc).__name__})") from exc
    return root


def local_name(tag: object) -> str:
    """An element's name without its namespace (`{urn:...}controlURL` -> `controlURL`)."""
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def parse_soap(action: str, status: int, body: str | bytes) -> dict[str, str]:
    """Out-arguments of `action` from a raw SOAP reply; SoapFault for a fault, MalformedMessage otherwise."""
    root = parse_xml(body, f"SOAP reply for {action}")
    for el in root.iter():
        if local_name(el.tag) == "Fault":
            code_text = desc = None
            for sub in el.iter():
                if local_name(sub.tag) == "errorCode":
                    code_text = (sub.text or "").strip()
                elif local_name(sub.tag) == "errorDescription":
                    desc = (sub.text or "").strip()
            digits = code_text is not None and code_text.isascii() and code_text.isdigit() and len(code_text) < 6
            code = int(code_text) if digits and code_text else None
            if code in (ERR_INVALID_ACTION, ERR_OPTIONAL_ACTION_NOT_IMPLEMENTED):
                assert code is not None
                raise ActionNotOffered(action, code, (desc or "no description")[:200])
            raise SoapFault(action, code, (desc or "no description")[:200])
    if status != 200:
        raise MalformedMessage(f"UPnP {action}: HTTP {status} without a SOAP fault")
    for el in root.iter():
        if local_name(el.tag) == f"{action}Response":
            return {local_name(child.tag): (child.text or "").strip() for child in el}
    raise MalformedMessage(f"SOAP reply without {action}Response")


def external_ip(out: Mapping[str, str]) -> str | None:
    """NewExternalIPAddress of a GetExternalIPAddress answer ([IGD1] WANIPConnection:1 §2.4.18): an address,
    None when the router has none yet (empty: no WAN connection), MalformedMessage for anything else."""
    address = out.get("NewExternalIPAddress", "")
    if not address:
        return None
    try:
        return str(ipaddress.ip_address(address))
    except ValueError as exc:
        raise MalformedMessage(f"UPnP external address is not an address: {address[:60]!r}") from exc
