"""What the check's probes saw, as values: the only input of `conclude()`.

Each probe (diagnose.probes) returns one of these frozen values (msgspec Structs: cheap to define, which
matters at start-up); the engine collects them into one `Observations`. Everything the network said is
here and nothing else: no sockets, no clock, no judgement (a reply from the wrong address is kept as seen;
deciding that it does not count is conclude's job).

Per address family: the same probes run over IPv4 and IPv6, so their results live in one
`FamilyObservations` per family (`Observations.families[4]`, `[6]`). A probe that was not run, or did not
finish in time, is None; the report then says `unknown` with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import msgspec

from nodereach.diagnose.model import PortmapProtocol, PortResult
from nodereach.diagnose.netinfo import NetInfo
from nodereach.diagnose.options import CheckOptions, ResolvedServer
from nodereach.diagnose.portfilter import PortPath
from nodereach.net import Family, PortSpec, SockAddr
from nodereach.stun.transaction import BindingReply

if TYPE_CHECKING:
    from nodereach.node.view import NodeObservation


class ServerAnswer(msgspec.Struct, frozen=True):
    """RFC 5780 test I (a plain Binding request) from the mapping socket to one server."""

    server: ResolvedServer
    reply: BindingReply | None
    """The reply, or None if nothing usable came (or it came from another address: see `foreign_source`)."""
    foreign_source: SockAddr | None = None
    """A reply came, but from this address instead of the server's: spoofed, stray or misconfigured, never
    trusted (it is not in `reply`)."""
    garbage: int = 0
    """Datagrams from the server's address that were not STUN."""


class MappingTests(msgspec.Struct, frozen=True):
    """RFC 5780 §4.3 tests II and III from the mapping socket, toward the primary's OTHER-ADDRESS."""

    other_address: SockAddr
    test2: SockAddr | None
    """Mapped address seen from (alternate IP, primary port); None: no acceptable reply."""
    test3: SockAddr | None
    """Mapped address seen from (alternate IP, alternate port)."""


class FilteringTests(msgspec.Struct, frozen=True):
    """RFC 5780 §4.4 from a socket of its own (the mapping tests would open holes toward the alternate
    address): a plain request, then CHANGE-REQUEST (IP and port) and (port only)."""

    plain: BindingReply | None
    change_ip_and_port: BindingReply | None
    change_port: BindingReply | None


class TcpTest(msgspec.Struct, frozen=True):
    """A STUN Binding over TCP to the primary: outbound TCP works (or was refused: the path works too)."""

    reply: BindingReply | None
    reason: str | None
    """Why there is no reply: `refused`, `timeout`, ..."""


class PathTrace(msgspec.Struct, frozen=True):
    """Routers answering TTL-limited probes toward the primary, TTL 1 first (None: that TTL stayed silent);
    once over UDP and once over TCP (a UDP filter hides the path beyond it; TCP SYNs get through)."""

    udp: tuple[str | None, ...] = ()
    tcp: tuple[str | None, ...] = ()

    def hops(self) -> tuple[str | None, ...]:
        """One address per TTL: the UDP answer where there is one, else the TCP one."""
        longest = max(len(self.udp), len(self.tcp))
        merged = [(self.udp[i] if i < len(self.udp) else None) or (self.tcp[i] if i < len(self.tcp) else None)
                  for i in range(longest)]
        while merged and merged[-1] is None:
            merged.pop()
        return tuple(merged)


class PortPaths(msgspec.Struct, frozen=True):
    """Outbound port filters: TCP connects and UDP datagrams toward several ports of the server."""

    paths: tuple[PortPath, ...] = ()
    needed_tries: int | None = None
    """How many unanswered tries made silence an answer when the probes ended (the run's loss-aware count,
    SharedRtt.tries_for_negative); None: any (not measured)."""
    skipped: str | None = None
    """Why they were not probed (only a nodereach server is ours to knock on at other ports)."""


class PortProbe(msgspec.Struct, frozen=True):
    """One node port from outside: the dial-back's answer, and for a free UDP port the public endpoint the
    NAT gives it (asked after the dial-back, so it cannot open the hole it tests)."""

    spec: PortSpec
    result: PortResult | None
    """None: no answer within the run's time."""
    public_endpoint: str | None = None
    proof: PortResult | None = None
    """The dial-back speaking the node's own protocol (its `protocol_check`), when the node stage's plan gave
    this port a proof (nodereach.node.proofs)."""


class Hairpin(msgspec.Struct, frozen=True):
    """RFC 5780 §4.5: a Binding request from the mapping socket to the filtering socket's public endpoint."""

    sent: bool
    received: bool
    reason: str | None = None


class FamilyObservations(msgspec.Struct, frozen=True):
    """Everything probed over one address family, toward its primary server."""

    family: Family
    servers: tuple[ResolvedServer, ...]
    """Usable servers with an address of this family, primary first."""
    unavailable: str | None = None
    """Why this family was not probed at all (no server, no route, no socket): the other fields are empty."""
    route_error: bool = False
    """`unavailable` because the kernel has no route toward the servers."""
    source: str | None = None
    """This host's source address toward the primary, as the kernel picks it (compared with what the servers
    see: translation, NAT presence)."""
    local_port: int | None = None
    """The mapping socket's local port (port preservation compares it with the mapped one)."""
    binding: tuple[ServerAnswer, ...] = ()
    """Test I to every server from the mapping socket, in `servers` order (missing: unfinished)."""
    mapping: MappingTests | None = None
    filtering: FilteringTests | None = None
    tcp: TcpTest | None = None
    path: PathTrace | None = None
    port_paths: PortPaths | None = None
    ports: tuple[PortProbe, ...] = ()
    hairpin: Hairpin | None = None

    @property
    def primary(self) -> ResolvedServer | None:
        return self.servers[0] if self.servers else None


class LocalView(msgspec.Struct, frozen=True):
    """This host as the kernel describes it: the source address toward the primary server and netlink's
    interfaces, addresses and routes (read in a parallel stage)."""

    source: str | None = None
    """Source address the kernel picks toward the primary IPv4 server (None: no route, or no server)."""
    primary: str | None = None
    """The primary IPv4 server's address (the route toward it gives gateway and interface)."""
    net: NetInfo = msgspec.field(default_factory=NetInfo)


class PortmapObservation(msgspec.Struct, frozen=True):
    """The gateway's port-mapping protocols (PCP, NAT-PMP, UPnP IGD): offered or not, and their WAN address."""

    pcp: PortmapProtocol
    natpmp: PortmapProtocol
    upnp: PortmapProtocol
    error: str | None = None
    """Why the probe did not run (no default gateway, probe unavailable)."""

    def wan_addresses(self) -> tuple[str, ...]:
        found = (self.pcp.external_address, self.natpmp.external_address, self.upnp.external_address)
        return tuple(dict.fromkeys(a for a in found if a))


class LifetimeObservation(msgspec.Struct, frozen=True):
    """RFC 5780 §4.6 binding lifetime (`--lifetime`): a lower bound in seconds, and what was seen."""

    seconds: float | None
    explanation: str


class Observations(msgspec.Struct, frozen=True):
    """One run of the check, everything it saw. `conclude(observations)` turns it into the report.

    Room for more views that run in parallel with the network probes: the host's own view (`local`, netlink)
    is one; the node's own view (issue 10: who listens on the ports, what the node's RPC says it advertises)
    becomes another field here, filled by its own stage in the engine.
    """

    options: CheckOptions
    servers: tuple[ResolvedServer, ...]
    """Every server named, resolved or with the reason it could not be."""
    families: Mapping[Family, FamilyObservations] = msgspec.field(default_factory=dict)
    """Per family, the same probes toward that family's primary (IPv4 adds what only it has: the path's NAT
    layers, outbound port filters, hairpinning, the gateway's port mapping, the binding lifetime)."""
    local: LocalView = msgspec.field(default_factory=LocalView)
    portmap: PortmapObservation | None = None
    lifetime: LifetimeObservation | None = None
    timed_out: bool = False
    """The run hit its time limit: what had not answered by then is unknown."""
    errors: tuple[str, ...] = ()
    """Probes that failed inside nodereach (a bug, not the network): their results are unknown."""
    node: NodeObservation | None = None
    """The node stage (nodereach.node.view): listeners on the tested ports, the node's RPC; None when the
    options asked for no node stage."""

    def family(self, family: Family) -> FamilyObservations | None:
        return self.families.get(family)
