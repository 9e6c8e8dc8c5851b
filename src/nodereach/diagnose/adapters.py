"""The gateway's port-mapping protocols (PCP, NAT-PMP, UPnP IGD) for the check, from the port-mapping package
run in child interpreters (diagnose.gateway_child: its imports stay off the check's GIL).

Two children start with the check: PCP + NAT-PMP (quick LAN answers) and UPnP (slow imports, an SSDP
search). Each returns the report's own types and never raises: a child that is missing, fails or answers
garbage yields `unknown` with the reason, so the rest of the diagnosis still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
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
probes cross the internet), unless its child interpreter was late (below), never past the run's end."""
AFTER_READY_S = 0.45
"""Once a child's imports are done: time for the SSDP search (SSDP_WAIT_S; routers answer in 50-85 ms), the
description and one action on the LAN. On a loaded host the imports alone may take a second (aiohttp and
async-upnp-client: ~0.45 s of CPU): the bound follows them instead of cutting UPnP off."""
READY_MAX_S = 2.0
"""A child not ready this long after the check started is given up (its part is `unknown`)."""
GROUPS: tuple[tuple[str, ...], ...] = (("pcp", "natpmp"), ("upnp",))


def _convert(raw: Any, methods: tuple[str, ...]) -> dict[str, PortmapProtocol]:
    """A child's answer in the report's types; anything malformed is `unknown` with a reason."""
    out: dict[str, PortmapProtocol] = {}
    for key in methods:
        item = raw.get(key) if isinstance(raw, dict) else None
        if not isinstance(item, dict):
            out[key] = PortmapProtocol(reason="not reported")
            continue
        available, ext, reason = item.get("available"), item.get("external_address"), item.get("reason")
        out[key] = PortmapProtocol(available=available if isinstance(available, bool) else None,
                                   external_address=str(ext)[:64] if isinstance(ext, str) and ext else None,
                                   reason=str(reason)[:200] if reason else None)
    return out


class ProbeChild:
    """One child interpreter probing `methods` on the gateway. Started at the beginning of the check so that its
    imports run on another core; `probe()` hands it the gateway and reads its one answer."""

    def __init__(self, methods: tuple[str, ...]) -> None:
        self.methods = methods
        self.ready_at: float | None = None
        """When the child said its imports are done (None: not yet)."""
        self.ready = asyncio.Event()
        self.spawned: asyncio.Future[asyncio.subprocess.Process] = asyncio.ensure_future(self._spawn())
        self.readiness: asyncio.Future[None] = asyncio.ensure_future(self._wait_ready())

    async def _spawn(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nodereach.diagnose.gateway_child", *self.methods, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)

    async def _wait_ready(self) -> None:
        proc = await self.spawned
        assert proc.stdout is not None
        await proc.stdout.readline()  # {"ready": true}: its imports are done (or EOF: it died)
        self.ready_at = time.monotonic()
        self.ready.set()

    async def probe(self, spec: dict[str, Any]) -> dict[str, PortmapProtocol]:
        proc = await asyncio.shield(self.spawned)
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(spec).encode() + b"\n")
            await proc.stdin.drain()
            proc.stdin.close()
            await asyncio.shield(self.readiness)  # its first line is read there
            out = await proc.stdout.read(MAX_CHILD_OUTPUT)
            return _convert(json.loads(out), self.methods)
        finally:
            await self.close()

    async def close(self) -> None:
        for task in (self.readiness, self.spawned):
            if not task.done():
                task.cancel()
        with contextlib.suppress(BaseException):
            await self.readiness
        proc = self.spawned.result() if self.spawned.done() and not self.spawned.cancelled() \
            and self.spawned.exception() is None else None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


class GatewayProbes:
    """The children of one check (PCP + NAT-PMP, and UPnP), started together."""

    def __init__(self, groups: tuple[tuple[str, ...], ...] = GROUPS) -> None:
        self.children = tuple(ProbeChild(methods) for methods in groups)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.children))


def _soft_end(child: ProbeChild, bound_end: float, ready_by: float) -> float:
    """Until when a child's answer is waited for: `bound_end`, or `AFTER_READY_S` after its imports were done if
    that is later; while it is not ready, until `ready_by`."""
    if child.ready_at is None:
        return ready_by
    return max(bound_end, child.ready_at + AFTER_READY_S)


async def _until(fut: asyncio.Future[Any], child: ProbeChild, bound_end: float, ready_by: float, hard_end: float,
                 others: asyncio.Event | None) -> Any:
    """`fut`'s result; TimeoutError once the soft end (_soft_end) passed and `others` is set (the rest of the
    check is done, or no event was given), or at `hard_end` in any case."""
    while True:
        now = time.monotonic()
        if fut.done():
            return fut.result()
        soft_end = min(hard_end, _soft_end(child, bound_end, ready_by))
        if now >= hard_end or (now >= soft_end and (others is None or others.is_set())):
            raise TimeoutError
        extra: list[asyncio.Future[Any]] = []
        if child.ready_at is None:
            extra.append(asyncio.ensure_future(child.ready.wait()))  # the soft end moves then
        if others is not None and now >= soft_end:
            extra.append(asyncio.ensure_future(others.wait()))
        try:
            await asyncio.wait({fut, *extra}, return_when=asyncio.FIRST_COMPLETED,
                               timeout=(soft_end if now < soft_end else hard_end) - now)
        finally:
            for waiter in extra:
                waiter.cancel()


async def portmap(gateway: str | None, probes: GatewayProbes, *, wait_s: float, bound_s: float,
                  local_address: str | None = None, index: int | None = None, networks: tuple[str, ...] = (),
                  hard_s: float | None = None, ready_s: float = 0.0, others: asyncio.Event | None = None,
                  ) -> tuple[dict[str, PortmapProtocol], str | None]:
    """PCP / NAT-PMP / UPnP availability on `gateway`, each group in its child, side by side (the quick LAN
    answers do not wait for UPnP's SSDP search). A part still unanswered after `bound_s` (or AFTER_READY_S after
    its child's imports were done, if later; while a child is not ready: until `ready_s`) is `unknown`, unless
    `others` (the rest of the check) is still running: then it may go on until they are done, at most `hard_s`.
    """
    if gateway is None or local_address is None:
        why = "no default gateway" if gateway is None else "no source address toward the gateway"
        return {k: PortmapProtocol(reason=why) for g in GROUPS for k in g}, why
    out = {k: PortmapProtocol(reason="not probed") for g in GROUPS for k in g}
    spec = {"gateway": gateway, "local": local_address, "index": index, "networks": list(networks),
            "wait_s": wait_s}
    jobs = [(child, asyncio.ensure_future(child.probe(spec))) for child in probes.children]
    start = time.monotonic()
    bound_end = start + bound_s
    hard_end = start + max(bound_s, hard_s if hard_s is not None else bound_s)
    ready_by = min(hard_end, start + max(bound_s, ready_s))
    for child, fut in jobs:
        try:
            out.update(await _until(fut, child, bound_end, ready_by, hard_end, others))
        except TimeoutError:
            fut.cancel()  # given up: its late failure (the child is killed at the end) is nobody's to read
            waited = time.monotonic() - start
            why = "no complete answer" if child.ready_at is not None else "not ready (imports)"
            out.update({m: PortmapProtocol(reason=f"{why} within {waited:.1f} s") for m in child.methods})
        except Exception as exc:  # the child failed to start, died, or answered garbage
            out.update({m: PortmapProtocol(reason=f"probe failed: {type(exc).__name__}") for m in child.methods})
    return out, None


async def gateway_protocols(info: NetInfo, primary: str, probes: GatewayProbes, ctx: Context,
                            others: asyncio.Event | None = None) -> PortmapObservation:
    """PCP, NAT-PMP and UPnP on the gateway toward the primary server: done by DONE_BY_S after the start, or
    while `others` (the rest of the check) still runs, never past the run's end."""
    route = info.routes.get(primary)
    started = time.monotonic() - ctx.budget.start
    result, err = await portmap(route.gateway if route is not None else None, probes, wait_s=SSDP_WAIT_S,
                                bound_s=min(max(0.5, DONE_BY_S - started), max(0.3, ctx.budget.left() - 0.1)),
                                local_address=route.source if route else None,
                                index=route.index if route else None, networks=route.networks if route else (),
                                hard_s=max(0.3, ctx.budget.left() - 0.1),
                                ready_s=READY_MAX_S - started, others=others)
    return PortmapObservation(result["pcp"], result["natpmp"], result["upnp"], err)
