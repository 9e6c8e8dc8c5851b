"""Which of the node's ports something listens on, from the kernel's socket tables (/proc/net; no root).

A cheap local probe run every interval: when the node's listener goes away the watcher knows within one
probe, long before a dial-back would tell. TCP counts sockets in LISTEN; UDP counts unconnected sockets
bound to the port. Sockets of another network namespace (a container with its own network) are not seen;
a container's published port is (its proxy listens on the host).

# TODO(node): nodereach.node's listener reader (sock_diag, with process names) replaces this once it lands;
# `ListenerSource` is the seam.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from nodereach.net import Transport

TABLES: tuple[tuple[str, Transport], ...] = (("tcp", "tcp"), ("tcp6", "tcp"), ("udp", "udp"), ("udp6", "udp"))
TCP_LISTEN = 0x0A
MAX_TABLE_BYTES = 8 << 20
"""A socket table larger than this is read only this far (a host with ~60k sockets): the probe stays cheap."""


class ListenerSource(Protocol):
    def listening(self, ports: Iterable[tuple[int, Transport]]) -> frozenset[tuple[int, Transport]] | None: ...


def parse_table(text: str, transport: Transport) -> set[int]:
    """Local ports that listen (TCP) or are bound unconnected (UDP) in one /proc/net table.

    Malformed lines are skipped: the table is the kernel's, but a parser never trusts its input."""
    ports: set[int] = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4:
            continue
        local, remote, state = fields[1], fields[2], fields[3]
        try:
            port = int(local.rpartition(":")[2], 16)
            remote_port = int(remote.rpartition(":")[2], 16)
            st = int(state, 16)
        except ValueError:
            continue
        if not 0 < port <= 65535:
            continue
        bound = st == TCP_LISTEN if transport == "tcp" else remote_port == 0
        if bound:
            ports.add(port)
    return ports


class ProcNetListeners:
    """Reads /proc/net/{tcp,tcp6,udp,udp6} of the watcher's own network namespace."""

    def __init__(self, root: Path = Path("/proc/net")) -> None:
        self.root = root

    def listening(self, ports: Iterable[tuple[int, Transport]]) -> frozenset[tuple[int, Transport]] | None:
        wanted = set(ports)
        if not wanted:
            return frozenset()
        found: set[tuple[int, Transport]] = set()
        read_any = False
        for name, transport in TABLES:
            if not any(t == transport for _p, t in wanted):
                continue
            try:
                with (self.root / name).open("rb") as fh:
                    text = fh.read(MAX_TABLE_BYTES).decode("ascii", "replace")
            except OSError:
                continue  # no IPv6 in this kernel, or not mounted: the other tables still tell
            read_any = True
            found |= {(p, transport) for p in parse_table(text, transport)}
        return frozenset(found & wanted) if read_any else None
