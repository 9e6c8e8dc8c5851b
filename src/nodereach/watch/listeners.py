"""Which of the node's ports something listens on: the cheap local probe run every interval, so the watcher
knows the node's listener went away within one probe, long before a dial-back would tell.

The socket tables are read by nodereach.node.listeners (TCP in LISTEN, UDP bound and unconnected, the calling
thread's network namespace; no root). Sockets of another network namespace (a container with its own
network) are not seen; a container's published port is (its proxy listens on the host).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from nodereach.net import Transport
from nodereach.node.listeners import PROC_NET, read_proc_net

TABLES = ("tcp", "tcp6", "udp", "udp6")


class ListenerSource(Protocol):
    def listening(self, ports: Iterable[tuple[int, Transport]]) -> frozenset[tuple[int, Transport]] | None: ...


class HostListeners:
    """This host's listeners on the watched ports; None when no socket table can be read at all (a hidden
    /proc must not look like a node that stopped listening)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root

    def listening(self, ports: Iterable[tuple[int, Transport]]) -> frozenset[tuple[int, Transport]] | None:
        wanted = set(ports)
        if not wanted:
            return frozenset()
        root = self.root or (PROC_NET if PROC_NET.exists() else Path("/proc/net"))
        if not any((root / name).is_file() for name in TABLES):
            return None
        found = {(lst.port, lst.transport) for lst in read_proc_net(root)}
        return frozenset(found & wanted)
