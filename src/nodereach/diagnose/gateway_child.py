"""The gateway's port-mapping protocols, probed in a child interpreter: `python -m nodereach.diagnose.gateway_child
pcp natpmp` (or `upnp`).

Why a child: the port-mapping package's imports cost ~0.1 s of CPU for PCP / NAT-PMP and ~0.4 s more for
UPnP (aiohttp, async-upnp-client), several times that on a loaded host. In the check's own process they
would hold the GIL exactly while its first round trips are timed (inflating every RTT and every deadline
derived from it). The child imports at once, then reads the gateway as one JSON line on stdin and answers one
JSON line on stdout: {method: {available, external_address, reason}}. Before that, once its imports are
done, it says `{"ready": true}`: the parent bounds the probe from that moment (on a loaded host the imports
alone may take a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ipaddress
import json
import sys
from typing import Any

MAX_LINE = 1 << 16
METHODS = ("pcp", "natpmp", "upnp")


async def _probe(methods: tuple[str, ...], spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    probe = importlib.import_module("nodereach.portmap.probe")
    gateway = importlib.import_module("nodereach.portmap.gateway")
    gw = gateway.Gateway(str(spec["gateway"]), str(spec["local"]), spec.get("index"),
                         tuple(ipaddress.ip_network(str(n)) for n in spec.get("networks", ())))
    results, drivers = await probe.probe_all(gw, float(spec["wait_s"]), methods)
    for driver in drivers.values():
        with contextlib.suppress(Exception):
            await driver.close()
    out: dict[str, dict[str, Any]] = {}
    for m in methods:
        r = results[m]
        out[m] = {"available": r.available, "external_address": r.external_address, "reason": r.reason}
    return out


def main(argv: list[str]) -> int:
    methods = tuple(m for m in argv if m in METHODS)
    importlib.import_module("nodereach.portmap.probe")
    if "upnp" in methods:
        with contextlib.suppress(ImportError):
            importlib.import_module("nodereach.portmap.upnp_client")  # the slow part, before the gateway is known
    print(json.dumps({"ready": True}), flush=True)
    line = sys.stdin.readline(MAX_LINE)
    if not line:
        return 1  # the check went on without us
    print(json.dumps(asyncio.run(_probe(methods, json.loads(line)))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
