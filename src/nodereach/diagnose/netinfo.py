"""This host's addresses, and the route (source, gateway, interface, on-link networks) toward each server.

From the kernel's /proc tables through `nodereach.routes` (shared with the port-mapping keeper): why not
netlink is said there (the check needs the gateway in its first milliseconds, and the gateway's port-mapping
probe waits for it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

import msgspec

from nodereach.routes import (
    Address6,
    Tables,
    best_route,
    default_route,
    interface_index,
    onlink_networks,
    parse_addresses6,
    parse_fib_trie_locals,
    source_toward,
)


class RouteInfo(msgspec.Struct, frozen=True):
    source: str | None = None
    gateway: str | None = None
    interface: str | None = None
    index: int | None = None
    networks: tuple[str, ...] = ()
    """Prefixes on the outgoing interface (what is on-link toward the gateway)."""
    error: str | None = None


class NetInfo(msgspec.Struct, frozen=True):
    addresses: frozenset[str] = frozenset()
    """Every address configured on this host."""
    addresses6: tuple[Address6, ...] = ()
    """This host's IPv6 addresses with their interface and flags (which ones are temporary)."""
    routes: Mapping[str, RouteInfo] = msgspec.field(default_factory=dict)
    """Route toward each server address."""
    default_gateway4: str | None = None
    default_gateway6: str | None = None
    error: str | None = None


def gather(destinations: Iterable[str], tables: Tables | None = None) -> NetInfo:
    """This host's addresses, default gateways, and the route toward each destination."""
    t = tables or Tables.read()
    if not t.route4 and not t.route6:
        return NetInfo(error="cannot read the routing table (/proc/net/route)")
    routes = t.routes()
    v6 = parse_addresses6(t.if_inet6)
    addresses = parse_fib_trie_locals(t.fib_trie) | {a.address for a in v6}
    found: dict[str, RouteInfo] = {}
    for dest in destinations:
        try:
            ip = ipaddress.ip_address(dest)
        except ValueError:
            found[dest] = RouteInfo(error=f"not an IP address: {dest!r}")
            continue
        source, error = source_toward(str(ip))
        if ip.is_loopback or str(ip) in addresses:  # the local table's, not the main table's
            found[dest] = RouteInfo(source=source, interface="lo", index=interface_index("lo"), error=error)
            continue
        route = best_route(routes, ip)
        if route is None:
            found[dest] = RouteInfo(source=source, error=error or "no route")
            continue
        found[dest] = RouteInfo(source=source, gateway=route.gateway, interface=route.interface,
                                index=interface_index(route.interface),
                                networks=onlink_networks(routes, v6, route.interface), error=error)
    gw4, gw6 = default_route(routes, 4), default_route(routes, 6)
    return NetInfo(addresses=frozenset(addresses), addresses6=tuple(v6), routes=found,
                   default_gateway4=gw4.gateway if gw4 is not None else None,
                   default_gateway6=gw6.gateway if gw6 is not None else None)
