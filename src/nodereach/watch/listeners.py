"""Which of the node's ports something listens on: the cheap local probe run every interval, so the watcher
knows the node's listener went away within one probe, long before a dial-back would tell.

The socket tables are read by nodereach.node.listeners (TCP in LISTEN, UDP bound and unconnected, the calling
thread's network namespace; no root). Sockets of another network namespace (a container with its own
network) are not seen; a container's published port is (its proxy listens on the host).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

from nodereach.net import Family, Transport, family_of
from nodereach.node.listeners import PROC_NET, Listener, read_proc_net

TABLES = ("tcp", "tcp6", "udp", "udp6")

PortRef = tuple[int, Transport]


class ListenerSource(Protocol):
    def listening(self, ports: Iterable[PortRef]) -> Mapping[PortRef, frozenset[Family]] | None:
        """Per watched port something listens on, the families its sockets take from outside."""


def families_taken(sockets: Iterable[Listener]) -> frozenset[Family]:
    """The families whose traffic from outside reaches these sockets. Loopback ones take none; a `[::]` socket
    counts for IPv4 unless it is known to be v6-only (/proc does not say, and asking the kernel means binding
    the node's port, which the watcher never does); one bound to an IPv4-mapped address is IPv4 only."""
    out: set[Family] = set()
    for lst in sockets:
        if lst.loopback:
            continue
        if lst.family == 4 or family_of(lst.address) == 4:  # an IPv6 socket on ::ffff:a.b.c.d shows unwrapped
            out.add(4)
            continue
        out.add(6)
        if lst.address == "::" and lst.accepts_ipv4 is not False:
            out.add(4)
    return frozenset(out)


class HostListeners:
    """This host's listeners on the watched ports; None when no socket table can be read at all (a hidden
    /proc must not look like a node that stopped listening)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root

    def listening(self, ports: Iterable[PortRef]) -> Mapping[PortRef, frozenset[Family]] | None:
        wanted = set(ports)
        if not wanted:
            return {}
        root = self.root or (PROC_NET if PROC_NET.exists() else Path("/proc/net"))
        if not any((root / name).is_file() for name in TABLES):
            return None
        found: dict[PortRef, list[Listener]] = {}
        for lst in read_proc_net(root):
            if (lst.port, lst.transport) in wanted:
                found.setdefault((lst.port, lst.transport), []).append(lst)
        return {ref: families_taken(sockets) for ref, sockets in found.items()}
