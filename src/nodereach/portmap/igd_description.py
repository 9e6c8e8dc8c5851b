"""The UPnP device description as every UPnP user in nodereach reads it: the check's probe (igd_probe), the IPv4
port-mapping driver (upnp_client) and the IPv6 pinhole driver (upnp_pinhole). Sans-IO, bounded, every byte
hostile: `parse_description` gives a `Description` or raises MalformedMessage, nothing else.

What is read ([UDA] §2.3): URLBase (UDA 1.0 descriptions), every service of the device tree (its type, control
URL and SCPD URL) and every device's UDN (the USNs its NOTIFYs carry, upnp_notify). The service descriptions
(SCPDs) are never fetched: the IGD specs fix every argument's name and type (igd_actions).

References:
- [UDA] UPnP Device Architecture 1.1 (2008), §2.3 (device description):
  https://upnp.org/specs/arch/UPnP-arch-DeviceArchitecture-v1.1.pdf
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urljoin

import msgspec

from nodereach.portmap.errors import MalformedMessage
from nodereach.portmap.soap import check_url, local_name, parse_xml

MAX_DESCRIPTION = 64 * 1024
"""Bytes of a device description read at most (real IGD descriptions are 2-10 KiB; miniupnpd's is 4.3)."""
MAX_URL = 512
"""Longer URLs (control, SCPD, URLBase) are not used."""
MAX_SERVICES = 64
"""Services kept from one description (miniupnpd offers 6; a lying device could list thousands)."""
MAX_UDNS = 16
"""Device UDNs kept (miniupnpd has 3 devices)."""
MAX_FIELD = 256
"""Longest service type or UDN kept (real ones are < 80 characters)."""


class Control(msgspec.Struct, frozen=True):
    """A service the description offers and where its actions go (checked: plain http on the device's host)."""

    service_type: str
    url: str


class Service(msgspec.Struct, frozen=True):
    """One <service> as written in the description (URLs not yet resolved or checked)."""

    service_type: str
    control_url: str
    scpd_url: str


class Description(msgspec.Struct, frozen=True):
    """What the drivers use of a device description fetched from `location` on `host`."""

    location: str
    host: str
    base: str
    """The URL relative URLs resolve against: URLBase where given, else the location."""
    services: tuple[Service, ...]
    udns: tuple[str, ...]
    """The UDNs of the device tree, lower case (`uuid:...`), as upnp_notify compares them."""

    def control(self, service_types: Iterable[str]) -> Control | None:
        """The first of `service_types` (best first) the device offers, its control URL resolved and checked;
        None when it offers none of them. ForbiddenUrl when the control or SCPD URL of that service points
        anywhere but plain http on the device's host (the SCPD is never fetched, but a device handing out URLs
        elsewhere is not one to talk to); MalformedMessage for a URL that does not parse."""
        for service_type in service_types:
            for service in self.services:
                if service.service_type == service_type:
                    url = self._resolve(service.control_url)
                    check_url(url, self.host)
                    if service.scpd_url:
                        check_url(self._resolve(service.scpd_url), self.host)
                    return Control(service_type, url)
        return None

    def _resolve(self, url: str) -> str:
        try:
            return urljoin(self.base, url)
        except ValueError as exc:
            raise MalformedMessage(f"UPnP URL does not parse: {url[:80]!r}") from exc


def parse_description(body: bytes | str, location: str, host: str) -> Description:
    """The description fetched from `location` (on `host`): MalformedMessage for anything that is not one."""
    if len(body) > MAX_DESCRIPTION:
        raise MalformedMessage("UPnP device description too large")
    root = parse_xml(body, "UPnP device description")
    if local_name(root.tag) != "root":
        raise MalformedMessage("UPnP device description without its <root> element")
    base = location
    for child in root:
        if local_name(child.tag) == "URLBase" and (child.text or "").strip():
            text = (child.text or "").strip()
            if len(text) <= MAX_URL:
                base = text
    services: list[Service] = []
    udns: list[str] = []
    for element in root.iter():
        name = local_name(element.tag)
        if name == "UDN" and len(udns) < MAX_UDNS:
            udn = (element.text or "").strip().lower()
            if udn.startswith("uuid:") and len(udn) <= MAX_FIELD and udn not in udns:
                udns.append(udn)
        elif name == "service" and len(services) < MAX_SERVICES:
            fields: dict[str, str] = {}
            for child in element:
                fields.setdefault(local_name(child.tag), (child.text or "").strip())
            service_type, control = fields.get("serviceType", ""), fields.get("controlURL", "")
            scpd = fields.get("SCPDURL", "")
            if service_type and len(service_type) <= MAX_FIELD and control and len(control) <= MAX_URL:
                services.append(Service(service_type, control, scpd if len(scpd) <= MAX_URL else ""))
    return Description(location, host, base, tuple(services), tuple(udns))
