"""Port mapping latency against miniupnpd in a lab, next to the peer tools (upnpc, natpmpc), same run.

Measures, inside the lab's client namespace:
  * in-process: probe of all three protocols (parallel) and one map per protocol with nodereach's drivers;
  * whole command: `nodereach open P --once --method M` vs `upnpc -i -e x -a ...` / `natpmpc -a ...`;
  * recovery, per method (and for IPv6 pinholes: PCP, UPnP), with `open`'s defaults (lease 3600 s, a check
    every 30 s): miniupnpd restarted with its state lost; from the moment the router answers again (the lab's
    readiness check, every 50 ms) to the keeper's re-created mapping and to inbound UDP flowing again
    (issue 12: within 5 s).
Needs root. Bounded: ROUNDS rounds each (RECOVERY_ROUNDS for the restarts).
Run with `--recovery-only` to skip the latency part.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from nodereach.lab import Lab
from nodereach.lab import addresses as A
from nodereach.lab import probe as P
from nodereach.net import Family
from nodereach.portmap import pcp
from nodereach.portmap.base import Slot
from nodereach.portmap.gateway import find_gateway_async
from nodereach.portmap.keeper import Event, open_port
from nodereach.portmap.probe import probe_all
from portmap_helpers import WAN, restart_miniupnpd_losing_state, wait_inbound

ROUNDS = 5
RECOVERY_ROUNDS = 3
NODEREACH = str(Path(sys.executable).parent / "nodereach")


def ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:7.1f} ms  (min {min(values) * 1000:.1f}, n={len(values)})"


async def in_process() -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"probe": [], "pcp": [], "natpmp": [], "upnp": []}
    for i in range(ROUNDS):
        gw = await find_gateway_async()
        t = time.perf_counter()
        _probes, drivers = await probe_all(gw, 1.0)
        out["probe"].append(time.perf_counter() - t)
        for n, (name, driver) in enumerate(drivers.items()):
            slot = Slot("udp", 32000 + 10 * i + n, pcp.new_nonce())
            t = time.perf_counter()
            slot.grant = await driver.map(slot, slot.internal_port, 60)
            out[name].append(time.perf_counter() - t)
            await driver.unmap(slot)
    return out


def timed(lab: Lab, argv: list[str]) -> float:
    t = time.perf_counter()
    r = lab.exec("client", argv, check=False, timeout=30)
    elapsed = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {r.stdout[-300:]} {r.stderr[-300:]}")
    return elapsed


def _inbound6(lab: Lab, port: int, within: float) -> float | None:
    """Seconds until unsolicited UDP from `peer` reaches the client's IPv6 address through the pinhole."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        lab.flush_conntrack()
        if P.inbound_reaches(lab, "client", (A.CLIENT_IP6, port), "udp", src_host="peer", timeout=0.3):
            return time.monotonic() - start
    return None


async def recovery(lab: Lab, method: str, port: int, family: Family = 4) -> tuple[float | None, float | None]:
    """(re-created, inbound flows) in seconds after the restarted router answers; None: not within 35 s."""
    import queue
    import threading

    ready: queue.Queue[object] = queue.Queue()
    stop = threading.Event()
    mapped: list[float] = []
    reported = threading.Event()

    def on_change(ev: Event) -> None:
        if ev.kind in ("mapped", "renewed") and restarting.is_set():
            mapped.append(time.monotonic())
            reported.set()

    restarting = threading.Event()

    async def keep() -> None:
        async with open_port(port, "udp", method=method, family=family) as m:  # type: ignore[arg-type]
            # re-created: `mapped` after a detected restart, `renewed` when an announcement's renew-all did it
            m.on_change(on_change)
            ready.put(m.endpoint)
            await asyncio.to_thread(stop.wait)

    task = asyncio.ensure_future(lab.run_async("client", keep))
    try:
        await asyncio.to_thread(ready.get, True, 15)
        await asyncio.sleep(3)  # epochs advance
        stopped = time.monotonic()
        restarting.set()
        await asyncio.to_thread(restart_miniupnpd_losing_state, lab)
        answering = time.monotonic()
        if family == 4:
            back = await asyncio.to_thread(wait_inbound, lab, "udp", (WAN, port), port, 35.0)
        else:
            back = await asyncio.to_thread(_inbound6, lab, port, 35.0)
        # inbound can flow before the keeper's read-back (UPnP) ends and it reports: give it 5 s more
        await asyncio.to_thread(reported.wait, 5)
        after = [t for t in mapped if t >= stopped]
        return (after[0] - answering if after else None), back
    finally:
        stop.set()
        await task


def recovery_table(lab: Lab, family: Family = 4) -> None:
    what = "mappings" if family == 4 else "IPv6 pinholes (ipv6-firewalled)"
    print(f"miniupnpd restart (state lost), {what}, open's defaults (lease 3600 s, check every 30 s); seconds "
          "after the router answers again:")
    methods = ("pcp", "natpmp", "upnp") if family == 4 else ("pcp", "upnp")
    for n, method in enumerate(methods):
        created: list[float] = []
        flowing: list[float] = []
        missed = 0
        for r in range(RECOVERY_ROUNDS):
            recreated, back = asyncio.run(recovery(lab, method, 32100 + 100 * (family == 6) + 10 * n + r, family))
            print(f"    {method} round {r + 1}: re-created {recreated}, inbound flows {back}", file=sys.stderr)
            if recreated is None or back is None:
                missed += 1
                continue
            created.append(recreated)
            flowing.append(back)
        if not created:
            print(f"  {method:<7} not back within 35 s in {missed}/{RECOVERY_ROUNDS} rounds")
            continue
        print(f"  {method:<7} re-created median {statistics.median(created):6.2f} s (max {max(created):.2f}), "
              f"inbound flows median {statistics.median(flowing):6.2f} s (max {max(flowing):.2f}; polled every "
              f"~0.5 s), missed {missed}/{RECOVERY_ROUNDS}")
    if family == 4:
        print("  (upnpc/natpmpc do not keep mappings: they never notice)")


def recovery_tables() -> None:
    with Lab("port-restricted", home_router=True) as lab:
        lab.start_miniupnpd()
        recovery_table(lab)
    with Lab("ipv6-firewalled", home_router=True) as lab6:
        lab6.start_miniupnpd()
        recovery_table(lab6, family=6)


def main() -> None:
    if "--recovery-only" in sys.argv:
        recovery_tables()
        return
    with Lab("port-restricted", home_router=True) as lab:
        res = asyncio.run(lab.run_async("client", in_process))
        print("in-process (nodereach drivers, lab LAN):")
        for k, v in res.items():
            print(f"  {k:<8} {ms(v)}")
        cli: dict[str, list[float]] = {k: [] for k in ("nodereach upnp", "upnpc", "nodereach natpmp", "natpmpc")}
        for i in range(ROUNDS):
            p = 33000 + i
            cli["nodereach upnp"].append(timed(lab, [NODEREACH, "open", f"{p}/udp", "--once", "--method", "upnp",
                                                     "--lease", "60"]))
            cli["upnpc"].append(timed(lab, ["upnpc", "-i", "-e", "bench", "-a", A.CLIENT_IP, str(p + 100),
                                            str(p + 100), "UDP", "60"]))
            cli["nodereach natpmp"].append(timed(lab, [NODEREACH, "open", f"{p + 200}/udp", "--once", "--method",
                                                       "natpmp", "--lease", "60"]))
            cli["natpmpc"].append(timed(lab, ["natpmpc", "-g", A.HOME_LAN_GW, "-a", str(p + 300), str(p + 300),
                                              "udp", "60"]))
        print("whole command, map one UDP port (process start included):")
        for k, v in cli.items():
            print(f"  {k:<17} {ms(v)}")
        med = {k: statistics.median(v) for k, v in cli.items()}
        print(f"  ratio nodereach/upnpc   {med['nodereach upnp'] / med['upnpc']:.2f}")
        print(f"  ratio nodereach/natpmpc {med['nodereach natpmp'] / med['natpmpc']:.2f}")
    recovery_tables()


if __name__ == "__main__":
    main()
