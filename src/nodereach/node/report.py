"""From the node stage's observation and the check's measurements to the report's `node` block and the port
semantics of schema `nodereach.check/2`. Pure.

A port is `reachable` only when a program listens there and peers' first packets reach it. When nodereach
had to listen itself (nothing did), the port says `reachable: false`, `reason: nothing-listening`, and
`path_open` carries what the path test found, so the operator learns both "the network is fine" and "start
the node / fix its bind address".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nodereach.net import Endpoint, Family, PortSpec
from nodereach.node.adapters.base import NodeStatus
from nodereach.node.advertised import Observed, compare
from nodereach.node.listeners import PORT_WIDE, ListenerProblem, PortListening, assess
from nodereach.node.model import NodeAdvertised, NodeListening, NodeMapping, NodePeers, NodeProblem, NodeReport
from nodereach.node.view import NodeObservation

EXPECTS_ADDRESS = frozenset({"lnd", "ethereum", "beacon", "kubo"})
"""Software whose peers find it only through what it advertises (so advertising nothing is a problem)."""


@dataclass(frozen=True, slots=True)
class PortOutcome:
    """One tested port in the check/2 sense."""

    reachable: bool | None
    path_open: bool | None
    reason: str | None


def port_outcome(reachable: bool | None, reason: str | None, listener: str | None,
                 listening: PortListening | None) -> PortOutcome:
    """Combine the dial-back's answer (who answered: the node, nodereach's own listener, nobody) with the
    listener scan of this host."""
    path = reachable if listener in ("node", "nodereach") else None
    if listener == "node" and reachable is False and reason == "refused":
        path = True  # the host itself answered (RST): the path is open, nothing takes the traffic
    problem = next((p for p in listening.problems if p.code in PORT_WIDE), None) if listening else None
    if listener == "nodereach" or (listening is not None and not listening.listeners):
        return PortOutcome(False, path, "nothing-listening")
    if problem is not None:
        return PortOutcome(False, path, problem.code)
    if listening is not None and listening.problems and reachable is not True:
        return PortOutcome(reachable, path, listening.problems[0].code)
    return PortOutcome(reachable, path, reason)


def _listening(pl: Sequence[PortListening]) -> list[NodeListening]:
    out: list[NodeListening] = []
    for p in pl:
        for lst in p.listeners:
            who = f"{lst.process} (pid {lst.pid})" if lst.process and lst.pid else (lst.process or None)
            out.append(NodeListening(port=lst.port, protocol=lst.transport, address=lst.address, family=lst.family,
                                     process=who, ipv4_too=lst.accepts_ipv4 if lst.address == "::" else None))
    return out


def _problem(p: ListenerProblem) -> NodeProblem:
    return NodeProblem(code=p.code, detail=p.detail)


def node_report(obs: NodeObservation, *, families: Sequence[Family], arrival: Mapping[Family, str | None],
                public: Mapping[Family, str], endpoints: Mapping[PortSpec, Endpoint] | None = None,
                path_open: Mapping[PortSpec, bool | None] | None = None,
                previous: tuple[str, ...] = ()) -> tuple[NodeReport, list[PortListening]]:
    """The `node` block, and the per-port listener assessment (for `port_outcome`)."""
    assessed = assess(obs.ports, families, arrival, obs.listeners, obs.containers)
    rep = NodeReport(listening=_listening(assessed), ports_picked=obs.pick.reason if obs.pick else None)
    for pl in assessed:
        rep.problems += [_problem(p) for p in pl.problems]
    if obs.error:
        rep.notes.append(obs.error)
    reading = obs.reading
    if reading is not None:
        rep.rpc = f"{reading.endpoint} ({reading.how})"
        if reading.error is not None:
            rep.rpc_error = reading.error
            rep.problems.append(NodeProblem(code="rpc-unavailable", detail=f"the node's RPC could not be read: "
                                            f"{reading.error}"))
    status = reading.status if reading is not None else None
    if status is None:
        if obs.programs:
            rep.software = obs.programs[0]
        return rep, assessed
    _from_status(rep, status, obs, assessed, public, endpoints or {}, path_open or {}, previous)
    return rep, assessed


def _from_status(rep: NodeReport, status: NodeStatus, obs: NodeObservation, assessed: Sequence[PortListening],
                 public: Mapping[Family, str], endpoints: Mapping[PortSpec, Endpoint],
                 path_open: Mapping[PortSpec, bool | None], previous: tuple[str, ...]) -> None:
    rep.software, rep.version = status.software, status.version
    rep.peers = NodePeers(inbound=status.inbound, outbound=status.outbound)
    rep.reachability = status.reachability
    rep.notes += list(status.notes)
    rep.advertised = [NodeAdvertised(address=a.address, port=a.port, protocol=a.protocol, source=a.source)
                      for a in status.advertised]
    listening_ports = tuple(pl.spec for pl in assessed if pl.listening)
    observed = Observed(public=public, endpoints=endpoints, listening=listening_ports or status.p2p_ports,
                        previous=previous)
    for p in compare(status.software, status.advertised, observed, expects_address=status.kind in EXPECTS_ADDRESS):
        rep.problems.append(NodeProblem(code=p.code, detail=p.detail, settings=list(p.settings)))
    if status.mapping is not None:
        rep.maps_ports = NodeMapping(enabled=status.mapping.enabled, setting=status.mapping.setting)
        if status.mapping.enabled:
            rep.problems.append(NodeProblem(
                code="node-maps-ports",
                detail=f"{status.software} maps its own ports on the router ({status.mapping.setting}); "
                       "`nodereach open` will not map them a second time. Keep one of the two: the node's own "
                       "mapping, or turn it off and let `nodereach open` (or a manual forward) do it",
                settings=[status.mapping.setting]))
    opened = [spec for spec, ok in path_open.items() if ok]
    if status.inbound == 0 and opened:
        rep.problems.append(NodeProblem(
            code="no-inbound-peers",
            detail=f"the path to {', '.join(str(s) for s in opened)} is open, yet {status.software} has no inbound "
                   "peers: it may have just started (peers find a node over minutes to hours), it may advertise an "
                   "address peers cannot use (see the advertised addresses), or discovery may be off"))


@dataclass(frozen=True, slots=True)
class DoubleMapping:
    """`nodereach open` would map ports the node already maps itself."""

    ports: tuple[PortSpec, ...]
    software: str
    setting: str


def double_mapping(status: NodeStatus | None, specs: Sequence[PortSpec]) -> DoubleMapping | None:
    """The ports of `specs` that the node maps itself (its mapping is on and covers them, or names no ports,
    which then means its P2P ports)."""
    if status is None or status.mapping is None or not status.mapping.enabled:
        return None
    theirs = set(status.mapping.ports or status.p2p_ports)
    clash = tuple(s for s in specs if not theirs or s in theirs)
    if not clash:
        return None
    return DoubleMapping(clash, status.software, status.mapping.setting)
