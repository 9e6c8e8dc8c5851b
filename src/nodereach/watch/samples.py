"""Declared state -> the gauge samples the exporter shows. Pure: a scrape reads the state of that moment.

Names and labels are a public contract (docs/watch.md, the alert rules and the dashboard use them):

- nodereach_reachable: 1 only when the check's verdict is `reachable`. A partly reachable node (some ports or
  one address family) exports 0 here, and nodereach_port_reachable says which ports are reachable;
- nodereach_port_reachable{port, protocol, family}: 1/0 per tested port and family (family "4" or "6"); no
  series for a family the node does not listen on (an IPv4-only node on a dual-stack host: the check's
  `ipv4-only`), which is neither reachable nor unreachable and must not fire the port alert;
- nodereach_node_peers{direction}: inbound / outbound, where a node adapter reads them;
- nodereach_public_address_info{family, address}: 1, one series per family, the address in its labels;
- nodereach_nat_layers, nodereach_cgnat (0/1): from the full check;
- nodereach_mapping_lease_remaining_seconds{port, protocol, method, family}: seconds left on the lease of a
  mapping the watcher keeps (--keep-mapped); family "4" for a port mapping, "6" for an IPv6 pinhole (both may
  use PCP or UPnP, so `method` alone cannot tell them apart); 0 when the gateway lost it; +Inf when permanent;
- nodereach_last_change_timestamp_seconds{what}: Unix time of the last declared change of each kind (absent
  until the first change, so a restart never looks like a change).

A value not known yet (no check has concluded, no server answered) is absent, never a made-up 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from nodereach.watch.state import WatchState

Labels = tuple[tuple[str, str], ...]

GAUGES: dict[str, str] = {
    "nodereach_reachable": "1 when the last declared verdict is `reachable` (partly reachable: 0)",
    "nodereach_port_reachable": "1 when peers' first packets reach the node on this port and family",
    "nodereach_node_peers": "The node's connected peers, by direction (from its RPC)",
    "nodereach_public_address_info": "The public address per family (in the `address` label)",
    "nodereach_nat_layers": "NAT layers between the node and the internet",
    "nodereach_cgnat": "1 when a carrier-grade NAT is on the path",
    "nodereach_mapping_lease_remaining_seconds": "Seconds left on the lease of a kept port mapping (family 4) "
                                                 "or IPv6 pinhole (family 6); 0: lost",
    "nodereach_last_change_timestamp_seconds": "Unix time of the last declared change, by what changed",
}


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: Labels
    value: float


def samples(state: WatchState, now: float) -> list[Sample]:
    """Every gauge sample for the state at monotonic time `now` (lease times count down from it)."""
    out: list[Sample] = []
    if state.verdict.known:
        out.append(Sample("nodereach_reachable", (), 1.0 if state.verdict.declared == "reachable" else 0.0))
    for key, fact in sorted(state.port_reach.items()):
        if fact.known and fact.declared in ("reachable", "unreachable"):  # family-unused: no series
            out.append(Sample("nodereach_port_reachable", (("port", str(key.port)), ("protocol", key.protocol),
                                                           ("family", str(key.family))),
                              1.0 if fact.declared == "reachable" else 0.0))
    node = state.node
    if node is not None:
        for direction, count in (("inbound", node.inbound), ("outbound", node.outbound)):
            if count is not None:
                out.append(Sample("nodereach_node_peers", (("direction", direction),), float(count)))
    for fam, pub in sorted(state.public.items()):
        if pub.known and pub.declared is not None:
            out.append(Sample("nodereach_public_address_info", (("family", str(fam)), ("address", pub.declared)),
                              1.0))
    if state.nat_layers.known and state.nat_layers.declared is not None:
        out.append(Sample("nodereach_nat_layers", (), float(state.nat_layers.declared)))
    if state.cgnat.known:
        out.append(Sample("nodereach_cgnat", (), float(bool(state.cgnat.declared))))
    for key, mapping in sorted(state.mappings.items()):
        if not mapping.known or mapping.declared is None:
            continue
        lease = state.leases.get(key)
        method = mapping.declared.method or (lease.method if lease else None) or ""
        if not mapping.declared.present or lease is None:
            left = 0.0
        elif lease.expires is None:
            left = float("inf")
        else:
            left = max(0.0, lease.expires - now)
        out.append(Sample("nodereach_mapping_lease_remaining_seconds",
                          (("port", str(key.port)), ("protocol", key.protocol), ("method", method),
                           ("family", str(key.family))), round(left, 1)))
    for what, at in sorted(state.last_change.items()):
        out.append(Sample("nodereach_last_change_timestamp_seconds", (("what", what),), at))
    return out
