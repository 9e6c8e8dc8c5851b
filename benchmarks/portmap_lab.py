"""Port mapping latency against miniupnpd in a lab, next to the peer tools (upnpc, natpmpc), same run.

Measures, inside the lab's client namespace:
  * in-process: probe of all three protocols (parallel) and one map per protocol with nodereach's drivers;
  * whole command: `nodereach open P --once --method M` vs `upnpc -i -e x -a ...` / `natpmpc -a ...`;
  * recovery: miniupnpd restarted with its state lost -> keeper notices -> inbound UDP flows again.
Needs root. Bounded: ROUNDS rounds each.
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
from nodereach.portmap import pcp
from nodereach.portmap.base import Slot
from nodereach.portmap.gateway import find_gateway_async
from nodereach.portmap.keeper import open_port
from nodereach.portmap.probe import probe_all
from portmap_helpers import WAN, restart_miniupnpd_losing_state, wait_inbound

ROUNDS = 5
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


async def recovery(lab: Lab) -> float | None:
    import queue
    import threading

    ready: queue.Queue[object] = queue.Queue()
    stop = threading.Event()

    async def keep() -> None:
        async with open_port(32100, "udp", method="natpmp", lease=120, poll_interval=0.5) as m:
            ready.put(m.endpoint)
            await asyncio.to_thread(stop.wait)

    task = asyncio.ensure_future(lab.run_async("client", keep))
    await asyncio.to_thread(ready.get, True, 15)
    await asyncio.sleep(3)
    await asyncio.to_thread(restart_miniupnpd_losing_state, lab)
    back = await asyncio.to_thread(wait_inbound, lab, "udp", (WAN, 32100), 32100, 10.0)
    stop.set()
    await task
    return back


def main() -> None:
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
        back = asyncio.run(recovery(lab))
        print(f"miniupnpd restart (state lost) -> inbound UDP flows again after: "
              f"{'never' if back is None else f'{back:.2f} s'} (NAT-PMP, poll 0.5 s; upnpc/natpmpc do not notice)")


if __name__ == "__main__":
    main()
