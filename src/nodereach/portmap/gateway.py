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
            ip = ipaddress.ip_address(address)
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


async def find_gateway_async(gateway: str | None = None) -> Gateway:
    """The IPv4 default gateway (or the given one) with our preferred source address toward it."""
    from pyroute2 import AsyncIPRoute

    try:
        async with AsyncIPRoute() as ipr:
            if gateway is None:
                routes = await _collect(ipr.get_default_routes(family=socket.AF_INET))
                gws = [r.get("RTA_GATEWAY") for r in routes if r.get("RTA_GATEWAY")]
                if not gws:
                    raise PortmapError("no IPv4 default gateway in the routing table",
                                       "connect to a network first")
                gateway = str(gws[0])
            ipaddress.ip_address(gateway)
            found = await _collect(ipr.route("get", dst=gateway))
            if not found:
                raise PortmapError(f"no route to the gateway {gateway}")
            local = found[0].get("RTA_PREFSRC")
            index = found[0].get("RTA_OIF")
            if not local:
                raise PortmapError(f"no source address toward the gateway {gateway}")
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


def find_gateway(gateway: str | None = None) -> Gateway:
    """Synchronous wrapper for code without a running event loop."""
    return asyncio.run(find_gateway_async(gateway))
