"""Which port-mapping protocols the gateway offers, asked the cheap way: one PCP ANNOUNCE, one NAT-PMP
external-address request and the UPnP IGD probe (igd_probe), side by side.

What `nodereach check` asks, in its own process: these imports cost a few milliseconds (the codecs, one UDP
exchange, the SSDP search) where the drivers of `open` (probe.probe_all: PCP/NAT-PMP clients with their
announcement listeners, the UPnP drivers) cost more. Never raises: a part that fails
is `available: False` with the reason (errors.reason_code), one that could not be asked `available: None`.
"""

from __future__ import annotations

import asyncio

from nodereach.portmap import igd_probe, natpmp, pcp
from nodereach.portmap.base import Method, MethodAvailability
from nodereach.portmap.errors import PortmapError, reason_code
from nodereach.portmap.gateway import Gateway
from nodereach.portmap.udp import exchange

HTTP_S = 0.5
"""UPnP: once the gateway answered the search, its description and the action within this (LAN: ms)."""


async def pcp_announce(gw: Gateway, wait: float) -> MethodAvailability:
    """PCP ANNOUNCE (RFC 6887 §14.1): the cheapest request a PCP server must answer."""

    def parse(data: bytes) -> pcp.Response | None:
        resp = pcp.decode_response(data)
        return resp if resp.opcode == pcp.OP_ANNOUNCE or resp.result_code == pcp.UNSUPP_VERSION else None

    resp = await exchange(gw.address, pcp.PORT, pcp.encode_announce, parse, wait=wait, what="PCP ANNOUNCE")
    pcp.raise_for_result(resp)
    return MethodAvailability(True, None, "ok")


async def natpmp_address(gw: Gateway, wait: float) -> MethodAvailability:
    """NAT-PMP's external address request (RFC 6886 §3.2)."""

    def parse(data: bytes) -> natpmp.Response | None:
        resp = natpmp.decode_response(data)
        return resp if resp.opcode == natpmp.OP_EXTERNAL or resp.version != natpmp.VERSION else None

    resp = await exchange(gw.address, natpmp.PORT, lambda _local: natpmp.encode_external_address(), parse,
                          wait=wait, what="NAT-PMP external address")
    natpmp.raise_for_result(resp)
    return MethodAvailability(True, resp.external_address, "ok")


async def upnp_address(gw: Gateway, wait: float, http_s: float = HTTP_S) -> MethodAvailability:
    address, control = await igd_probe.probe(gw, wait=wait, http_s=http_s)
    return MethodAvailability(True, address, "ok", detail=control.service_type)


async def ask(name: Method, gw: Gateway, wait: float, http_s: float = HTTP_S) -> MethodAvailability:
    """One protocol on `gw` (`probe_offers`); never raises."""
    try:
        if name == "pcp":
            return await pcp_announce(gw, wait)
        if name == "natpmp":
            return await natpmp_address(gw, wait)
        return await upnp_address(gw, wait, http_s)
    except PortmapError as exc:
        return MethodAvailability(False, None, reason_code(exc), exc.message)
    except OSError as exc:  # a socket the kernel refused: the gateway's part is unknown, not absent
        return MethodAvailability(None, None, "error", f"{name}: {exc.strerror or exc}")


def combine(results: dict[Method, MethodAvailability]) -> dict[Method, MethodAvailability]:
    """PCP's ANNOUNCE carries no address: NAT-PMP's, when the same daemon answered both (the same port)."""
    pcp_r, natpmp_r = results.get("pcp"), results.get("natpmp")
    if pcp_r is not None and natpmp_r is not None and pcp_r.available and pcp_r.external_address is None \
            and natpmp_r.available:
        pcp_r.external_address = natpmp_r.external_address
    return results


async def probe_offers(gw: Gateway, wait: float, http_s: float = HTTP_S) -> dict[Method, MethodAvailability]:
    """PCP, NAT-PMP and UPnP on `gw` at once, each bounded: `wait` for PCP / NAT-PMP's answer and UPnP's search,
    `http_s` more for UPnP's description and action once the gateway answered the search."""
    methods: tuple[Method, ...] = ("pcp", "natpmp", "upnp")
    found = await asyncio.gather(*(ask(m, gw, wait, http_s) for m in methods))
    return combine(dict(zip(methods, found, strict=True)))
