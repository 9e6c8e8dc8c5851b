"""Local addresses, interface and default gateway from netlink (pyroute2; works unprivileged).

`gather_async` asks from a child interpreter: importing pyroute2 costs ~0.25 s of CPU, which in-process would
hold the GIL while the check's first round trips are timed; a child does it on another core.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

MAX_CHILD_OUTPUT = 1 << 20


@dataclass
class RouteInfo:
    source: str | None = None
    gateway: str | None = None
    interface: str | None = None
    index: int | None = None
    networks: tuple[str, ...] = ()
    """Prefixes on the outgoing interface (what is on-link toward the gateway)."""
    error: str | None = None


@dataclass
class NetInfo:
    addresses: frozenset[str] = frozenset()
    """Every address configured on this host."""
    routes: dict[str, RouteInfo] = field(default_factory=dict)
    """Route toward each server address."""
    default_gateway4: str | None = None
    default_gateway6: str | None = None
    error: str | None = None


def source_toward(dest: str | None) -> tuple[str | None, str | None]:
    """(source address the kernel picks toward dest, error): a connect() on a UDP socket sends nothing."""
    if dest is None:
        return None, "no destination"
    family = socket.AF_INET6 if ":" in dest else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((dest, 9))
            return str(s.getsockname()[0]), None
    except OSError as exc:
        return None, exc.strerror or str(exc)


def gather(destinations: list[str]) -> NetInfo:
    """Ask the kernel which source address, gateway and interface it uses toward each destination."""
    info = NetInfo()
    try:
        from pyroute2 import IPRoute
    except ImportError as exc:  # pragma: no cover - a dependency
        info.error = f"pyroute2 missing: {exc}"
        return info
    try:
        with IPRoute() as ipr:
            addrs = list(ipr.get_addr())
            info.addresses = frozenset(str(a.get_attr("IFA_ADDRESS")) for a in addrs if a.get_attr("IFA_ADDRESS"))
            names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
            for family, attr in ((2, "default_gateway4"), (10, "default_gateway6")):
                for r in ipr.get_default_routes(family=family):
                    gw = r.get_attr("RTA_GATEWAY")
                    if gw:
                        setattr(info, attr, str(gw))
                        break
            for dest in destinations:
                ri = RouteInfo()
                try:
                    ipaddress.ip_address(dest)
                    route = ipr.route("get", dst=dest)[0]
                    ri.source = route.get_attr("RTA_PREFSRC")
                    ri.gateway = route.get_attr("RTA_GATEWAY")
                    oif = route.get_attr("RTA_OIF")
                    ri.interface = names.get(oif) if oif is not None else None
                    ri.index = oif
                    ri.networks = tuple(
                        str(ipaddress.ip_network(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}", strict=False))
                        for a in addrs if a["index"] == oif and a.get_attr("IFA_ADDRESS"))
                except Exception as exc:  # netlink errors carry errno text: no route, unreachable
                    ri.error = str(exc) or type(exc).__name__
                info.routes[dest] = ri
    except Exception as exc:  # netlink unavailable: report, do not crash
        info.error = f"netlink: {exc}"
    return info


def to_json(info: NetInfo) -> str:
    doc = dataclasses.asdict(info)
    doc["addresses"] = sorted(info.addresses)
    return json.dumps(doc)


def from_json(text: str | bytes) -> NetInfo:
    """The child's answer back into a NetInfo (ValueError on anything malformed)."""
    try:
        return _from_doc(json.loads(text))
    except (TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"malformed netinfo: {exc}") from exc


def _from_doc(doc: dict[str, Any]) -> NetInfo:
    routes = {str(k): RouteInfo(source=v["source"], gateway=v["gateway"], interface=v["interface"],
                                index=v["index"], networks=tuple(str(n) for n in v["networks"]), error=v["error"])
              for k, v in doc["routes"].items()}
    return NetInfo(addresses=frozenset(str(a) for a in doc["addresses"]), routes=routes,
                   default_gateway4=doc["default_gateway4"], default_gateway6=doc["default_gateway6"],
                   error=doc["error"])


async def gather_async(destinations: list[str], wait_s: float = 3.0) -> NetInfo:
    """`gather` in a child interpreter (pyroute2's import off this process's GIL); in a thread if that fails."""
    proc: asyncio.subprocess.Process | None = None
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nodereach.diagnose.netinfo", *destinations,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        assert proc.stdout is not None
        async with asyncio.timeout(wait_s):
            out = await proc.stdout.read(MAX_CHILD_OUTPUT)
            await proc.wait()
        if proc.returncode == 0:
            return from_json(out)
    except (OSError, TimeoutError, ValueError):
        pass
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
    return await asyncio.to_thread(gather, destinations)


if __name__ == "__main__":
    print(to_json(gather(sys.argv[1:])))
