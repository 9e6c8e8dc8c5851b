"""Adapter to the port-mapping package's gateway probe.

Each returns the report's own types and never raises: a package that is missing or fails yields `unknown`
with the reason, so the rest of the diagnosis still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import threading
from typing import Any

from nodereach.diagnose.model import PortmapProtocol


def warm_up() -> None:
    """Import the port-mapping package in the background now: its imports (UPnP, aiohttp) take longer than
    the LAN round trips of the probe itself."""
    def body() -> None:
        with contextlib.suppress(Exception):
            importlib.import_module("nodereach.portmap.probe")

    threading.Thread(target=body, name="nodereach-portmap-import", daemon=True).start()


def _in_thread(coro_fn: Any, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
    """Run a coroutine on a plain asyncio loop in a daemon thread: isolation from our loop (a slow or hostile
    gateway cannot stall the other probes) and pyroute2's async netlink works there. Abandoned on timeout."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    def done(ok: bool, value: Any) -> None:
        if fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def body() -> None:
        try:
            value = asyncio.run(coro_fn(*args, **kwargs))
            loop.call_soon_threadsafe(done, True, value)
        except BaseException as exc:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(done, False, exc)

    threading.Thread(target=body, name="nodereach-portmap-probe", daemon=True).start()
    return fut


def _convert(raw: Any) -> dict[str, PortmapProtocol]:
    out: dict[str, PortmapProtocol] = {}
    for key in ("pcp", "natpmp", "upnp"):
        item = raw.get(key) if isinstance(raw, dict) else getattr(raw, key, None)
        if item is None:
            out[key] = PortmapProtocol(reason="not reported")
            continue
        get = item.get if isinstance(item, dict) else (lambda k, _i=item: getattr(_i, k, None))
        available = get("available")
        ext = get("external_address")
        reason = get("reason") or get("error")
        out[key] = PortmapProtocol(available=available if isinstance(available, bool) else None,
                                   external_address=str(ext) if ext else None,
                                   reason=str(reason)[:200] if reason else None)
    return out


async def _probe_methods(mod: Any, gw: Any, wait_s: float, methods: tuple[str, ...]) -> dict[str, Any]:
    results, drivers = await mod.probe_all(gw, wait_s, methods)
    for driver in drivers.values():
        with contextlib.suppress(Exception):
            await driver.close()
    return {m: results[m] for m in methods}


async def portmap(gateway: str | None, *, wait_s: float, bound_s: float, local_address: str | None = None,
                  index: int | None = None, networks: tuple[str, ...] = (),
                  ) -> tuple[dict[str, PortmapProtocol], str | None]:
    """PCP / NAT-PMP / UPnP availability from the port-mapping package; unknown if it is missing.

    With the route already known, PCP+NAT-PMP and UPnP run side by side (each in its own thread), so the
    quick LAN answers do not wait for UPnP's SSDP search; a part that misses `bound_s` is `unknown`.
    """
    empty = {k: PortmapProtocol() for k in ("pcp", "natpmp", "upnp")}
    if gateway is None:
        for v in empty.values():
            v.reason = "no default gateway"
        return empty, "no default gateway"
    try:
        mod = importlib.import_module("nodereach.portmap.probe")
        gw_mod = importlib.import_module("nodereach.portmap.gateway")
    except ImportError:
        mod = gw_mod = None
    if mod is None or not hasattr(mod, "probe_all") or local_address is None:
        return await _portmap_whole(gateway, wait_s=wait_s, bound_s=bound_s)
    import ipaddress

    gw = gw_mod.Gateway(gateway, local_address, index, tuple(ipaddress.ip_network(n) for n in networks))
    out = dict(empty)
    jobs = {("pcp", "natpmp"): _in_thread(_probe_methods, mod, gw, wait_s, ("pcp", "natpmp")),
            ("upnp",): _in_thread(_probe_methods, mod, gw, wait_s, ("upnp",))}
    import time

    deadline = time.monotonic() + bound_s
    for methods, fut in jobs.items():
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                got = _convert(await fut)
            out.update({m: got[m] for m in methods})
        except TimeoutError:
            for m in methods:
                out[m] = PortmapProtocol(reason=f"no complete answer within {bound_s:.1f} s")
        except Exception as exc:
            for m in methods:
                out[m] = PortmapProtocol(reason=f"probe failed: {type(exc).__name__}")
    return out, None


async def _portmap_whole(gateway: str, *, wait_s: float, bound_s: float,
                         ) -> tuple[dict[str, PortmapProtocol], str | None]:
    """Fallback: the package's one-call probe (finds the gateway itself)."""
    empty = {k: PortmapProtocol() for k in ("pcp", "natpmp", "upnp")}
    probe = None
    for mod in ("nodereach.portmap", "nodereach.portmap.probe", "nodereach.portmap.gateway"):
        try:
            probe = getattr(importlib.import_module(mod), "probe_gateway", None)
        except ImportError:
            probe = None
        if probe is not None:
            break
    if probe is None:
        for v in empty.values():
            v.reason = "port-mapping probe not available in this build"
        return empty, "port-mapping probe not available"
    try:
        async with asyncio.timeout(bound_s):
            raw = await _in_thread(probe, gateway, timeout=wait_s)
    except TimeoutError:
        for v in empty.values():
            v.reason = f"no complete answer within {bound_s:.1f} s"
        return empty, "port-mapping probe timed out"
    except Exception as exc:
        for v in empty.values():
            v.reason = f"probe failed: {type(exc).__name__}"
        return empty, "port-mapping probe failed"
    return _convert(raw), None
