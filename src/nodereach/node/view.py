"""The check's node stage: who listens on the tested ports, which node runs here, what its RPC says. Runs in
parallel with the network probes and never raises; the result is one `NodeObservation` value.

    pick = pick_ports_now()                         # no --port: before the probes start (they need the ports)
    obs = await observe(ports, NodeChoice.auto(), budget_s=0.8)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from nodereach.net import PortSpec
from nodereach.node.catalog import PROGRAMS, PortPick, find_programs, pick_ports
from nodereach.node.choice import NodeChoice as NodeChoice
from nodereach.node.listeners import ContainerView, Listener, ProcessInfo, container_view, list_processes, scan
from nodereach.node.reader import Detected, NodeReading, Secrets, detect, read_node

RPC_PORTS = tuple(dict.fromkeys(PortSpec(urlsplit(p.rpc).port or 80, "tcp") for p in PROGRAMS))
"""Default RPC ports of the known software: a listener there names a node to read (detection)."""


@dataclass(frozen=True, slots=True)
class HostScan:
    listeners: tuple[Listener, ...]
    processes: tuple[ProcessInfo, ...]
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class NodeObservation:
    """Everything the node stage saw (conclude turns it into the report's `node` block)."""

    ports: tuple[PortSpec, ...]
    listeners: tuple[Listener, ...]
    """Listeners on the tested ports (all of this host's when it served the port choice)."""
    containers: ContainerView = field(default_factory=ContainerView)
    pick: PortPick | None = None
    """How the ports were chosen with no --port."""
    reading: NodeReading | None = None
    detected: tuple[Detected, ...] = ()
    programs: tuple[str, ...] = field(default=())
    """Node programs seen running here (names), for the report's notes."""
    error: str | None = None
    elapsed_s: float = 0.0


def scan_host(ports: Sequence[PortSpec] | None = None) -> HostScan:
    """Listeners (on `ports`, or all) and processes of this host. Synchronous /proc reading: a few ms on a
    quiet host, bounded on a busy one; run it in a thread next to the probes."""
    start = time.monotonic()
    listeners = scan(ports)
    processes = list_processes()
    return HostScan(tuple(listeners), tuple(processes), time.monotonic() - start)


def pick_ports_now() -> tuple[PortPick, HostScan]:
    """With no --port: the node's P2P ports from the programs listening here (see catalog.pick_ports)."""
    host = scan_host(None)
    return pick_ports(host.processes, host.listeners), host


async def observe(ports: Sequence[PortSpec], choice: NodeChoice, *, budget_s: float,
                  secrets: Secrets | None = None, pick: PortPick | None = None,
                  host: HostScan | None = None) -> NodeObservation:
    """The node stage: scan the host (in a thread), then read the node named or detected, all within
    `budget_s`. Never raises."""
    start = time.monotonic()
    secrets = secrets or Secrets()
    try:
        if host is None:
            # Only the tested ports: naming their owners stops as soon as those sockets are found, and the
            # processes (names, namespaces, users) come from /proc/PID without reading every fd of the host.
            host = await asyncio.to_thread(scan_host, [*ports, *RPC_PORTS])
        wanted = set(ports)
        listeners = tuple(lst for lst in host.listeners if PortSpec(lst.port, lst.transport) in wanted)
        programs = find_programs(host.processes, host.listeners)
        names = tuple(dict.fromkeys(f.program.name for f in programs))
        containers = container_view(host.processes, {n: frozenset(p.ports) for p in PROGRAMS for n in p.processes})
        detected: tuple[Detected, ...] = ()
        reading: NodeReading | None = None
        left = max(0.05, budget_s - (time.monotonic() - start))
        if choice.spec is not None:
            owner = next((d.owner_uid for d in detect(host.processes, host.listeners)
                          if d.spec.kind == choice.spec.kind), None)
            reading = await read_node(choice.spec, budget_s=left, owner_uid=owner, secrets=secrets)
        elif choice.auto:
            detected = tuple(detect(host.processes, host.listeners))
            if detected:
                first = detected[0]
                reading = await read_node(first.spec, budget_s=left, owner_uid=first.owner_uid, how=first.how,
                                          secrets=secrets)
        return NodeObservation(tuple(ports), listeners, containers, pick, reading, detected, names,
                               elapsed_s=time.monotonic() - start)
    except Exception as exc:  # the node's view is extra: a bug here must not sink the check
        return NodeObservation(tuple(ports), (), error=f"node stage failed ({type(exc).__name__})",
                               elapsed_s=time.monotonic() - start)
