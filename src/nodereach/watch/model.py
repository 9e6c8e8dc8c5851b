"""The values the watcher passes around: what a probe saw, what a check concluded, what the keeper reported,
and the changes the detector declares. Frozen, typed, and free of I/O so the detector can be table-tested."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from nodereach.net import Endpoint, Family, Transport
from nodereach.p2p.advertised import Advertised

What = Literal["public_address", "port", "reachable", "mapping", "nat_layers", "cgnat", "listener", "node_peers",
               "advertised", "server"]
"""What changed: the `what` label of nodereach_last_change_timestamp_seconds and the `what` of an event."""
WHATS: tuple[What, ...] = ("public_address", "port", "reachable", "mapping", "nat_layers", "cgnat", "listener",
                           "node_peers", "advertised", "server")

EventKind = Literal[
    "started", "stopped",
    "public-address-changed",
    "port-unreachable", "port-reachable",
    "reachability-changed",
    "mapping-lost", "mapping-restored", "mapping-changed", "mapping-failed",
    "nat-layers-changed", "cgnat-changed",
    "listener-gone", "listener-back",
    "node-inbound-zero", "node-inbound-back",
    "advertised-address-mismatch", "advertised-address-matches",
    "advertised-port-mismatch", "advertised-port-matches",
    "server-unanswered", "server-answering",
]

ErrorKind = Literal["server-unanswered", "check-failed", "node-unreadable", "listeners-unreadable", "mapping",
                    "hook-failed", "hook-dropped"]
"""The `kind` label of nodereach_watch_errors_total: each failed attempt counts once (no log line)."""
ERROR_KINDS: tuple[ErrorKind, ...] = ("server-unanswered", "check-failed", "node-unreadable", "listeners-unreadable",
                                      "mapping", "hook-failed", "hook-dropped")

PortState = Literal["reachable", "unreachable", "family-unused"]
"""A port over one family, as the watcher declares it. `family-unused`: the node does not listen over that
family at all (the check's `ipv4-only` / `ipv6-only`: an IPv4-only node on a dual-stack host), which the check
does not count against the verdict (its advice `use-ipv6` says what it takes), so it is neither reachable
nor unreachable: no event, no alert, and no nodereach_port_reachable series for it."""

Scalar = str | int | bool | None
"""What `before` and `after` of an event hold: an address, a count, a yes/no, or null (not known / none)."""


@dataclass(frozen=True, slots=True, order=True)
class PortKey:
    """One tested port of the node over one address family (the labels of nodereach_port_reachable)."""

    port: int
    protocol: Transport
    family: Family = 4

    def __str__(self) -> str:
        return f"{self.port}/{self.protocol}" + (" over IPv6" if self.family == 6 else "")


@dataclass(frozen=True, slots=True)
class StunAnswer:
    """One server asked over one family in one cheap probe: where it saw us, or why it did not answer."""

    server: str
    """The server as configured (`host:port`)."""
    family: Family
    mapped: Endpoint | None
    """The public endpoint the server saw; None when it did not answer."""
    error: str | None = None
    rtt_s: float | None = None


@dataclass(frozen=True, slots=True)
class NodeView:
    """What a node adapter read from the node's RPC, reduced to what the watcher tracks."""

    software: str | None = None
    inbound: int | None = None
    outbound: int | None = None
    advertised: tuple[str, ...] = ()
    """IP addresses the node tells the network to dial (from its ENR, enode, localaddresses, ...)."""
    advertisements: tuple[Advertised, ...] = ()
    """Everything it advertises, ports included (what nodereach.node.advertised.compare judges)."""
    error: str | None = None
    """Why the RPC could not be read this time (then nothing else is known)."""


@dataclass(frozen=True, slots=True)
class ProbeObservation:
    """One round of cheap probes."""

    mono: float
    wall: float
    answers: tuple[StunAnswer, ...] = ()
    listening: frozenset[tuple[int, Transport]] | None = None
    """The watched ports something listens on; None when the host's socket table could not be read."""
    node: NodeView | None = None
    """None when no node adapter is configured."""
    families: Mapping[tuple[int, Transport], frozenset[Family]] | None = None
    """Per listened port, the families whose traffic its sockets take from outside (not on loopback; a `[::]`
    socket counts for IPv4 unless it is known to be v6-only); None: not read."""


@dataclass(frozen=True, slots=True)
class PortReach:
    key: PortKey
    reachable: bool | None
    """True only when peers' first packets reach a program of the node; None when the check could not tell."""
    reason: str | None = None
    family_unused: bool = False
    """The node does not listen over this family (the check's `ipv4-only` / `ipv6-only`)."""


@dataclass(frozen=True, slots=True)
class CheckObservation:
    """What one full check concluded (an adapter reads it from the check's report)."""

    mono: float
    wall: float
    verdict: str | None
    """reachable, unreachable, partly-reachable, ...; None when the check could not tell (no server answered,
    or it failed): such a check changes nothing."""
    ports: tuple[PortReach, ...] = ()
    nat_layers: int | None = None
    cgnat: bool | None = None
    duration_s: float = 0.0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class MappingObservation:
    """The keeper's word on one mapping: it exists (with its lease) or it is gone."""

    mono: float
    wall: float
    port: int
    protocol: Transport
    present: bool
    method: str | None = None
    external: str | None = None
    """`ip:port` peers should dial, when present."""
    lifetime_s: int | None = None
    """The lease granted just now (0: permanent); None when this observation does not renew it."""
    error: str | None = None
    """Why the mapping could not be made (the keeper could not start, or re-creating it failed)."""
    family: Family = 4
    """4: a port mapping on the NAT; 6: a pinhole in the router's IPv6 firewall (`external` is then the host's
    own address and port)."""


@dataclass(frozen=True, slots=True)
class Change:
    """One declared change: becomes one event line, one hook call, one last-change timestamp."""

    kind: EventKind
    what: What | None
    before: Scalar
    after: Scalar
    message: str
    wall: float
    port: int | None = None
    protocol: Transport | None = None
    family: Family | None = None
    method: str | None = None
    server: str | None = None
