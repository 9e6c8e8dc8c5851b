"""The node stage in the report: port semantics of check/2 and the `node` block (pure; the judgement itself
is nodereach.node.report's).

A port is `reachable` only when a program listens there and the dial-back's first packets reach it; the
network path alone is `path_open`.
"""

from __future__ import annotations

import contextlib

from nodereach.diagnose.model import Report
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

    families: list[Family] = [4]  # the node's ports are tested over IPv4 (IPv6 dial-back is issue 11)
    arrival: dict[Family, str | None] = {4: rep.local.address}
    public: dict[Family, str] = {}
    if rep.public.ipv4:
        public[4] = rep.public.ipv4
    if rep.public.ipv6:
        public[6] = rep.public.ipv6
    assessed = {pl.spec: pl for pl in assess(node.ports, families, arrival, node.listeners, node.containers)}
    path_open: dict[PortSpec, bool | None] = {}
    endpoints: dict[PortSpec, Endpoint] = {}
    for p in rep.ports:
        spec = PortSpec(p.port, p.protocol)
        out = port_outcome(p.reachable, p.reason, p.listener, assessed.get(spec))
        p.reachable, p.path_open, p.reason = out.reachable, out.path_open, out.reason
        path_open[spec] = out.path_open
        if p.public_endpoint:
            with contextlib.suppress(ValueError):
                endpoints[spec] = Endpoint.parse(p.public_endpoint)
    rep.node, _ = node_report(node, families=families, arrival=arrival, public=public, endpoints=endpoints,
                              path_open=path_open)
