"""The IGD actions nodereach calls, their in-arguments typed as the specs fix them, and their SOAP requests.
Sans-IO: `request(service_type, action, values)` gives the body and headers, byte for byte; the answer is read
by soap.parse_soap.

Why a table and not the service description (SCPD): the UPnP IGD specs fix every argument's name, order and
type (ports ui2, leases ui4, booleans, strings), so reading a router's SCPD adds a fetch, a parse of more hostile
XML and a way for a lying SCPD to change what we send, and tells nothing we do not know. Whether a router
offers an action is learnt by calling it: fault 401 (or 602) is soap.ActionNotOffered.

References (argument order and types per action):
- [IGD1] UPnP WANIPConnection:1 Service Template 1.01 (2001), §2.2 (state variables), §2.4 (actions):
  https://upnp.org/specs/gw/UPnP-gw-WANIPConnection-v1-Service.pdf (WANPPPConnection:1 has the same actions)
- [IGD2] UPnP WANIPConnection:2 Service (2010), AddAnyPortMapping:
  https://upnp.org/specs/gw/UPnP-gw-WANIPConnection-v2-Service.pdf
- [6FC] UPnP WANIPv6FirewallControl:1 Service (2010), §2.3 (state variables), §2.4 (actions):
  https://upnp.org/specs/gw/UPnP-gw-WANIPv6FirewallControl-v1-Service.pdf
- [UDA] UPnP Device Architecture 1.0 (2008), §2.5 (data types), §3.2.1 (arguments in the SCPD's order)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

from nodereach.portmap.errors import PortmapError
from nodereach.portmap.soap import envelope, soap_headers

WAN_SERVICES = (
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
)
"""The services that map ports, best first: the check's probe and upnp_client.UpnpClient look for these."""
FIREWALL_SERVICE = "urn:schemas-upnp-org:service:WANIPv6FirewallControl:1"
"""IPv6 pinholes ([6FC]): upnp_pinhole.UpnpPinholeClient."""

ArgType = Literal["string", "ui2", "ui4", "boolean"]
"""[UDA] §2.5 data types the IGD actions use."""

_BOUNDS = {"ui2": 0xFFFF, "ui4": 0xFFFFFFFF}
MAX_STRING = 256
"""Longest string argument sent (ours: addresses and `nodereach PORT/PROTO`)."""
_XML_TEXT = re.compile("[\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")
"""Characters a string argument may hold: XML 1.0 Char without the control characters (which a parser would
normalise or refuse), so what we send is what the router reads."""

_MAPPING_KEY: tuple[tuple[str, ArgType], ...] = (
    ("NewRemoteHost", "string"), ("NewExternalPort", "ui2"), ("NewProtocol", "string"))
_NEW_MAPPING: tuple[tuple[str, ArgType], ...] = (
    *_MAPPING_KEY, ("NewInternalPort", "ui2"), ("NewInternalClient", "string"), ("NewEnabled", "boolean"),
    ("NewPortMappingDescription", "string"), ("NewLeaseDuration", "ui4"))
_PINHOLE: tuple[tuple[str, ArgType], ...] = (
    ("RemoteHost", "string"), ("RemotePort", "ui2"), ("InternalClient", "string"), ("InternalPort", "ui2"),
    ("Protocol", "ui2"))

ACTIONS: dict[str, tuple[tuple[str, ArgType], ...]] = {
    # WANIPConnection:1/2, WANPPPConnection:1
    "GetExternalIPAddress": (),  # [IGD1] §2.4.18
    "AddPortMapping": _NEW_MAPPING,  # [IGD1] §2.4.16
    "AddAnyPortMapping": _NEW_MAPPING,  # [IGD2] (WANIPConnection:2 only)
    "GetSpecificPortMappingEntry": _MAPPING_KEY,  # [IGD1] §2.4.15
    "DeletePortMapping": _MAPPING_KEY,  # [IGD1] §2.4.17
    "GetGenericPortMappingEntry": (("NewPortMappingIndex", "ui2"),),  # [IGD1] §2.4.14
    # WANIPv6FirewallControl:1 ([6FC] §2.4; Protocol is the IANA number, UniqueID a ui2, LeaseTime a ui4)
    "GetFirewallStatus": (),
    "GetOutboundPinholeTimeout": _PINHOLE,
    "AddPinhole": (*_PINHOLE, ("LeaseTime", "ui4")),
    "UpdatePinhole": (("UniqueID", "ui2"), ("NewLeaseTime", "ui4")),
    "DeletePinhole": (("UniqueID", "ui2"),),
    "CheckPinholeWorking": (("UniqueID", "ui2"),),
}

Value = str | int | bool


def encode_value(kind: ArgType, value: Value) -> str:
    """One argument as its [UDA] §2.5 text; ValueError when the value does not fit the type."""
    if kind == "boolean":
        if not isinstance(value, bool):
            raise ValueError(f"{value!r} is not a boolean")
        return "1" if value else "0"
    if kind == "string":
        if not isinstance(value, str) or len(value) > MAX_STRING or not _XML_TEXT.fullmatch(value):
            raise ValueError(f"{str(value)[:40]!r} is not a string UPnP can carry")
        return value
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _BOUNDS[kind]:
        raise ValueError(f"{str(value)[:40]!r} is not a {kind}")
    return str(value)


def encode_args(action: str, values: Mapping[str, Value]) -> tuple[tuple[str, str], ...]:
    """The in-arguments of `action` in the spec's order, typed; PortmapError for an unknown action, a missing
    or extra argument, or a value of the wrong type (a bug of ours, said as such, never sent)."""
    spec = ACTIONS.get(action)
    if spec is None:
        raise PortmapError(f"UPnP: cannot build {action}: not an action nodereach knows")
    names = [name for name, _kind in spec]
    if set(values) != set(names):
        raise PortmapError(f"UPnP: cannot build {action}: arguments {sorted(values)} instead of {names}")
    try:
        return tuple((name, encode_value(kind, values[name])) for name, kind in spec)
    except ValueError as exc:
        raise PortmapError(f"UPnP: cannot build {action}: {exc}") from exc


def request(service_type: str, action: str, values: Mapping[str, Value]) -> tuple[bytes, tuple[tuple[str, str], ...]]:
    """(body, headers) of the control request for `action` on `service_type`."""
    return envelope(service_type, action, encode_args(action, values)), soap_headers(service_type, action)
