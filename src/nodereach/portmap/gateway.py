"""Find the default gateway and our source address from the routing table (netlink, unprivileged).

No packets are sent: `ip route get` is a kernel lookup. The on-link networks of the interface toward the
gateway define "the LAN" for the security checks on SSDP and UPnP URLs.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any

from nodereach.net import FAMILIES, Family, address_kind, family_of, is_public, socket_family
from nodereach.portmap.errors import PortmapError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Gateway:
    address: str
    local_address: str
    interface_index: int | None = None
    networks: tuple[IPNetwork, ...] = field(default=())

    def on_link(self, address: str) -> bool:
        """Is `address` on the LAN toward the gateway (same interface, directly connected)?"""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if ip == ipaddress.ip_address(self.address):
            return True
        return any(ip.version == n.version and ip in n for n in self.networks)


async def _collect(result: Any) -> list[Any]:
    """pyroute2 0.9 returns lists or async iterators depending on the call: accept both."""
    if inspect.isawaitable(result):
        result = await result
    if hasattr(result, "__aiter__"):
        return [item async for item in result]
    return list(result)


GLOBAL_PROBE6 = "2000::1"
"""Any global unicast address: `ip route get` toward it names this host's global IPv6 source address (a
kernel lookup, nothing is sent) when the IPv6 gateway is link-local, as routers that send RAs are."""


async def find_gateway_async(gateway: str | None = None, family: Family = 4) -> Gateway:
    """The default gateway of `family` (or the given one) with our preferred source address toward it.

    IPv6: the source is our global address (the one a pinhole is for); a host whose only IPv6 addresses are
    link-local or unique-local gets a PortmapError that says so."""
    from pyroute2 import AsyncIPRoute

    name = f"IPv{family}"
    try:
        async with AsyncIPRoute() as ipr:
            if gateway is None:
                routes = await _collect(ipr.get_default_routes(family=socket_family(family)))
                gws = [r.get("RTA_GATEWAY") for r in routes if r.get("RTA_GATEWAY")]
                if not gws:
                    raise PortmapError(f"no {name} default gateway in the routing table",
                                       "connect to a network first" if family == 4 else
                                       "this host has no IPv6 route to the internet; use --family 4")
                gateway = str(gws[0])
            if family_of(gateway) != family:
                raise PortmapError(f"{gateway} is not an {name} address")
            found = await _collect(ipr.route("get", dst=gateway))
            if not found:
                raise PortmapError(f"no route to the gateway {gateway}")
            local = found[0].get("RTA_PREFSRC")
            index = found[0].get("RTA_OIF")
            if family == 6 and (local is None or not is_public(str(local))):
                # A link-local gateway (the usual RA default route) gets a link-local source: ask for the
                # source toward the internet instead, on the same interface.
                toward = await _collect(ipr.route("get", dst=GLOBAL_PROBE6))
                local = toward[0].get("RTA_PREFSRC") if toward else local
            if not local:
                raise PortmapError(f"no source address toward the gateway {gateway}")
            if family == 6 and index is not None:
                local = await _stable_address6(ipr, index, str(local))
            if family == 6 and not is_public(str(local)):
                raise PortmapError(f"this host has no global IPv6 address (only {local}, "
                                   f"{address_kind(str(local))}): a pinhole could not make it reachable",
                                   "get a global IPv6 address from the router (SLAAC/DHCPv6), or use --family 4")
            nets: list[IPNetwork] = []
            if index is not None:
                for msg in await _collect(ipr.get_addr(index=index)):
                    addr = msg.get("IFA_ADDRESS")
                    if addr:
                        nets.append(ipaddress.ip_network(f"{addr}/{msg['prefixlen']}", strict=False))
            if not nets:
                nets.append(ipaddress.ip_network(str(local)))
            return Gateway(gateway, str(local), index, tuple(nets))
    except PortmapError:
        raise
    except (OSError, ValueError) as exc:
        raise PortmapError(f"cannot read the routing table: {exc}") from exc


IFA_F_TEMPORARY = 0x01
IFA_F_DADFAILED = 0x08
IFA_F_DEPRECATED = 0x20
IFA_F_TENTATIVE = 0x40


async def _stable_address6(ipr: Any, index: int, preferred: str) -> str:
    """The interface's stable global IPv6 address: the kernel prefers a temporary (RFC 8981) source when
    privacy addresses are on, but a pinhole must be for the address peers learn, which outlives those."""
    candidates: list[tuple[str, int]] = []
    for msg in await _collect(ipr.get_addr(family=socket.AF_INET6, index=index)):
        addr = msg.get("IFA_ADDRESS")
        flags = int(msg.get("IFA_FLAGS") or msg.get("flags") or 0)
        if addr and is_public(str(addr)) and not flags & (IFA_F_DADFAILED | IFA_F_TENTATIVE | IFA_F_DEPRECATED):
            candidates.append((str(addr), flags))
    stable = [a for a, flags in candidates if not flags & IFA_F_TEMPORARY]
    if preferred in stable or not stable:
        return preferred
    return stable[0]


async def host_families() -> tuple[Family, ...]:
    """The families this host can map in: IPv4 with a default gateway, IPv6 with a default gateway and a
    global address (`open`'s default `--family`)."""
    out: list[Family] = []
    for family in FAMILIES:
        try:
            await find_gateway_async(family=family)
        except PortmapError:
            continue
        out.append(family)
    return tuple(out)


def find_gateway(gateway: str | None = None, family: Family = 4) -> Gateway:
    """Synchronous wrapper for code without a running event loop."""
    return asyncio.run(find_gateway_async(gateway, family))
