"""SSDP messages (UPnP Device Architecture 1.1 §1.2-1.3): the M-SEARCH we send, the search responses and
NOTIFYs we read, and which search responses count as a gateway's. Sans-IO, bounded, total: any bytes give a
message (or a `Found`) or None, never an exception.

Ours, as is the rest of nodereach's UPnP (igd_description, igd_actions, soap, http): no UPnP library, no
aiohttp (async-upnp-client, which the keeper used until 2026-11-30, cost ~12 MiB resident and ~0.4 s of CPU to
import). The keeper's search (ssdp) and NOTIFY listener (upnp_notify) and the check's probe (igd_probe) read
with this module; the keeper loads its UPnP drivers once a gateway answered (portmap.probe).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import msgspec

SSDP_PORT = 1900
SSDP_GROUP = "239.255.255.250"
SSDP_GROUP6 = "ff02::c"
SEARCH_TARGETS = (
    "urn:schemas-upnp-org:device:InternetGatewayDevice:2",
    "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
)
MAX_DATAGRAM = 2048
"""Longer datagrams are not read (a search response is a few hundred bytes; miniupnpd's limit is 1500)."""
MAX_HEADERS = 32
"""Header lines read from one datagram (real answers have 6-12)."""
MAX_LOCATION = 512
MAX_VALUE = 2 * MAX_LOCATION
"""A longer header value is cut; above MAX_LOCATION, so that a cut LOCATION still fails `accept`'s bound
(never a truncated URL fetched)."""
MX = 1
"""Seconds a device may spread its answer over (UDA 1.1 §1.3.2: 1-5). The smallest: a router built to delay
its answer by a random part of MX (miniupnpd with DELAY_MSEARCH_RESPONSE; else it waits a fixed 50 ms,
minissdp.c ProcessSSDPData) answers within the check's short window more often. Sent on unicast searches
too: miniupnpd built with UPNP_STRICT drops an M-SEARCH without MX."""
GATEWAY_KINDS = ("InternetGatewayDevice", "WANIPConnection", "WANPPPConnection")
"""What a search response's ST must name to be a gateway's."""
SEARCH_RESPONSE = "HTTP/1.1 200"
NOTIFY = "NOTIFY * HTTP/1.1"


@dataclass(frozen=True, slots=True)
class SsdpMessage:
    start: str
    """The start line: `HTTP/1.1 200 OK` (a search response) or `NOTIFY * HTTP/1.1`."""
    headers: Mapping[str, str]
    """Header names in lower case; the first occurrence of a name wins."""

    def get(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def is_search_response(self) -> bool:
        return self.start.upper().startswith(SEARCH_RESPONSE)

    @property
    def is_notify(self) -> bool:
        return self.start.upper().startswith(NOTIFY)


class Found(msgspec.Struct, frozen=True):
    """A search response that counts: where the device's description is, from whom."""

    location: str
    host: str
    st: str
    boot_id: int | None = None
    """BOOTID.UPNP.ORG of the reply (UDA 1.1): a later NOTIFY with another one means the device restarted."""


def build_msearch(search_target: str, *, host: str | None = None, ipv6: bool = False, mx: int = MX) -> bytes:
    """An M-SEARCH for `search_target` (UDA 1.1 §1.3.2): to the SSDP group of the family, or unicast to `host`
    (whose address is then the HOST header, as the UDA asks of a unicast search)."""
    if host is None:
        where = f"[{SSDP_GROUP6.upper()}]:{SSDP_PORT}" if ipv6 else f"{SSDP_GROUP}:{SSDP_PORT}"
    else:
        where = f"[{host}]:{SSDP_PORT}" if ":" in host else f"{host}:{SSDP_PORT}"
    return (f"M-SEARCH * HTTP/1.1\r\nHOST: {where}\r\nMAN: \"ssdp:discover\"\r\nMX: {mx}\r\n"
            f"ST: {search_target}\r\n\r\n").encode("ascii")


def parse(data: bytes) -> SsdpMessage | None:
    """A search response or a NOTIFY; None for anything else (requests of other hosts, garbage, oversize)."""
    head = data[:len(NOTIFY)].upper()
    if len(data) > MAX_DATAGRAM or not (head.startswith(SEARCH_RESPONSE.encode()) or head == NOTIFY.encode()):
        return None
    text = data.decode("latin-1")  # header bytes are octets; nothing here is UTF-8 text we need
    lines = text.replace("\r\n", "\n").split("\n")  # some stacks end lines with a bare LF
    headers: dict[str, str] = {}
    for line in lines[1:MAX_HEADERS + 1]:
        if not line.strip():
            break  # end of the header block
        name, sep, value = line.partition(":")
        name = name.strip().lower()
        if not sep or not name or not name.isascii() or any(c.isspace() for c in name):
            continue
        headers.setdefault(name, value.strip()[:MAX_VALUE])
    return SsdpMessage(lines[0].strip(), headers)


def parse_boot_id(value: object) -> int | None:
    """BOOTID.UPNP.ORG is a non-negative 31-bit integer (UDA 1.1 §1.2.2); anything else is absent."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        return None
    number = int(text)
    return number if number < 2**31 else None


def uuid_of(usn: object) -> str | None:
    """`uuid:XXXX::urn:...` -> `uuid:xxxx` (lower case), or None."""
    if not isinstance(usn, str) or not usn.lower().startswith("uuid:"):
        return None
    return usn.split("::", 1)[0].strip().lower()[:80]


def is_gateway_target(st: str) -> bool:
    return any(kind in st for kind in GATEWAY_KINDS)


def location_host(location: str) -> str | None:
    """The host of a LOCATION URL (IPv6 without brackets), None when it has none or does not parse."""
    try:
        return urlsplit(location).hostname
    except ValueError:
        return None


def accept(message: SsdpMessage, source: str, on_link: Callable[[str], bool]) -> Found | None:
    """A gateway's search response from `source`, or None: ST names a gateway device or service, LOCATION is a
    bounded URL on the host that answered (a device elsewhere cannot steer us to a description on another
    machine), and that host is on the LAN toward the gateway."""
    st, location = message.get("st") or "", message.get("location")
    if not location or len(location) > MAX_LOCATION or not is_gateway_target(st) or not on_link(source):
        return None
    source = source.split("%", 1)[0]  # an IPv6 link-local source carries its scope; a URL's host does not
    if location_host(location) != source:
        return None
    return Found(location, source, st, parse_boot_id(message.get("bootid.upnp.org")))


def parse_search_response(data: bytes, source: str, on_link: Callable[[str], bool]) -> Found | None:
    """A datagram from `source` as a gateway's search response (`accept`), or None. Never raises."""
    message = parse(data)
    if message is None or not message.is_search_response:
        return None
    return accept(message, source, on_link)
