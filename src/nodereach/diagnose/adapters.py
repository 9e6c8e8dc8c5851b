"""Adapter to the port-mapping package's gateway probe.

Each returns the report's own types and never raises: a package that is missing or fails yields `unknown`
with the reason, so the rest of the diagnosis still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import sys
import threading
import time
from typing import Any

from nodereach.diagnose.budget import Context
from nodereach.diagnose.model import PortmapProtocol
from nodereach.diagnose.netinfo import NetInfo
from nodereach.diagnose.observations import PortmapObservation

MAX_CHILD_OUTPUT = 1 << 16
SSDP_WAIT_S = 0.25
"""How long the UPnP search listens for the gateway's answers (LAN round trips are milliseconds)."""
DONE_BY_S = 0.9
"""The gateway probe is bounded to end this long after the check started (it is a LAN question; the other
probes cross the internet), or later if it started late, never past the run's end."""


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


class ProbeChild:
    """A child interpreter that runs the UPnP probe. Started at the beginning of the check so that its imports
    (aiohttp, async-upnp-client: ~0.4 s of CPU) run on another core while netlink finds the gateway, instead of
    holding this process's GIL; it then reads the gateway as one JSON line on stdin and answers one line."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.started: asyncio.Future[None] = asyncio.ensure_future(self._start())

    async def _start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nodereach.diagnose.adapters", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)

    async def probe(self, spec: dict[str, Any], methods: tuple[str, ...]) -> dict[str, PortmapProtocol]:
        await self.started
        proc = self.proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps({**spec, "methods": list(methods)}).encode() + b"\n")
            await proc.stdin.drain()
            proc.stdin.close()
            out = await proc.stdout.read(MAX_CHILD_OUTPUT)
            doc = json.loads(out)
            return _convert({m: doc[m] for m in methods})  # same checks as for in-process results
        finally:
            await self.close()

    async def close(self) -> None:
        if not self.started.done():
            self.started.cancel()
        with contextlib.suppress(BaseException):
            await self.started
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


async def _child_main() -> dict[str, Any]:
    import ipaddress

    mod = importlib.import_module("nodereach.portmap.probe")
    gw_mod = importlib.import_module("nodereach.portmap.gateway")
    with contextlib.suppress(ImportError):
        importlib.import_module("nodereach.portmap.upnp_client")  # the slow part, before the gateway is known
    line = await asyncio.to_thread(sys.stdin.readline, MAX_CHILD_OUTPUT)
    spec = json.loads(line)
    gw = gw_mod.Gateway(spec["gateway"], spec["local"], spec["index"],
                        tuple(ipaddress.ip_network(n) for n in spec["networks"]))
    methods = tuple(spec["methods"])
    got = _convert(await _probe_methods(mod, gw, float(spec["wait_s"]), methods))
    return {m: {"available": got[m].available, "external_address": got[m].external_address,
                "reason": got[m].reason} for m in methods}


async def _probe_methods(mod: Any, gw: Any, wait_s: float, methods: tuple[str, ...]) -> dict[str, Any]:
    results, drivers = await mod.probe_all(gw, wait_s, methods)
    for driver in drivers.values():
        with contextlib.suppress(Exception):
            await driver.close()
    return {m: results[m] for m in methods}


async def _until(fut: asyncio.Future[Any], soft_end: float, hard_end: float, others: asyncio.Event | None) -> Any:
    """`fut`'s result; TimeoutError once `soft_end` passed and `others` is set (the rest of the check is done, or
    no event was given), or at `hard_end` in any case."""
    while True:
        now = time.monotonic()
        if fut.done():
            return fut.result()
        if now >= hard_end or (now >= soft_end and (others is None or others.is_set())):
            raise TimeoutError
        rest = asyncio.ensure_future(others.wait()) if others is not None and now >= soft_end else None
        try:
            await asyncio.wait({fut} if rest is None else {fut, rest}, return_when=asyncio.FIRST_COMPLETED,
                               timeout=(soft_end if now < soft_end else hard_end) - now)
        finally:
            if rest is not None:
                rest.cancel()


async def portmap(gateway: str | None, *, wait_s: float, bound_s: float, local_address: str | None = None,
                  index: int | None = None, networks: tuple[str, ...] = (), child: ProbeChild | None = None,
                  hard_s: float | None = None, others: asyncio.Event | None = None,
                  ) -> tuple[dict[str, PortmapProtocol], str | None]:
    """PCP / NAT-PMP / UPnP availability from the port-mapping package; unknown if it is missing.

    With the route already known, PCP+NAT-PMP (in a thread) and UPnP (in `child` if given, else a thread) run
    side by side, so the quick LAN answers do not wait for UPnP's SSDP search. A part still unanswered after
    `bound_s` is `unknown`, unless `others` (the rest of the check) is still running: then it may go on until
    they are done, at most `hard_s`.
    """
    empty = {k: PortmapProtocol() for k in ("pcp", "natpmp", "upnp")}
    if gateway is None:
        for v in empty.values():
            v.reason = "no default gateway"
        return empty, "no default gateway"
    mod: Any = None
    gw_mod: Any = None
    try:
        mod = importlib.import_module("nodereach.portmap.probe")
        gw_mod = importlib.import_module("nodereach.portmap.gateway")
    except ImportError:
        pass
    if mod is None or gw_mod is None or not hasattr(mod, "probe_all") or local_address is None:
        return await _portmap_whole(gateway, wait_s=wait_s, bound_s=bound_s)
    import ipaddress

    gw = gw_mod.Gateway(gateway, local_address, index, tuple(ipaddress.ip_network(n) for n in networks))
    out = dict(empty)
    jobs = {("pcp", "natpmp"): _in_thread(_probe_methods, mod, gw, wait_s, ("pcp", "natpmp")),
            ("upnp",): asyncio.ensure_future(child.probe(
                {"gateway": gateway, "local": local_address, "index": index, "networks": list(networks),
                 "wait_s": wait_s}, ("upnp",))) if child is not None else
            _in_thread(_probe_methods, mod, gw, wait_s, ("upnp",))}
    soft_end = time.monotonic() + bound_s
    hard_end = time.monotonic() + max(bound_s, hard_s if hard_s is not None else bound_s)
    for methods, fut in jobs.items():
        try:
            raw = await _until(fut, soft_end, hard_end, others)
            got = raw if all(isinstance(v, PortmapProtocol) for v in raw.values()) else _convert(raw)
            out.update({m: got[m] for m in methods})
        except TimeoutError:
            fut.cancel()  # given up: its late failure (the child is killed at the end) is nobody's to read
            waited = time.monotonic() - soft_end + bound_s
            for m in methods:
                out[m] = PortmapProtocol(reason=f"no complete answer within {waited:.1f} s")
        except Exception as exc:
            for m in methods:
                out[m] = PortmapProtocol(reason=f"probe failed: {type(exc).__name__}")
    return out, None


async def gateway_protocols(info: NetInfo, primary: str, child: ProbeChild | None, ctx: Context,
                            others: asyncio.Event | None = None) -> PortmapObservation:
    """PCP, NAT-PMP and UPnP on the gateway toward the primary server: done by DONE_BY_S after the start, or
    while `others` (the rest of the check) still runs, never past the run's end."""
    route = info.routes.get(primary)
    started = time.monotonic() - ctx.budget.start
    result, err = await portmap(route.gateway if route is not None else None, wait_s=SSDP_WAIT_S,
                                bound_s=min(max(0.5, DONE_BY_S - started), max(0.3, ctx.budget.left() - 0.1)),
                                local_address=route.source if route else None,
                                index=route.index if route else None, networks=route.networks if route else (),
                                child=child, hard_s=max(0.3, ctx.budget.left() - 0.1), others=others)
    return PortmapObservation(result["pcp"], result["natpmp"], result["upnp"], err)


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


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_child_main())))
