"""SSDP messages (UPnP Device Architecture 2.0 §1.2-1.3): the M-SEARCH we send, and the search responses and
NOTIFYs we read. Sans-IO, bounded, total: any bytes give a message or None, never an exception.

Ours rather than async-upnp-client's: finding out whether an Internet Gateway Device answers at all must not
load the UPnP client stack (aiohttp + async-upnp-client: ~12 MiB resident, ~0.4 s of CPU), which a keeper on
a router without UPnP (or an IPv6 keeper trying every pinhole method) would otherwise carry for months. The
stack is loaded once a gateway answered (portmap.probe).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

SSDP_PORT = 1900
SSDP_GROUP = "239.255.255.250"
SSDP_GROUP6 = "ff02::c"
MAX_DATAGRAM = 2048
MAX_HEADERS = 32
"""Header lines read from one datagram (real answers have 6-12)."""
MAX_VALUE = 512
"""A longer header value is cut (LOCATION is checked against its own bound by the caller)."""
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
        return self.start.startswith(SEARCH_RESPONSE)

    @property
    def is_notify(self) -> bool:
        return self.start.startswith(NOTIFY)


def build_msearch(search_target: str, *, ipv6: bool = False, mx: int = 2) -> bytes:
    """An M-SEARCH for `search_target` (UDA 2.0 §1.3.2), addressed to the SSDP group of the family."""
    host = f"[{SSDP_GROUP6.upper()}]:{SSDP_PORT}" if ipv6 else f"{SSDP_GROUP}:{SSDP_PORT}"
    return (f"M-SEARCH * HTTP/1.1\r\nHOST: {host}\r\nMAN: \"ssdp:discover\"\r\nMX: {mx}\r\n"
            f"ST: {search_target}\r\n\r\n").encode("ascii")


def parse(data: bytes) -> SsdpMessage | None:
    """A search response or a NOTIFY; None for anything else (requests of other hosts, garbage, oversize)."""
    if len(data) > MAX_DATAGRAM or not (data.startswith(SEARCH_RESPONSE.encode()) or
                                        data.startswith(NOTIFY.encode())):
        return None
    text = data.decode("latin-1")  # header bytes are octets; nothing here is UTF-8 text we need
    lines = text.replace("\r\n", "\n").split("\n")
    headers: dict[str, str] = {}
    for line in lines[1:MAX_HEADERS + 1]:
        if not line.strip():
            break  # end of the header block
        name, sep, value = line.partition(":")
        name = name.strip().lower()
        if not sep or not name or any(c.isspace() for c in name):
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
