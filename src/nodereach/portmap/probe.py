"""Probe PCP, NAT-PMP and UPnP on the gateway in parallel, and pick a driver (PCP > NAT-PMP > UPnP)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from nodereach.net import Transport
from nodereach.portmap.base import METHODS, Driver, Method, MethodAvailability
from nodereach.portmap.errors import NotOffered, PortmapError, reason_code
from nodereach.portmap.gateway import Gateway, find_gateway_async
from nodereach.portmap.natpmp_client import NatPmpClient
from nodereach.portmap.pcp_client import PcpClient
from nodereach.portmap.ssdp import search_igd

__all__ = ["PROBES", "PROBES6", "MethodAvailability", "probe_all", "probe_gateway"]


async def _probe_pcp(gw: Gateway, wait: float) -> tuple[MethodAvailability, Driver | None]:
    client = PcpClient(gw.address, timeout=wait)
    await client.announce()
    return MethodAvailability(True, None, "ok"), client


async def _probe_natpmp(gw: Gateway, wait: float) -> tuple[MethodAvailability, Driver | None]:
    client = NatPmpClient(gw.address, timeout=wait)
    address = await client.external_address()
    return MethodAvailability(True, address, "ok"), client


async def _probe_upnp(gw: Gateway, wait: float) -> tuple[MethodAvailability, Driver | None]:
    # Our own SSDP search first: the UPnP drivers (and defusedxml, h11) are loaded only when an IGD answered.
    found = await search_igd(gw, wait=wait)
    from nodereach.portmap.upnp_client import UpnpClient

    client = await UpnpClient.from_location(gw, found, wait=wait)
    address = await client.external_address()
    return MethodAvailability(True, address, "ok", detail=client.service_type), client


async def _probe_pcp6(gw: Gateway, wait: float) -> tuple[MethodAvailability, Driver | None]:
    """PCP to the IPv6 gateway, from our stable global address (the one its pinholes will be for)."""
    client = PcpClient(gw.address, timeout=wait, local_address=gw.local_address)
    await client.announce()
    client.pinhole_closer = _upnp_closer(gw, wait)  # replaced by probe_all when UPnP was probed too
    with contextlib.suppress(PortmapError):
        gw4 = await find_gateway_async(family=4)
        if gw4.interface_index == gw.interface_index:
            client.ipv4_sibling = (gw4.address, gw4.local_address)  # same LAN, most likely the same router
    return MethodAvailability(True, gw.local_address, "ok"), client


def _upnp_closer(gw: Gateway, wait: float) -> Callable[[Transport, int], Awaitable[None]]:
    """Close a pinhole through the gateway's UPnP IPv6 firewall control, found when needed (PcpClient.unmap)."""

    async def close(protocol: Transport, port: int) -> None:
        found = await search_igd(gw, wait=wait)
        from nodereach.portmap.upnp_pinhole import UpnpPinholeClient

        await (await UpnpPinholeClient.from_location(gw, found, wait=wait)).close_matching(protocol, port)

    return close


async def _probe_upnp6(gw: Gateway, wait: float) -> tuple[MethodAvailability, Driver | None]:
    found = await search_igd(gw, wait=wait)  # as _probe_upnp: the UPnP drivers only once an IGD answered
    from nodereach.portmap.upnp_pinhole import UpnpPinholeClient

    client = await UpnpPinholeClient.from_location(gw, found, wait=wait)
    enabled, allowed = await client.firewall_status()
    if enabled and not allowed:
        raise NotOffered("UPnP: the router's IPv6 firewall does not allow inbound pinholes "
                           "(GetFirewallStatus: InboundPinholeAllowed 0)",
                           "allow UPnP IPv6 pinholes in the router's settings, or open the port by hand")
    detail = client.service_type + ("" if enabled else " (firewall off: no pinhole needed)")
    return MethodAvailability(True, client.internal_client, "ok", detail=detail), client


PROBES = {"pcp": _probe_pcp, "natpmp": _probe_natpmp, "upnp": _probe_upnp}
PROBES6 = {"pcp": _probe_pcp6, "upnp": _probe_upnp6}
"""IPv6 gateways: what opens a pinhole in the router's firewall."""


async def probe_all(gw: Gateway, wait: float, methods: tuple[Method, ...] = METHODS,
                    ) -> tuple[dict[str, MethodAvailability], dict[str, Driver]]:
    """Run the probes concurrently; each is bounded by `wait` (UPnP: SSDP + description + one action)."""

    v6 = ":" in gw.address
    probes = PROBES6 if v6 else PROBES
    skipped = [m for m in methods if m not in probes]  # NAT-PMP over IPv6: RFC 6886 is IPv4 only
    methods = tuple(m for m in methods if m in probes)

    async def one(name: str) -> tuple[MethodAvailability, Driver | None]:
        try:
            async with asyncio.timeout(wait * (3 if name == "upnp" else 1) + 0.5):
                return await probes[name](gw, wait)
        except PortmapError as exc:
            return MethodAvailability(False, None, reason_code(exc), exc.message), None
        except TimeoutError:
            return MethodAvailability(False, None, "timeout", f"{name}: no complete answer in time"), None
        except OSError as exc:
            return MethodAvailability(False, None, "error", f"{name}: {exc}"), None

    outcomes = await asyncio.gather(*(one(m) for m in methods))
    results: dict[str, MethodAvailability] = {m: MethodAvailability(None, None, "not-probed") for m in METHODS}
    drivers: dict[str, Driver] = {}
    for name in [*skipped, *(["natpmp"] if v6 else [])]:
        results[name] = MethodAvailability(False, None, "ipv4-only", f"{name}: IPv4 only (RFC 6886)")
    for name, (result, driver) in zip(methods, outcomes, strict=True):
        results[name] = result
        if driver is not None:
            drivers[name] = driver
    pcp_driver, upnp_driver = drivers.get("pcp"), drivers.get("upnp")
    if v6 and isinstance(pcp_driver, PcpClient) and upnp_driver is not None:
        from nodereach.portmap.upnp_pinhole import UpnpPinholeClient  # loaded already: it made upnp_driver

        if isinstance(upnp_driver, UpnpPinholeClient):
            pcp_driver.pinhole_closer = upnp_driver.close_matching  # see PcpClient.unmap
    pcp, natpmp = results["pcp"], results["natpmp"]
    if pcp.available and pcp.external_address is None and natpmp.available:
        pcp.external_address = natpmp.external_address  # same daemon on the same port answers both
    return results, drivers


async def probe_gateway(gateway: str | None = None, *, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
    """Which port-mapping protocols the gateway offers, keyed pcp/natpmp/upnp: the check's cheap questions
    (portmap.offers), each bounded by `timeout`, without the drivers `open` needs."""
    from nodereach.portmap.offers import probe_offers

    try:
        gw = await find_gateway_async(gateway)
    except PortmapError as exc:
        return {m: MethodAvailability(None, None, "no-gateway", exc.message) for m in METHODS}
    found = await probe_offers(gw, timeout)
    return {str(name): result for name, result in found.items()}
