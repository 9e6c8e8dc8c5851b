"""Find the default gateway and our source address from the routing table (/proc, through nodereach.routes).

No packets are sent: the source address is the kernel's answer to a UDP connect. The on-link networks of the
interface toward the gateway define "the LAN" for the security checks on SSDP and UPnP URLs. Not netlink
(pyroute2): importing it costs ~9.5 MiB of resident memory in a keeper that runs for months (`watch
--keep-mapped`), and the check already reads the same tables.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from nodereach import routes
from nodereach.net import FAMILIES, Family, address_kind, family_of, is_public
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


GLOBAL_PROBE6 = "2000::1"
"""Any global unicast address: the source the kernel picks toward it (a UDP connect, nothing is sent) is this
host's global IPv6 address when the IPv6 gateway is link-local, as routers that send RAs are."""


async def find_gateway_async(gateway: str | None = None, family: Family = 4,
                             tables: routes.Tables | None = None) -> Gateway:
    """The default gateway of `family` (or the given one) with our preferred source address toward it.

    IPv6: the source is our global address (the one a pinhole is for); a host whose only IPv6 addresses are
    link-local or unique-local gets a PortmapError that says so. Async for the callers' sake: reading the
    /proc tables takes microseconds, and it must run on the calling thread (its network namespace)."""
    return find_gateway_in(tables or routes.Tables.read(), gateway, family)


def find_gateway_in(tables: routes.Tables, gateway: str | None = None, family: Family = 4, *,
                    source: Callable[[str], tuple[str | None, str | None]] = routes.source_toward) -> Gateway:
    """`find_gateway_async` over given kernel tables and the kernel's source-address choice (tests pass their
    own)."""
    name = f"IPv{family}"
    if not tables.route4 and not tables.route6:
        raise PortmapError("cannot read the routing table (/proc/net/route)")
    table = tables.routes()
    addresses6 = routes.parse_addresses6(tables.if_inet6)
    if gateway is None:
        default = routes.default_route(table, family)
        if default is None or default.gateway is None:
            raise PortmapError(f"no {name} default gateway in the routing table",
                               "connect to a network first" if family == 4 else
                               "this host has no IPv6 route to the internet; use --family 4")
        gateway, route = default.gateway, default
    else:
        if family_of(gateway) != family:
            raise PortmapError(f"{gateway} is not an {name} address")
        default = routes.default_route(table, family)
        # A link-local gateway is on the interface of the default route that names it, not on every fe80::/64.
        found = default if default is not None and default.gateway == gateway else \
            routes.best_route(table, ipaddress.ip_address(gateway))
        if found is None:
            raise PortmapError(f"no route to the gateway {gateway}")
        route = found
    index = _interface_index(route.interface, addresses6)
    local: str | None
    if family == 4:
        local, error = source(gateway)
    else:
        # The kernel's source toward the internet, on the gateway's interface: toward a link-local gateway it
        # would be link-local, and a pinhole is for the address peers dial.
        local, error = source(gateway) if is_public(gateway) else (None, None)
        if local is None or not is_public(local):
            local, error = source(GLOBAL_PROBE6)
    if not local:
        raise PortmapError(f"no source address toward the gateway {gateway}" + (f" ({error})" if error else ""))
    if family == 6:
        local = routes.stable_address6(addresses6, local, index)
        if not is_public(local):
            raise PortmapError(f"this host has no global IPv6 address (only {local}, "
                               f"{address_kind(local)}): a pinhole could not make it reachable",
                               "get a global IPv6 address from the router (SLAAC/DHCPv6), or use --family 4")
    nets = [ipaddress.ip_network(n) for n in routes.onlink_networks(table, addresses6, route.interface)]
    if not nets:
        nets.append(ipaddress.ip_network(local))
    return Gateway(gateway, local, index, tuple(nets))


def _interface_index(interface: str, addresses6: list[routes.Address6]) -> int | None:
    """if_inet6 names each interface's index; an interface without IPv6 is asked of the kernel by name."""
    found = next((a.index for a in addresses6 if a.interface == interface), None)
    return found if found is not None else routes.interface_index(interface)


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
