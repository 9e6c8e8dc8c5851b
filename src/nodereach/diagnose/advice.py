"""Verdict, causes and advice from a filled-in report (pure: same report, same words).

Per address family first: can peers reach the node over IPv4, over IPv6 (`reachability`)? The verdict counts
the families that both this host and the node have: `reachable` over all of them, `partly-reachable` over
some, `unreachable` over none (a node that listens on IPv4 only is judged on IPv4 and told to listen on IPv6
too, not given a permanent half verdict). A family this host does not have is `untested`, never unreachable.

Remedies come in a fixed order: (1) get rid of the NAT or filter (the provider; IPv6, which has no NAT; a
tunnel to a public host behind CGNAT without IPv6), (2) configure the operator's own device (port forward,
DMZ, firewall rule), (3) automatic mapping with `nodereach open` as the last resort (IPv4 mappings, IPv6
pinholes); then a plain statement when nothing on the operator's side can help. Advice that cannot help in
the detected situation is never shown (no port forward behind CGNAT).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from nodereach.diagnose.model import (
    Advice,
    FamilyReachability,
    PortResult,
    Reachability,
    Report,
    Verdict,
    peer_address6,
)
from nodereach.diagnose.rules import (
    PortSpec,
    dmz_rules,
    firewall_accept_rules,
    ipv6_firewall_rules,
    port_forward_rules,
    provider_message_cgnat,
    provider_message_double_nat,
    provider_message_filter,
)
from nodereach.net import FAMILIES, TRANSPORTS, Endpoint, Family, address_kind

RESTRICTIVE = ("address-dependent", "address-and-port-dependent")
NOT_LISTENING = ("refused", "nothing-listening", "loopback-only", "wrong-interface", "ipv6-only", "ipv4-only",
                 "container-port-not-published")
"""Port reasons that mean the traffic arrived and no program of the node took it."""

CAUSES: dict[str, str] = {
    "no-connectivity": "no server answered over UDP or TCP",
    "no-default-route": "the node has no default route",
    "udp-blocked": "outbound UDP is blocked (TCP works)",
    "tcp-blocked": "outbound TCP is blocked (UDP works)",
    "port-filtered": "traffic to particular ports is filtered on the way (provider or network policy)",
    "cgnat": "the provider's carrier-grade NAT (100.64.0.0/10) sits in front of the node",
    "double-nat": "two or more NAT layers sit in front of the node",
    "nat": "the node is behind a NAT and the port is not forwarded",
    "symmetric-nat": "the NAT maps each destination to a new port: hole punching fails",
    "firewall": "a stateful firewall drops unsolicited inbound traffic",
    "ipv6-firewall": "over IPv6, a stateful firewall (usually the router's) drops unsolicited inbound traffic",
    "ipv6-nat66": "IPv6 is translated (NAT66) and the port is not forwarded",
    "port-unreachable": "a node port could not be reached from outside",
    "nothing-listening": "nothing listens on a node port",
    "protocol-check-failed": "a node port is open, but what answers there does not answer as the node",
    "untested": "inbound reachability was not tested (no nodereach server)",
}

Probed = Literal["tested", "no-connectivity"]
"""A family the probes ran over: some server answered (`tested`), or none did (IPv4: or no route at all)."""


@dataclass(frozen=True)
class Inputs:
    """What the report alone does not say: which families were probed, where a dial-back answered, which
    families the node listens on, the node's software."""

    requested: Sequence[PortSpec] = ()
    probed: Mapping[Family, Probed] | None = None
    """None: read from the report's outbound fields (IPv4 from `udp/tcp.outbound`, IPv6 from `.ipv6`)."""
    dialback: Mapping[Family, bool] | None = None
    """A dial-back server answered over the family (None: assumed for every probed family)."""
    node_families: frozenset[Family] | None = None
    """The families the node listens on (None: unknown, every tested family counts)."""
    software: str | None = None

    def probed_in(self, report: Report) -> dict[Family, Probed]:
        if self.probed is not None:
            return dict(self.probed)
        out: dict[Family, Probed] = {}
        seen: tuple[tuple[Family, bool | None, bool | None], ...] = (
            (4, report.udp.outbound, report.tcp.outbound), (6, report.udp.ipv6, report.tcp.ipv6))
        for family, udp, tcp in seen:
            if udp is not None or tcp is not None:
                out[family] = "tested" if udp or tcp else "no-connectivity"
        return out


class Decision(msgspec.Struct, frozen=True):
    verdict: Verdict
    causes: list[str]
    advice: list[Advice]
    reachability: Reachability = field(default_factory=Reachability)


def _ports_of(report: Report, requested: Sequence[PortSpec]) -> list[PortSpec]:
    if requested:
        return list(requested)
    return list(dict.fromkeys(PortSpec(p.port, p.protocol) for p in report.ports))


def _infer4(report: Report) -> FamilyReachability:
    """No IPv4 port was tested from outside: predict from the NAT and filter behaviour."""
    nat = report.nat
    if nat.present is False and nat.filtering not in RESTRICTIVE and report.udp.outbound is True and \
            report.tcp.outbound is True and not report.udp.blocked_ports and not report.tcp.blocked_ports:
        return "reachable"
    return "unreachable"


def _infer6(report: Report) -> FamilyReachability:
    """No IPv6 port was tested from outside: reachable only without NAT66 and without a restrictive filter."""
    six = report.ipv6
    if six.translation in ("none", "nptv6") and six.filtering == "endpoint-independent":
        return "reachable"
    return "unreachable"


def _deciding(ports: Sequence[PortResult]) -> list[PortResult]:
    """check/2: the ports with a definite answer, and of those the ones where the node listens; ports with
    nothing listening are listed (reason nothing-listening, with path_open) and decide only when no port has
    a listener."""
    results = [p for p in ports if p.reachable is not None]
    listened = [p for p in results if p.reason != "nothing-listening"]
    return listened or results


def _reach(report: Report, family: Family) -> FamilyReachability:
    deciding = _deciding([p for p in report.ports if p.family == family])
    if deciding:
        return "reachable" if all(p.reachable for p in deciding) else "unreachable"
    return _infer4(report) if family == 4 else _infer6(report)


@dataclass(frozen=True)
class _Situation:
    """Everything the advice reads besides the report."""

    verdict: Verdict
    causes: list[str]
    reach: dict[Family, FamilyReachability]
    counted: tuple[Family, ...]
    ports: list[PortSpec]
    blocked: list[int]
    inputs: Inputs

    def unreachable(self, family: Family) -> bool:
        """The family counts for the verdict and peers cannot reach the node over it."""
        return family in self.counted and self.reach[family] == "unreachable"


def decide(report: Report, inputs: Inputs | None = None) -> Decision:
    """Turn the measurements in `report` into per-family reachability, a verdict, cause codes and ordered
    advice."""
    inputs = inputs or Inputs()
    probed = inputs.probed_in(report)
    reach: dict[Family, FamilyReachability] = {f: "untested" for f in FAMILIES}
    for family, state in probed.items():
        reach[family] = _reach(report, family) if state == "tested" else "no-connectivity"
    reachability = Reachability(ipv4=reach[4], ipv6=reach[6])
    tested = [f for f in FAMILIES if reach[f] in ("reachable", "unreachable")]
    if not tested:
        down = ["no-connectivity"]
        if report.local.gateway is None:
            down.append("no-default-route")
        return Decision("no-connectivity", down, _no_connectivity_advice(report), reachability)
    nodes = inputs.node_families
    counted = tuple(f for f in tested if nodes is None or f in nodes) or tuple(tested)
    values = [reach[f] for f in counted]
    verdict: Verdict = "reachable" if all(v == "reachable" for v in values) else \
        "partly-reachable" if "reachable" in values else "unreachable"

    causes: list[str] = []
    if report.udp.outbound is False:
        causes.append("udp-blocked")
    if report.tcp.outbound is False:
        causes.append("tcp-blocked")
    blocked = sorted({*report.udp.blocked_ports, *report.tcp.blocked_ports})
    ports = _ports_of(report, inputs.requested)
    if blocked and (reach[4] == "unreachable" or {p.port for p in ports} & set(blocked)):
        causes.append("port-filtered")
    ports4 = [p for p in report.ports if p.family == 4]
    ports6 = [p for p in report.ports if p.family == 6]
    deciding4, deciding6 = _deciding(ports4), _deciding(ports6)
    nat = report.nat
    # Blame the network (NAT, firewall) only where its path was closed or could not be told open.
    if 4 in counted and reach[4] == "unreachable" and \
            (not deciding4 or any(p.reachable is False and p.path_open is not True for p in deciding4)):
        if nat.cgnat:
            causes.append("cgnat")
        elif nat.present and (nat.layers or 0) >= 2:
            causes.append("double-nat")
        elif nat.present:
            causes.append("nat")
        if nat.present and nat.mapping in RESTRICTIVE:
            causes.append("symmetric-nat")
        if nat.present is False and nat.filtering in RESTRICTIVE:
            causes.append("firewall")
        if any(p.reachable is False for p in ports4):
            causes.append("port-unreachable")
    if 6 in counted and reach[6] == "unreachable" and \
            (not deciding6 or any(p.reachable is False and p.path_open is not True for p in deciding6)):
        causes.append("ipv6-nat66" if report.ipv6.translation == "nat66" else "ipv6-firewall")
        if any(p.reachable is False for p in ports6) and "port-unreachable" not in causes:
            causes.append("port-unreachable")
    counted_ports = [p for p in report.ports if p.family in counted]
    if verdict != "reachable" and any(p.reachable is False and p.reason in NOT_LISTENING for p in counted_ports):
        causes.append("nothing-listening")
    if verdict != "reachable" and any(p.reason == "protocol-check-failed" for p in counted_ports):
        causes.append("protocol-check-failed")
    # Untested: no dial-back answered for any port (a port known to have no listener is still untested).
    dialback = inputs.dialback if inputs.dialback is not None else {f: True for f in probed}
    if not any(dialback.values()) and not any(p.listener is not None for p in _deciding(counted_ports)):
        causes.append("untested")
    situation = _Situation(verdict, causes, reach, counted, ports, blocked, inputs)
    return Decision(verdict, causes, _advice(report, situation), reachability)


def _no_connectivity_advice(report: Report) -> list[Advice]:
    if report.local.gateway is None:
        return [Advice(code="fix-network", title="Give the node a route to the internet",
                       detail="The node has no default route: nothing leaves this machine. Check the network "
                              "configuration (DHCP, `ip route`), the cable or Wi-Fi, then run check again.")]
    return [Advice(code="fix-network", title="Restore outbound connectivity",
                   detail=f"No server answered over UDP or TCP although a default route via "
                          f"{report.local.gateway} exists. Check that the router is online, that no firewall on "
                          "this machine or network blocks outgoing traffic, and that the servers named with "
                          "--server are right.")]


def _advice(report: Report, s: _Situation) -> list[Advice]:
    nat = report.nat
    causes = s.causes
    node_ip = report.local.address or "NODE-IP"
    out: list[Advice] = []
    fwd_ports = s.ports or [PortSpec(30303, "tcp"), PortSpec(30303, "udp")]
    ports_note = "" if s.ports else " (replace 30303 with your node's ports; run check with --port to test them)"
    unreach4 = s.unreachable(4)

    # (1) get rid of the NAT or filter: the provider, IPv6, a tunnel.
    if "udp-blocked" in causes or "port-filtered" in causes:
        blocked_specs = [PortSpec(p, proto) for p in s.blocked for proto in TRANSPORTS
                         if p in (report.udp.blocked_ports if proto == "udp" else report.tcp.blocked_ports)]
        msg = provider_message_filter(blocked_specs, "udp-blocked" in causes)
        what = "outbound UDP" if "udp-blocked" in causes else \
            "traffic on port(s) " + ", ".join(str(p) for p in s.blocked)
        out.append(Advice(code="ask-provider-lift-filter", title="Ask your provider to lift the filter",
                          detail=f"Your network drops {what}. Only whoever runs the filter can lift it; send "
                                 "them the message below.", commands={"message": msg}))
        if "port-filtered" in causes:
            alt = next(p for p in range(30304, 65535) if p not in s.blocked)
            out.append(Advice(code="use-other-port", title="Or move the node to a port that is not filtered",
                              detail=f"The filter targets well-known P2P ports ({', '.join(map(str, s.blocked))}). "
                                     f"Configure the node to listen on another port, e.g. {alt}, and check it "
                                     f"with `nodereach check --port {alt}/tcp --port {alt}/udp`."))
    if "cgnat" in causes:
        wan = next((w for w in (report.portmap.pcp.external_address, report.portmap.natpmp.external_address,
                                report.portmap.upnp.external_address) if w and address_kind(w) == "shared"), None)
        hop = next((layer.router for layer in nat.layer_details
                    if layer.router and address_kind(layer.router) == "shared"), None)
        out.append(Advice(code="ask-provider-public-ipv4",
                          title="Ask your provider for a public IPv4 address (leave CGNAT)",
                          detail="Your provider's carrier-grade NAT shares one public address among many "
                                 "customers; nobody outside can open a connection to your node through it. Many "
                                 "providers give a public IPv4 address on request (sometimes for a small fee).",
                          commands={"message": provider_message_cgnat(report.public.ipv4, wan, s.ports, hop)}))
    elif "double-nat" in causes:
        out.append(Advice(code="remove-double-nat", title="Remove one NAT layer",
                          detail="Two routers translate addresses in a row. Put the provider's modem/router into "
                                 "bridge mode (or your own router into access-point mode), or ask the provider "
                                 "for a public address on your router.",
                          commands={"message": provider_message_double_nat(report.public.ipv4, s.ports)}))
    ipv6 = _use_ipv6(report, s, fwd_ports)
    if ipv6 is not None:
        out.append(ipv6)
    if "cgnat" in causes and s.reach[6] in ("untested", "no-connectivity"):
        out.append(_tunnel(s, fwd_ports))

    # (2) the operator's own device.
    own_nat = nat.present is True and not nat.cgnat
    if unreach4 and own_nat and ("nat" in causes or "double-nat" in causes):
        detail = (f"Forward the node's ports{ports_note} on your router to {node_ip}. Ready-to-paste rules for "
                  "common routers below ('wan' is the router's internet interface).")
        if "double-nat" in causes:
            detail += (" With two NAT layers, forward on both: on the outer router to the inner router's WAN "
                       "address, on the inner router to the node.")
        if "symmetric-nat" in causes:
            detail += " Your NAT changes ports per destination, so peers cannot punch through: forwarding is needed."
        out.append(Advice(code="port-forward", title="Forward the node's ports on your router", detail=detail,
                          commands=port_forward_rules(node_ip, fwd_ports)))
        out.append(Advice(code="dmz", title="Or make the node the router's exposed host (DMZ)",
                          detail=f"Sends all unsolicited inbound traffic to {node_ip}. Only for a machine that "
                                 "runs nothing but the node, with its own firewall.",
                          commands=dmz_rules(node_ip)))
    if unreach4 and "firewall" in causes:
        out.append(Advice(code="open-firewall", title="Allow the node's ports through the firewall",
                          detail=f"No NAT is in the way, but a stateful firewall drops unsolicited inbound "
                                 f"traffic{ports_note}. Add accept rules on the node or on your router; if the "
                                 "firewall is your provider's, ask them to lift it.",
                          commands=firewall_accept_rules(fwd_ports)))

    # (3) automatic mapping, last resort: IPv4 only where the gateway is the only NAT; IPv6 pinholes through
    # the router's firewall (UPnP IGD WANIPv6FirewallControl, PCP), which work behind CGNAT too.
    opener = _nodereach_open(report, s, own_nat, fwd_ports)
    if opener is not None:
        out.append(opener)
    if "cgnat" in causes:
        out.append(Advice(code="nothing-local", title="Nothing on your side can fix this over IPv4",
                          detail="Port forwarding, DMZ, UPnP, NAT-PMP or PCP on your router cannot help IPv4: the "
                                 "blocking NAT is the provider's. Without the provider's cooperation the node can "
                                 "only make outbound connections over IPv4, unless it is reached through IPv6 or "
                                 "a tunnel to a host with a public address (above)."))
    counted_ports = [p for p in report.ports if p.family in s.counted]
    if s.verdict != "reachable" and "nothing-listening" in causes:
        empty = [p for p in counted_ports if p.reachable is False and p.reason in NOT_LISTENING]
        opened = list(dict.fromkeys(_port_label(p) for p in empty if p.path_open))
        path = (f" The network path is open: nodereach's test traffic to {', '.join(opened)} reached this machine "
                "from outside." if opened else "")
        out.append(Advice(code="start-node", title="Make the node listen on its port",
                          detail="No program of the node takes the traffic on " +
                                 ", ".join(dict.fromkeys(f"{_port_label(p)} ({p.reason})" for p in empty)) +
                                 ": start the node, and make it listen on all addresses (0.0.0.0 and ::), not "
                                 "only 127.0.0.1 or one interface; a node in a container needs its ports "
                                 f"published.{path}"))
    if s.verdict != "reachable" and "protocol-check-failed" in causes:
        wrong = [p for p in counted_ports if p.reason == "protocol-check-failed"]
        out.append(Advice(code="check-forward-target", title="Make the open port lead to the node",
                          detail="Traffic from outside gets through on " + "; ".join(dict.fromkeys(
                              f"{_port_label(p)} ({p.protocol_check.protocol}: {p.protocol_check.detail})"
                              for p in wrong if p.protocol_check is not None)) +
                                 ", but what answers there is not the node. Point the router's port forward at "
                                 "this machine's address, stop whatever else holds the port here, and check that "
                                 "the node runs the network (and, for BitTorrent, the torrents) its RPC reports."))
    if "untested" in causes:
        out.append(Advice(code="get-nodereach-server", title="Test inbound reachability with a nodereach server",
                          detail="Public STUN servers cannot test whether peers reach your ports, nor the NAT's "
                                 "filtering. Run `nodereach check --server HOST` against your network's nodereach "
                                 "server, or run `nodereach serve --address A --alt-address B` on a host with two "
                                 "public addresses."))
    return out


def _port_label(p: PortResult) -> str:
    return f"{p.port}/{p.protocol}" + (" over IPv6" if p.family == 6 else "")


# --- IPv6 -------------------------------------------------------------------------------------------------
_LISTEN6: dict[str, tuple[str, ...]] = {
    # Each software's own setting that makes it listen on IPv6 as well (defaults that already do say so).
    "bitcoin core": ("bind=0.0.0.0:{port}  (bitcoin.conf)", "bind=[::]:{port}  (bitcoin.conf; without any bind= "
                     "line Bitcoin Core listens on both)"),
    "monerod": ("--p2p-use-ipv6", "--p2p-bind-ipv6-address ::", "--p2p-bind-port-ipv6 {port}"),
    "lighthouse": ("--listen-address 0.0.0.0 --listen-address ::", "--port6 {port}"),
    "nimbus": ("--listen-address=::  (dual-stack)",),
    "kubo": ("ipfs config --json Addresses.Swarm '[\"/ip4/0.0.0.0/tcp/{port}\", \"/ip6/::/tcp/{port}\", "
             "\"/ip4/0.0.0.0/udp/{port}/quic-v1\", \"/ip6/::/udp/{port}/quic-v1\"]'",),
    "lnd": ("listen=0.0.0.0:{port}  (lnd.conf)", "listen=[::]:{port}  (lnd.conf)"),
    "transmission": ("\"bind-address-ipv6\": \"::\"  (settings.json)",),
}


def listen_ipv6_settings(software: str | None, port: int | None) -> tuple[str, ...]:
    """The node's own settings that make it listen on IPv6 too, filled in (empty when unknown)."""
    if software is None:
        return ()
    return tuple(line.format(port=port or "PORT") for line in _LISTEN6.get(software.lower(), ()))


def _use_ipv6(report: Report, s: _Situation, fwd_ports: list[PortSpec]) -> Advice | None:
    """IPv6 works on this line: peers can reach the node over it now (no NAT), and here is what it takes.
    Shown when IPv6 connectivity was measured and the node is not (yet) reachable over every family over it."""
    public6 = report.public.ipv6
    if s.reach[6] not in ("reachable", "unreachable") or public6 is None:
        return None
    if s.reach[6] == "reachable" and s.verdict == "reachable":
        return None
    six = report.ipv6
    ports6 = [p for p in report.ports if p.family == 6]
    node_has6 = s.inputs.node_families is None or 6 in s.inputs.node_families
    not_listening = [p for p in ports6 if p.reason in NOT_LISTENING] or ([] if node_has6 else ports6)
    if ports6:
        closed = sorted({PortSpec(p.port, p.protocol) for p in ports6 if p.path_open is False})
    else:
        closed = fwd_ports if s.reach[6] == "unreachable" else []
    # What servers saw may be a temporary privacy address (RFC 8981): gone in a day, so peers are given the
    # stable one (`peer6`), and the firewall rules name the host's stable address too (`node6`).
    peer6 = peer_address6(report) or public6
    if s.reach[6] == "reachable" and 6 in s.counted and not not_listening:
        where = ", ".join(str(Endpoint(public6, p.port)) + f"/{p.protocol}" for p in ports6 if p.reachable)
        settings = _advertise_settings(s.inputs.software, peer6, s.ports)
        return Advice(code="use-ipv6", title="IPv6 peers reach the node now",
                      detail=f"Over IPv6 nothing keeps peers out: they reach the node at {where or public6}. "
                             f"Make sure it advertises its IPv6 address {peer6} so that they learn it"
                             + (" (its settings below)." if settings else ".")
                             + " IPv4 peers still cannot reach it: see the other advice.",
                      commands={"node": "\n".join(settings)} if settings else {})
    node6 = six.stable_address or six.address or public6
    steps: list[str] = []
    commands: dict[str, str] = {}
    node_lines: list[str] = []
    if not_listening:
        first = not_listening[0]
        listen = listen_ipv6_settings(s.inputs.software, first.port)
        today = ", ".join(dict.fromkeys(f"{_port_label(p)} ({p.reason})" for p in not_listening))
        steps.append("make the node listen on IPv6 too: bind it to `::` (every IPv6 address) as well as 0.0.0.0"
                     + (" (its settings below)" if listen else "") + f"; today {today}")
        node_lines += listen
    advertise = _advertise_settings(s.inputs.software, peer6, s.ports)
    steps.append(f"make it advertise its IPv6 address {peer6}" + (" (settings below)" if advertise else
                                                                    " where its configuration names addresses"))
    node_lines += advertise
    if six.translation == "nat66":
        steps.append(f"IPv6 is translated here (NAT66: the servers see {public6}, the host has {node6}): forward "
                     "the ports on the translating router as for IPv4 (destination NAT), or ask for a routed "
                     "(delegated) prefix instead")
    elif closed:
        steps.append(f"allow inbound to {', '.join(map(str, closed))} for {node6} in the router's IPv6 firewall "
                     "(ready rules below; home routers call it 'IPv6 firewall', 'IPv6 pinhole' or 'port sharing "
                     "/ permit access' for the device)")
        commands.update(ipv6_firewall_rules(node6, closed))
    if node_lines:
        commands = {"node": "\n".join(dict.fromkeys(node_lines)), **commands}
    how = "the router swaps the prefix (NPTv6), so peers dial " + public6 if six.translation == "nptv6" else \
        f"the node's own address {peer6}"
    detail = (f"This line has working IPv6 with no NAT in the way: peers can reach the node over IPv6 at {how}. "
              "What it takes: " + "; ".join(f"({i}) {step}" for i, step in enumerate(steps, 1)) + ".")
    if s.unreachable(6) and "ipv6-firewall" in s.causes:
        detail += " Last resort: let nodereach open the pinhole automatically (below)."
    return Advice(code="use-ipv6", title="Use IPv6: the node can be reachable over IPv6 now", detail=detail,
                  commands=commands)


def _advertise_settings(software: str | None, public6: str, ports: Sequence[PortSpec]) -> list[str]:
    """The node's settings that make it advertise `public6` (nodereach.node.advertised, per software)."""
    if software is None:
        return []
    from nodereach.node.advertised import settings_for

    first = ports[0] if ports else None
    return list(settings_for(software, ip=public6, port=first.port if first else None,
                             protocol=first.transport if first else None))


def _tunnel(s: _Situation, fwd_ports: list[PortSpec]) -> Advice:
    """Behind CGNAT without IPv6: a tunnel to a rented public host (nodereach tunnel-config); Tor for Bitcoin
    Core; not Tor/I2P for Monero (they carry no chain sync)."""
    args = " ".join(f"--port {p}" for p in fwd_ports)
    software = (s.inputs.software or "").lower()
    detail = ("Rent a small host with a public IPv4 address and bring a WireGuard tunnel from the node to it: "
              "the host forwards the node's ports into the tunnel (no masquerade, so the node still sees each "
              "peer's own address) and the tunnel keeps the CGNAT mapping open. `nodereach tunnel-config` writes "
              "both ends' configuration and the forwarding rules, filled in (docs/tunnel.md); the node then "
              "advertises the rented host's address.")
    if software == "bitcoin core":
        detail += (" Bitcoin Core can also accept inbound peers as a Tor onion service: `listenonion=1` with Tor "
                   "running (its control port reachable).")
    elif software == "monerod":
        detail += " For monerod, Tor and I2P carry transactions but no chain sync: they are no remedy here."
    elif not software:
        detail += (" Bitcoin Core can also accept inbound peers as a Tor onion service (`listenonion=1`); for "
                   "Monero, Tor and I2P carry no chain sync, so they are no remedy there.")
    return Advice(code="tunnel", title="Or tunnel to a host with a public address", detail=detail,
                  commands={"shell": f"nodereach tunnel-config --public-host PUBLIC_HOST {args}"})


def _nodereach_open(report: Report, s: _Situation, own_nat: bool, fwd_ports: list[PortSpec]) -> Advice | None:
    """`nodereach open`: IPv4 mappings where the gateway is the only NAT (and may speak PCP/NAT-PMP/UPnP), IPv6
    pinholes where the IPv6 firewall is what keeps peers out."""
    pm = report.portmap
    states = [pm.pcp.available, pm.natpmp.available, pm.upnp.available]
    v4 = s.unreachable(4) and own_nat and "nat" in s.causes and any(st is not False for st in states)
    v6 = s.unreachable(6) and "ipv6-firewall" in s.causes
    if not v4 and not v6:
        return None
    args = " ".join(str(p) for p in fwd_ports)
    have = [n for n, st in (("PCP", pm.pcp.available), ("NAT-PMP", pm.natpmp.available),
                            ("UPnP", pm.upnp.available)) if st]
    which = f"your router speaks {', '.join(have)}" if have else "if your router supports PCP/NAT-PMP/UPnP"
    warning = ("Security warning: automatic port mapping lets any program on your network open holes in your "
               "router; prefer a manual forward or firewall rule and turn UPnP off when you do not need it.")
    if v4 and v6:
        return Advice(code="nodereach-open", title="Last resort: let nodereach map the ports automatically",
                      detail=f"`nodereach open` asks the router to forward the IPv4 ports ({which}) and to open "
                             "IPv6 pinholes (UPnP IGD WANIPv6FirewallControl or PCP), and keeps them alive. "
                             + warning, commands={"shell": f"nodereach open {args}"})
    if v4:
        family = " --family 4" if s.reach[6] in ("reachable", "unreachable") else ""
        return Advice(code="nodereach-open", title="Last resort: let nodereach map the ports automatically",
                      detail=f"`nodereach open` asks the router to forward the ports ({which}) and keeps the "
                             "mapping alive. " + warning, commands={"shell": f"nodereach open{family} {args}"})
    return Advice(code="nodereach-open", title="Last resort: let nodereach open an IPv6 pinhole automatically",
                  detail="`nodereach open --family 6` asks the router's IPv6 firewall for a pinhole to the node's "
                         "IPv6 address (UPnP IGD WANIPv6FirewallControl or PCP, if the router offers them; this "
                         "works behind CGNAT too, where IPv4 mappings cannot) and keeps it alive. " + warning,
                  commands={"shell": f"nodereach open --family 6 {args}"})
