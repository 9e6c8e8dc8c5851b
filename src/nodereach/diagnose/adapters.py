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


async def portmap(gateway: str | None, *, wait_s: float, bound_s: float,
                  ) -> tuple[dict[str, PortmapProtocol], str | None]:
    """PCP / NAT-PMP / UPnP availability from the port-mapping package's probe; unknown if it is missing."""
    empty = {k: PortmapProtocol() for k in ("pcp", "natpmp", "upnp")}
    if gateway is None:
        for v in empty.values():
            v.reason = "no default gateway"
        return empty, "no default gateway"
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
    return out, None
