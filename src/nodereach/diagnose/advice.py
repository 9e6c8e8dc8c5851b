"""Verdict, causes and advice from a filled-in report (pure: same report, same words).

Remedies come in a fixed order: (1) get rid of the NAT or filter (the provider), (2) configure the operator's
own device (port forward, DMZ, firewall rule), (3) automatic mapping with `nodereach open` as the last
resort; then IPv6 where it works, and a plain statement when nothing on the operator's side can help.
Advice that cannot help in the detected situation is never shown (no port forward behind CGNAT).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nodereach.diagnose.model import Advice, Report, Verdict
from nodereach.diagnose.rules import (
    PortSpec,
    dmz_rules,
    firewall_accept_rules,
    port_forward_rules,
    provider_message_cgnat,
    provider_message_double_nat,
    provider_message_filter,
)
from nodereach.net import TRANSPORTS, address_kind

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
    "port-unreachable": "a node port could not be reached from outside",
    "nothing-listening": "nothing listens on a node port",
    "untested": "inbound reachability was not tested (no nodereach server)",
}


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    causes: list[str]
    advice: list[Advice]


def _ports_of(report: Report, requested: Sequence[PortSpec]) -> list[PortSpec]:
    if requested:
        return list(requested)
    return [PortSpec(p.port, p.protocol) for p in report.ports]


def _infer_verdict(report: Report, udp_ok: bool, tcp_ok: bool) -> Verdict:
    """No port was tested from outside: predict from the NAT and filter behaviour."""
    nat = report.nat
    if nat.present is False and nat.filtering not in RESTRICTIVE and udp_ok and tcp_ok and \
            not report.udp.blocked_ports and not report.tcp.blocked_ports:
        return "reachable"
    return "unreachable"


def decide(report: Report, requested: Sequence[PortSpec] | None = None, dialback: bool = True) -> Decision:
    """Turn the measurements in `report` into a verdict, cause codes and ordered advice."""
    requested = requested or []
    ports = _ports_of(report, requested)
    udp_ok = report.udp.outbound is True
    tcp_ok = report.tcp.outbound is True
    nat = report.nat
    if not udp_ok and not tcp_ok:
        down = ["no-connectivity"]
        if report.local.gateway is None:
            down.append("no-default-route")
        return Decision("no-connectivity", down, _no_connectivity_advice(report))

    causes: list[str] = []
    if report.udp.outbound is False:
        causes.append("udp-blocked")
    if report.tcp.outbound is False:
        causes.append("tcp-blocked")
    blocked = sorted({*report.udp.blocked_ports, *report.tcp.blocked_ports})
    node_port_numbers = {p.port for p in ports}
    port_results = [p for p in report.ports if p.reachable is not None]
    # check/2: the verdict follows the ports where the node listens; ports with nothing listening are listed
    # (reason nothing-listening, with path_open) but do not decide it while another port has a listener.
    listened = [p for p in port_results if p.reason != "nothing-listening"]
    if listened:
        port_results = listened
    # Blame the network (NAT, firewall) only where its path was closed or could not be told open.
    network_blocked = any(p.reachable is False and p.path_open is not True for p in port_results)
    if port_results:
        verdict: Verdict = "reachable" if all(p.reachable for p in port_results) else "unreachable"
    else:
        verdict = _infer_verdict(report, udp_ok, tcp_ok)
    if blocked and (verdict == "unreachable" or node_port_numbers & set(blocked)):
        causes.append("port-filtered")
    if verdict == "unreachable" and (network_blocked or not port_results):
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
        if any(p.reachable is False for p in report.ports):
            causes.append("port-unreachable")
    if verdict == "unreachable" and any(p.reachable is False and p.reason in NOT_LISTENING for p in report.ports):
        causes.append("nothing-listening")
    # Untested: no dial-back answered for any port (a port known to have no listener is still untested).
    if not dialback and not any(p.listener is not None for p in port_results):
        causes.append("untested")
    advice = _advice(report, verdict, causes, ports, blocked)
    return Decision(verdict, causes, advice)


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


def _advice(report: Report, verdict: Verdict, causes: list[str], ports: list[PortSpec],
            blocked: list[int]) -> list[Advice]:
    nat = report.nat
    node_ip = report.local.address or "NODE-IP"
    out: list[Advice] = []
    fwd_ports = ports or [PortSpec(30303, "tcp"), PortSpec(30303, "udp")]
    ports_note = "" if ports else " (replace 30303 with your node's ports; run check with --port to test them)"

    # (1) get rid of the NAT or filter: the provider.
    if "udp-blocked" in causes or "port-filtered" in causes:
        blocked_specs = [PortSpec(p, proto) for p in blocked for proto in TRANSPORTS
                         if p in (report.udp.blocked_ports if proto == "udp" else report.tcp.blocked_ports)]
        msg = provider_message_filter(blocked_specs, "udp-blocked" in causes)
        what = "outbound UDP" if "udp-blocked" in causes else \
            "traffic on port(s) " + ", ".join(str(p) for p in blocked)
        out.append(Advice(code="ask-provider-lift-filter", title="Ask your provider to lift the filter",
                          detail=f"Your network drops {what}. Only whoever runs the filter can lift it; send "
                                 "them the message below.", commands={"message": msg}))
        if "port-filtered" in causes:
            alt = next(p for p in range(30304, 65535) if p not in blocked)
            out.append(Advice(code="use-other-port", title="Or move the node to a port that is not filtered",
                              detail=f"The filter targets well-known P2P ports ({', '.join(map(str, blocked))}). "
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
                          commands={"message": provider_message_cgnat(report.public.ipv4, wan, ports, hop)}))
    elif "double-nat" in causes:
        out.append(Advice(code="remove-double-nat", title="Remove one NAT layer",
                          detail="Two routers translate addresses in a row. Put the provider's modem/router into "
                                 "bridge mode (or your own router into access-point mode), or ask the provider "
                                 "for a public address on your router.",
                          commands={"message": provider_message_double_nat(report.public.ipv4, ports)}))

    # (2) the operator's own device.
    own_nat = nat.present is True and not nat.cgnat
    if verdict == "unreachable" and own_nat and ("nat" in causes or "double-nat" in causes):
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
    if verdict == "unreachable" and "firewall" in causes:
        out.append(Advice(code="open-firewall", title="Allow the node's ports through the firewall",
                          detail=f"No NAT is in the way, but a stateful firewall drops unsolicited inbound "
                                 f"traffic{ports_note}. Add accept rules on the node or on your router; if the "
                                 "firewall is your provider's, ask them to lift it.",
                          commands=firewall_accept_rules(fwd_ports)))

    # (3) automatic mapping, last resort: only where the gateway is the only NAT.
    if verdict == "unreachable" and own_nat and "nat" in causes:
        pm = report.portmap
        states = [pm.pcp.available, pm.natpmp.available, pm.upnp.available]
        if any(s is not False for s in states):
            have = [n for n, s in (("PCP", pm.pcp.available), ("NAT-PMP", pm.natpmp.available),
                                   ("UPnP", pm.upnp.available)) if s]
            which = f"your router speaks {', '.join(have)}" if have else "if your router supports PCP/NAT-PMP/UPnP"
            args = " ".join(str(p) for p in fwd_ports)
            out.append(Advice(code="nodereach-open", title="Last resort: let nodereach map the ports automatically",
                              detail=f"`nodereach open` asks the router to forward the ports ({which}) and keeps "
                                     "the mapping alive. Security warning: automatic port mapping lets any program "
                                     "on your network open holes in your router; prefer a manual forward and "
                                     "turn UPnP off when you do not need it.",
                              commands={"shell": f"nodereach open {args}"}))

    # IPv6 where it works.
    if report.public.ipv6 and (report.udp.ipv6 or report.tcp.ipv6) and verdict == "unreachable":
        out.append(Advice(code="use-ipv6", title="Use IPv6: your node has a public IPv6 address",
                          detail=f"Peers with IPv6 can reach {report.public.ipv6} directly if the router's IPv6 "
                                 "firewall allows the node's ports. Enable IPv6 in the node's configuration.",
                          commands=firewall_accept_rules(fwd_ports)))
    if "cgnat" in causes:
        out.append(Advice(code="nothing-local", title="Nothing on your side can fix this over IPv4",
                          detail="Port forwarding, DMZ, UPnP, NAT-PMP or PCP on your router cannot help: the "
                                 "blocking NAT is the provider's. Without the provider's cooperation the node can "
                                 "only make outbound connections over IPv4 (or reach peers through a relay/VPN "
                                 "with a public address)."))
    if verdict == "unreachable" and "nothing-listening" in causes:
        empty = [p for p in report.ports if p.reachable is False and p.reason in NOT_LISTENING]
        opened = [f"{p.port}/{p.protocol}" for p in empty if p.path_open]
        path = (f" The network path is open: nodereach's test traffic to {', '.join(opened)} reached this machine "
                "from outside." if opened else "")
        out.append(Advice(code="start-node", title="Make the node listen on its port",
                          detail="No program of the node takes the traffic on " +
                                 ", ".join(f"{p.port}/{p.protocol} ({p.reason})" for p in empty) +
                                 ": start the node, and make it listen on all addresses (0.0.0.0 and ::), not "
                                 "only 127.0.0.1 or one interface; a node in a container needs its ports "
                                 f"published.{path}"))
    if "untested" in causes:
        out.append(Advice(code="get-nodereach-server", title="Test inbound reachability with a nodereach server",
                          detail="Public STUN servers cannot test whether peers reach your ports, nor the NAT's "
                                 "filtering. Run `nodereach check --server HOST` against your network's nodereach "
                                 "server, or run `nodereach serve --address A --alt-address B` on a host with two "
                                 "public addresses."))
    return out
