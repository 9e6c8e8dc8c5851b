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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_CHILD_OUTPUT = 1 << 20


@dataclass(frozen=True, slots=True)
class RouteInfo:
    source: str | None = None
    gateway: str | None = None
    interface: str | None = None
    index: int | None = None
    networks: tuple[str, ...] = ()
    """Prefixes on the outgoing interface (what is on-link toward the gateway)."""
    error: str | None = None


@dataclass(frozen=True, slots=True)
class NetInfo:
    addresses: frozenset[str] = frozenset()
    """Every address configured on this host."""
    routes: Mapping[str, RouteInfo] = field(default_factory=dict)
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
    try:
        from pyroute2 import IPRoute
    except ImportError as exc:  # pragma: no cover - a dependency
        return NetInfo(error=f"pyroute2 missing: {exc}")
    try:
        with IPRoute() as ipr:
            addrs = list(ipr.get_addr())
            names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
            gateways: dict[int, str] = {}
            for family in (socket.AF_INET, socket.AF_INET6):
                gw = next((r.get_attr("RTA_GATEWAY") for r in ipr.get_default_routes(family=family)
                           if r.get_attr("RTA_GATEWAY")), None)
                if gw:
                    gateways[family] = str(gw)
            routes = {dest: _route(ipr, dest, addrs, names) for dest in destinations}
            return NetInfo(addresses=frozenset(str(a.get_attr("IFA_ADDRESS")) for a in addrs
                                               if a.get_attr("IFA_ADDRESS")),
                           routes=routes, default_gateway4=gateways.get(socket.AF_INET),
                           default_gateway6=gateways.get(socket.AF_INET6))
    except Exception as exc:  # netlink unavailable: report, do not crash
        return NetInfo(error=f"netlink: {exc}")


def _route(ipr: Any, dest: str, addrs: list[Any], names: dict[int, str]) -> RouteInfo:
    try:
        ipaddress.ip_address(dest)
        route = ipr.route("get", dst=dest)[0]
        oif = route.get_attr("RTA_OIF")
        return RouteInfo(source=route.get_attr("RTA_PREFSRC"), gateway=route.get_attr("RTA_GATEWAY"),
                         interface=names.get(oif) if oif is not None else None, index=oif,
                         networks=tuple(
                             str(ipaddress.ip_network(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}", strict=False))
                             for a in addrs if a["index"] == oif and a.get_attr("IFA_ADDRESS")))
    except Exception as exc:  # netlink errors carry errno text: no route, unreachable
        return RouteInfo(error=str(exc) or type(exc).__name__)


def to_json(info: NetInfo) -> str:
    doc = {f.name: getattr(info, f.name) for f in dataclasses.fields(info)}
    doc["addresses"] = sorted(info.addresses)
    doc["routes"] = {k: dataclasses.asdict(v) for k, v in info.routes.items()}
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
