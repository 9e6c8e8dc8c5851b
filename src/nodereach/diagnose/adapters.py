"""The gateway's port-mapping protocols (PCP, NAT-PMP, UPnP IGD) for the check, in its own process:
`nodereach.portmap.offers` (one PCP ANNOUNCE, one NAT-PMP request, the lean UPnP IGD probe) costs a few
milliseconds to import, done by the warm-up thread (diagnose.warm) while the first round trips are in flight.

Returns the report's own types and never raises: a part that fails or is cut off yields `unknown` with the
reason, so the rest of the diagnosis still runs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from nodereach.diagnose.budget import Context
from nodereach.diagnose.model import PortmapProtocol
from nodereach.diagnose.netinfo import NetInfo, RouteInfo
from nodereach.diagnose.observations import PortmapObservation

if TYPE_CHECKING:
    from nodereach.portmap.base import Method, MethodAvailability

MODULES = ("nodereach.portmap.offers", "nodereach.portmap.gateway")
"""What the probe imports (diagnose.warm imports it off the main thread first)."""
METHODS: tuple[Method, ...] = ("pcp", "natpmp", "upnp")
WAIT_S = 0.25
"""How long PCP / NAT-PMP's answer and UPnP's search are waited for: LAN round trips are milliseconds, and
routers answer an SSDP search in 50-85 ms (miniupnpd waits 50 ms on purpose: minissdp.c)."""
HTTP_S = 0.5
"""UPnP, once the gateway answered the search: its description and GetExternalIPAddress within this."""
DONE_BY_S = 0.9
"""The gateway probe ends this long after the check started unless the other probes still run (it is a LAN
question; they cross the internet); never past the run's end."""


def _convert(result: MethodAvailability) -> PortmapProtocol:
    address = result.external_address
    return PortmapProtocol(available=result.available, external_address=address[:64] if address else None,
                           reason=(result.reason or None) and str(result.reason)[:200])


async def _settle(tasks: dict[Method, asyncio.Task[PortmapProtocol]], soft_end: float, hard_end: float,
                  others: asyncio.Event | None) -> None:
    """Until every task is done, or `soft_end` passed while `others` is set (the rest of the check is done, or
    no event was given), or `hard_end` in any case."""
    pending = set(tasks.values())
    await asyncio.wait(pending, timeout=max(0.0, soft_end - time.monotonic()))
    if others is None or others.is_set() or all(t.done() for t in pending):
        return
    waiter = asyncio.ensure_future(others.wait())
    try:
        while not all(t.done() for t in pending) and not waiter.done():
            await asyncio.wait({waiter, *(t for t in pending if not t.done())},
                               timeout=max(0.0, hard_end - time.monotonic()), return_when=asyncio.FIRST_COMPLETED)
            if time.monotonic() >= hard_end:
                return
    finally:
        waiter.cancel()


async def portmap(route: RouteInfo | None, *, bound_s: float, hard_s: float | None = None,
                  ready: Awaitable[None] | None = None, others: asyncio.Event | None = None,
                  wait_s: float = WAIT_S, http_s: float = HTTP_S) -> tuple[dict[str, PortmapProtocol], str | None]:
    """PCP / NAT-PMP / UPnP availability on the gateway of `route`, side by side (the quick LAN answers do not
    wait for UPnP's search), after `ready` (the warm-up's imports). A part still unanswered after `bound_s` is
    `unknown`, unless `others` (the rest of the check) is still running: then it may go on until they are done,
    at most `hard_s`."""
    if route is None or route.gateway is None or route.source is None:
        why = "no default gateway" if route is None or route.gateway is None else \
            "no source address toward the gateway"
        if asyncio.iscoroutine(ready):
            ready.close()  # nothing to import for: not awaited, not left to warn
        return {k: PortmapProtocol(reason=why) for k in METHODS}, why
    start = time.monotonic()
    gateway, source, index, networks = route.gateway, route.source, route.index, route.networks
    raw: dict[str, MethodAvailability] = {}
    imported = asyncio.ensure_future(ready) if ready is not None else None  # awaited by all three

    async def one(name: Method) -> PortmapProtocol:
        if imported is not None:
            await asyncio.shield(imported)
        from nodereach.portmap import offers
        from nodereach.portmap.gateway import Gateway

        gw = Gateway(gateway, source, index, tuple(ipaddress.ip_network(n, strict=False) for n in networks))
        raw[name] = await offers.ask(name, gw, wait_s, http_s)
        return _convert(raw[name])

    tasks = {m: asyncio.ensure_future(one(m)) for m in METHODS}
    try:
        await _settle(tasks, start + bound_s, start + max(bound_s, hard_s or bound_s), others)
    finally:
        for task in [*tasks.values(), *([imported] if imported is not None else [])]:
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
    out: dict[str, PortmapProtocol] = {}
    for name, task in tasks.items():
        if task.cancelled():
            out[name] = PortmapProtocol(reason=f"no complete answer within {time.monotonic() - start:.1f} s")
        elif task.exception() is not None:  # a bug must not sink the check: this part is unknown
            out[name] = PortmapProtocol(reason=f"probe failed: {type(task.exception()).__name__}")
        else:
            out[name] = task.result()
    if raw.get("pcp") is not None and raw.get("natpmp") is not None:
        from nodereach.portmap.offers import combine

        out["pcp"] = _convert(combine({"pcp": raw["pcp"], "natpmp": raw["natpmp"]})["pcp"])
    return out, None


async def gateway_protocols(info: NetInfo, primary: str, ctx: Context, ready: Awaitable[None] | None = None,
                            others: asyncio.Event | None = None) -> PortmapObservation:
    """PCP, NAT-PMP and UPnP on the gateway toward the primary server: done by DONE_BY_S after the start, or
    while `others` (the rest of the check) still runs, never past the run's end."""
    started = time.monotonic() - ctx.budget.start
    left = max(0.3, ctx.budget.left() - 0.1)
    result, err = await portmap(info.routes.get(primary), bound_s=min(max(0.5, DONE_BY_S - started), left),
                                hard_s=left, ready=ready, others=others)
    return PortmapObservation(result["pcp"], result["natpmp"], result["upnp"], err)
