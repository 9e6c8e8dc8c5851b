"""The node stage in the report: port semantics of check/2 and the `node` block (pure; the judgement itself
is nodereach.node.report's).

A port is `reachable` only when a program listens there and the dial-back's first packets reach it; the
network path alone is `path_open`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from nodereach.diagnose.model import PortResult, Report, peer_address6
from nodereach.diagnose.observations import Observations
from nodereach.diagnose.proof import FAILED, judge, proof_problem
from nodereach.net import FAMILIES, Endpoint, Family, PortSpec, wildcard

if TYPE_CHECKING:
    from nodereach.node.listeners import Listener


def apply_node(obs: Observations, rep: Report) -> None:
    """Rewrite `rep.ports` in check/2 terms and fill `rep.node` (before the verdict is decided). Without a node
    stage the dial-back alone still tells whether nodereach had to listen itself (`listener`)."""
    from nodereach.node.report import port_outcome

    node = obs.node
    if node is None:
        for p in rep.ports:
            out = port_outcome(p.reachable, p.reason, p.listener, None)
            p.reachable, p.path_open, p.reason = out.reachable, out.path_open, out.reason
        return
    from nodereach.node.listeners import assess
    from nodereach.node.proofs import plan_for
    from nodereach.node.report import node_report

    # Each port entry is judged for its own family. IPv6 traffic arrives on one of the host's global addresses
    # (a temporary privacy address is the usual source toward the servers, while the node may bind the stable
    # one), so a v6 listener bound to one address is not called the wrong interface.
    families: list[Family] = sorted({p.family for p in rep.ports} or {4})
    arrival: dict[Family, str | None] = {4: rep.local.address, 6: None}
    public: dict[Family, str] = {}
    if rep.public.ipv4:
        public[4] = rep.public.ipv4
    peer6 = peer_address6(rep)  # the stable address, not a temporary one the servers saw (RFC 8981)
    if peer6:
        public[6] = peer6
    node = replace(node, listeners=node_listeners(node.listeners, rep))
    assessed = {pl.spec: pl for pl in assess(node.ports, families, arrival, node.listeners, node.containers)}
    proofs = {(fam.family, probe.spec): probe.proof for fam in obs.families.values() for probe in fam.ports
              if probe.proof is not None}
    path_open: dict[PortSpec, bool | None] = {}
    endpoints: dict[PortSpec, Endpoint] = {}
    notes: list[str] = []
    failed: list[PortResult] = []
    for p in rep.ports:
        spec = PortSpec(p.port, p.protocol)
        pl = assessed.get(spec)
        if pl is not None:
            pl = replace(pl, problems=tuple(q for q in pl.problems if q.family == p.family))
        out = port_outcome(p.reachable, p.reason, p.listener, pl)
        p.reachable, p.path_open, p.reason = out.reachable, out.path_open, out.reason
        if out.reason == "nothing-listening" and pl is not None and pl.listeners and pl.problems:
            # The node listens, only not over this family (an IPv4-only socket while IPv6 is tested, or the
            # reverse): nodereach's own listener got the family's port, and the family's problem says why.
            p.reason = pl.problems[0].code
        proved = judge(p, proofs.get((p.family, spec)))
        p.reachable, p.path_open, p.reason, p.protocol_check = (proved.reachable, proved.path_open, proved.reason,
                                                                proved.check)
        if proved.note:
            notes.append(proved.note)
        if proved.reason == FAILED:
            failed.append(p)
        # Per port, over any family: a path open over IPv6 lets peers in even where IPv4's is closed.
        before = path_open.get(spec)
        path_open[spec] = True if (before or p.path_open) else (False if False in (before, p.path_open)
                                                                 else None)
        if p.public_endpoint and p.family == 4:  # the NAT's endpoint (IPv4) is what an advertised port must match
            with contextlib.suppress(ValueError):
                endpoints[spec] = Endpoint.parse(p.public_endpoint)
    rep.node, _ = node_report(node, families=families, arrival=arrival, public=public, endpoints=endpoints,
                              path_open=path_open)
    rep.node.notes += [*plan_for(node).notes, *notes]
    rep.node.problems += [proof_problem(p, rep.node.software) for p in failed]



def node_listeners(listeners: Sequence[Listener], rep: Report) -> tuple[Listener, ...]:
    """The node's sockets on the tested ports, without nodereach's own. Where nodereach listened for the
    dial-back itself over a family, nothing else held that family's wildcard there: a socket the scan saw
    there is nodereach's own (the scan runs beside the probes). Per family: nodereach's `[::]` socket
    (IPv6 only) next to the node's `0.0.0.0` one must not hide the node's."""
    ours = {(p.port, p.protocol, p.family) for p in rep.ports if p.listener == "nodereach"}
    return tuple(lst for lst in listeners
                 if not ((lst.port, lst.transport, lst.family) in ours and lst.address == wildcard(lst.family)))


def node_families(obs: Observations, rep: Report) -> frozenset[Family] | None:
    """The families the node listens on for its tested ports: from the listener scan (a socket that takes the
    family, not on loopback; nodereach's own left out), else from the dial-back (the port was held over that
    family). None: unknown (no ports, or no listener information at all)."""
    node = obs.node
    if node is not None:
        tested = {(p.port, p.transport) for p in obs.options.ports}
        found: set[Family] = set()
        for lst in node_listeners(node.listeners, rep):
            if (lst.port, lst.transport) in tested and not lst.loopback:
                found |= {f for f in FAMILIES if lst.takes(f)}
        return frozenset(found)
    held = {p.family for p in rep.ports if p.listener == "node"}
    if held or any(p.listener == "nodereach" for p in rep.ports):
        return frozenset(held)
    return None
