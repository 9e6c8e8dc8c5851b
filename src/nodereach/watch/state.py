"""The watcher's declared state: what `detect`'s pure handlers read and return, one frozen value per step.

Kept apart from the rules (watch.detect) so that the loop, the schedule and the metrics read the state
without the rules' imports; nothing here decides anything beyond what is pending confirmation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from nodereach.net import Family, Transport
from nodereach.watch.facts import Tracked
from nodereach.watch.model import Change, ErrorKind, NodeView, PortKey, PortState, What

PortRef = tuple[int, Transport]
AdRef = tuple[Family, Transport]


@dataclass(frozen=True, slots=True)
class MappingValue:
    present: bool
    external: str | None = None
    method: str | None = None


@dataclass(frozen=True, slots=True)
class Lease:
    method: str | None
    expires: float | None
    """Monotonic time the lease runs out; None for a permanent mapping."""


@dataclass(frozen=True, slots=True)
class ServerHealth:
    up: Tracked[bool] = field(default_factory=Tracked)
    failures: int = 0
    """Consecutive probes without an answer."""
    next_due: float = 0.0


@dataclass(frozen=True, slots=True)
class WatchState:
    started_mono: float
    grace_until: float
    ports: tuple[PortRef, ...] = ()
    servers: Mapping[str, ServerHealth] = field(default_factory=dict)
    public: Mapping[Family, Tracked[str]] = field(default_factory=dict)
    listeners: Mapping[PortRef, Tracked[bool]] = field(default_factory=dict)
    port_reach: Mapping[PortKey, Tracked[PortState]] = field(default_factory=dict)
    families: Mapping[PortRef, frozenset[Family]] = field(default_factory=dict)
    """The last listener probe's word: which families each watched port's sockets take (to tell a family the
    node does not listen on from a port that is not reachable)."""
    verdict: Tracked[str] = field(default_factory=Tracked)
    nat_layers: Tracked[int] = field(default_factory=Tracked)
    cgnat: Tracked[bool] = field(default_factory=Tracked)
    mappings: Mapping[PortKey, Tracked[MappingValue]] = field(default_factory=dict)
    """Per port and family: IPv4 mappings and IPv6 pinholes are kept by one keeper each."""
    leases: Mapping[PortKey, Lease] = field(default_factory=dict)
    node: NodeView | None = None
    """The last node view that could be read."""
    inbound_zero_since: float | None = None
    inbound_zero: Tracked[bool] = field(default_factory=Tracked)
    advertised: Mapping[Family, Tracked[bool]] = field(default_factory=dict)
    advertised_ports: Mapping[AdRef, Tracked[bool]] = field(default_factory=dict)
    """Per family and transport: does the port the node advertises (with its public address) reach it?"""
    advertised_port_why: Mapping[AdRef, str] = field(default_factory=dict)
    """The last mismatch's explanation per family and transport (the check's words, the node's setting)."""
    last_change: Mapping[What, float] = field(default_factory=dict)
    grace_over: bool = False
    next_check: float = 0.0
    """Monotonic time of the next periodic (or confirming) full check."""
    check_requested: bool = False
    """A declared cheap change asks for a full check as soon as the minimum gap allows."""
    check_trusted: bool = False
    """The next check follows a declared change: one check is enough to declare what it finds."""
    last_check_end: float | None = None

    @property
    def in_grace(self) -> bool:
        return not self.grace_over

    def probe_pending(self) -> bool:
        """A cheap fact waits for confirmation: the next probes come at the confirm interval."""
        return any(t.pending for t in self.public.values()) or any(t.pending for t in self.listeners.values()) \
            or any(t.pending for t in self.advertised.values()) \
            or any(t.pending for t in self.advertised_ports.values())


@dataclass(frozen=True, slots=True)
class Step:
    state: WatchState
    changes: tuple[Change, ...] = ()
    errors: tuple[ErrorKind, ...] = ()
