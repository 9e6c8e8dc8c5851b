"""The node stage in the report: port semantics of check/2 and the `node` block (pure; the judgement itself
is nodereach.node.report's).

A port is `reachable` only when a program listens there and the dial-back's first packets reach it; the
network path alone is `path_open`.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

from nodereach.diagnose.model import PortResult, Report
from nodereach.diagnose.observations import Observations
from nodereach.net import Endpoint, Family, PortSpec


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
    from nodereach.node.report import node_report

    # Each port entry is judged for its own family (ports carry `family` once they are tested per family,
    # issue 11; until then they are IPv4). IPv6 traffic arrives on the host's global address: not known here,
    # so a v6 listener bound to one address is not called the wrong interface.
    families: list[Family] = sorted({_family(p) for p in rep.ports} or {4})
    arrival: dict[Family, str | None] = {4: rep.local.address, 6: None}
    public: dict[Family, str] = {}
    if rep.public.ipv4:
        public[4] = rep.public.ipv4
    if rep.public.ipv6:
        public[6] = rep.public.ipv6
    # Where nodereach listened for the dial-back itself, nothing else held the port: a socket the scan saw
    # there is nodereach's own (the scan runs beside the probes).
    ours = {PortSpec(p.port, p.protocol) for p in rep.ports if p.listener == "nodereach"}
    if ours:
        node = replace(node, listeners=tuple(lst for lst in node.listeners
                                             if PortSpec(lst.port, lst.transport) not in ours))
    assessed = {pl.spec: pl for pl in assess(node.ports, families, arrival, node.listeners, node.containers)}
    path_open: dict[PortSpec, bool | None] = {}
    endpoints: dict[PortSpec, Endpoint] = {}
    for p in rep.ports:
        spec = PortSpec(p.port, p.protocol)
        pl = assessed.get(spec)
        if pl is not None:
            pl = replace(pl, problems=tuple(q for q in pl.problems if q.family == _family(p)))
        out = port_outcome(p.reachable, p.reason, p.listener, pl)
        p.reachable, p.path_open, p.reason = out.reachable, out.path_open, out.reason
        path_open[spec] = out.path_open
        if p.public_endpoint:
            with contextlib.suppress(ValueError):
                endpoints[spec] = Endpoint.parse(p.public_endpoint)
    rep.node, _ = node_report(node, families=families, arrival=arrival, public=public, endpoints=endpoints,
                              path_open=path_open)


def _family(p: PortResult) -> Family:
    fam = getattr(p, "family", None)
    return 6 if fam == 6 else 4
