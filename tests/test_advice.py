"""Verdict, causes and advice over situations (table-driven, pure)."""

from __future__ import annotations

import pytest

from nodereach.diagnose.advice import CAUSES, Inputs, decide
from nodereach.diagnose.model import (
    Ipv6,
    Local,
    Nat,
    NatLayer,
    Outbound,
    Portmap,
    PortmapProtocol,
    PortResult,
    Public,
    Report,
)
from nodereach.diagnose.rules import PortSpec

TCP = PortSpec(30303, "tcp")
UDP = PortSpec(30303, "udp")


def report(*, udp: bool | None = True, tcp: bool | None = True, present: bool | None = True, layers: int | None = 1,
           cgnat: bool | None = False, mapping: str = "endpoint-independent",
           filtering: str = "address-and-port-dependent", ports: list[PortResult] | None = None,
           portmap: Portmap | None = None, local: str = "192.168.1.10", gateway: str | None = "192.168.1.1",
           ipv6: str | None = None, blocked: list[int] | None = None) -> Report:
    return Report(
        udp=Outbound(outbound=udp, blocked_ports=blocked or []),
        tcp=Outbound(outbound=tcp, ipv6=True if ipv6 else None),
        public=Public(ipv4="198.51.100.2", ipv6=ipv6), local=Local(address=local, gateway=gateway),
        nat=Nat(present=present, layers=layers, cgnat=cgnat, mapping=mapping, filtering=filtering,  # type: ignore[arg-type]
                layer_details=[NatLayer(index=1, owner="operator"),
                               NatLayer(index=2, owner="provider", router="100.64.0.1")][: layers or 0]),
        ports=ports or [], portmap=portmap or Portmap())


def unreach(proto: str = "tcp", reason: str = "timeout") -> PortResult:
    return PortResult(port=30303, protocol=proto, reachable=False, reason=reason)  # type: ignore[arg-type]


def reach(proto: str = "tcp") -> PortResult:
    return PortResult(port=30303, protocol=proto, reachable=True, reason="ok")  # type: ignore[arg-type]


UPNP = Portmap(upnp=PortmapProtocol(available=True, external_address="198.51.100.2"),
               pcp=PortmapProtocol(available=True), natpmp=PortmapProtocol(available=True))
NO_PORTMAP = Portmap(upnp=PortmapProtocol(available=False), pcp=PortmapProtocol(available=False),
                     natpmp=PortmapProtocol(available=False))

# situation, report, verdict, causes that must be present, advice codes in order (exact)
SITUATIONS = [
    ("open, reachable", report(present=False, layers=0, mapping="no-nat", filtering="endpoint-independent",
                               local="198.51.100.50", ports=[reach()]), "reachable", [], []),
    ("open, not tested", report(present=False, layers=0, mapping="no-nat", filtering="endpoint-independent",
                                local="198.51.100.50"), "reachable", [], []),
    ("open-firewalled", report(present=False, layers=0, mapping="no-nat", local="198.51.100.50",
                               ports=[unreach()]), "unreachable", ["firewall"], ["open-firewall"]),
    ("home nat, upnp", report(ports=[unreach()], portmap=UPNP), "unreachable", ["nat"],
     ["port-forward", "dmz", "nodereach-open"]),
    ("home nat, no portmap", report(ports=[unreach()], portmap=NO_PORTMAP), "unreachable", ["nat"],
     ["port-forward", "dmz"]),
    ("full cone with forward", report(filtering="endpoint-independent", ports=[reach("udp"), reach("tcp")]),
     "reachable", [], []),
    ("symmetric", report(mapping="address-and-port-dependent", ports=[unreach("udp")], portmap=NO_PORTMAP),
     "unreachable", ["nat", "symmetric-nat"], ["port-forward", "dmz"]),
    ("cgnat", report(layers=2, cgnat=True, ports=[unreach()], portmap=UPNP), "unreachable", ["cgnat"],
     ["ask-provider-public-ipv4", "tunnel", "nothing-local"]),
    # IPv6 works, no IPv6 port tested: the firewall is assumed closed (filtering unknown): IPv6 with its rules,
    # then an IPv6 pinhole as the last resort (it works behind CGNAT), and no tunnel.
    ("cgnat with ipv6", report(layers=2, cgnat=True, ports=[unreach()], ipv6="2001:db8::10"), "unreachable",
     ["cgnat", "ipv6-firewall"], ["ask-provider-public-ipv4", "use-ipv6", "nodereach-open", "nothing-local"]),
    ("double nat", report(layers=2, cgnat=False, ports=[unreach()], portmap=UPNP), "unreachable", ["double-nat"],
     ["remove-double-nat", "port-forward", "dmz"]),
    ("udp blocked", report(udp=False, ports=[unreach("udp")], portmap=NO_PORTMAP), "unreachable", ["udp-blocked"],
     ["ask-provider-lift-filter", "port-forward", "dmz"]),
    ("p2p filtered", report(blocked=[30303], ports=[unreach("udp")], portmap=NO_PORTMAP), "unreachable",
     ["port-filtered"], ["ask-provider-lift-filter", "use-other-port", "port-forward", "dmz"]),
    ("nothing listening", report(present=False, layers=0, mapping="no-nat", filtering="endpoint-independent",
                                 local="198.51.100.50", ports=[unreach(reason="refused")]), "unreachable",
     ["nothing-listening"], ["start-node"]),
    ("no connectivity", report(udp=False, tcp=False), "no-connectivity", ["no-connectivity"], ["fix-network"]),
    ("no default route", report(udp=None, tcp=None, gateway=None), "no-connectivity",
     ["no-connectivity", "no-default-route"], ["fix-network"]),
]


@pytest.mark.parametrize(("name", "rep", "verdict", "causes", "codes"), SITUATIONS, ids=[s[0] for s in SITUATIONS])
def test_situations(name: str, rep: Report, verdict: str, causes: list[str], codes: list[str]) -> None:
    decision = decide(rep, Inputs([TCP]))
    assert decision.verdict == verdict
    for cause in causes:
        assert cause in decision.causes
    assert [a.code for a in decision.advice] == codes
    assert all(c in CAUSES for c in decision.causes)
    for a in decision.advice:
        assert a.title and a.detail


def test_cgnat_never_suggests_forwarding_or_upnp() -> None:
    decision = decide(report(layers=2, cgnat=True, ports=[unreach()], portmap=UPNP), Inputs([TCP]))
    text = " ".join(a.code + a.title for a in decision.advice)
    assert "port-forward" not in text and "nodereach-open" not in text and "dmz" not in text
    assert decision.advice[0].code == "ask-provider-public-ipv4"
    msg = decision.advice[0].commands["message"]
    assert "30303/tcp" in msg and "198.51.100.2" in msg and "100.64.0.1" in msg


def test_port_forward_rules_filled_in() -> None:
    decision = decide(report(ports=[unreach()], portmap=UPNP), Inputs([TCP, UDP]))
    fwd = next(a for a in decision.advice if a.code == "port-forward")
    assert set(fwd.commands) >= {"nftables", "iptables", "openwrt", "routeros"}
    for snippet in fwd.commands.values():
        assert "192.168.1.10" in snippet and "30303" in snippet
    assert "udp dport 30303 dnat to 192.168.1.10:30303" in fwd.commands["nftables"]
    assert "to-addresses=192.168.1.10" in fwd.commands["routeros"]
    assert "security" in next(a for a in decision.advice if a.code == "nodereach-open").detail.lower()


def test_untested_without_dialback_says_so() -> None:
    decision = decide(report(), Inputs([], dialback={4: False}))
    assert "untested" in decision.causes
    assert decision.advice[-1].code == "get-nodereach-server"


# --- IPv6 -----------------------------------------------------------------------------------------------
V6 = "2001:db8:1:1::10"


def dual(*, reach6: bool | None = False, listener6: str = "node", path6: bool | None = False,
         translation: str = "none", cgnat: bool = False, reason6: str | None = None) -> Report:
    """A home NAT (or CGNAT) for IPv4 with port 30303/tcp closed, and IPv6 with the same port over it."""
    rep = report(layers=2 if cgnat else 1, cgnat=cgnat, ipv6=V6, ports=[unreach()], portmap=NO_PORTMAP)
    rep.udp.ipv6 = True
    rep.ipv6 = Ipv6(address=V6, translation=translation, filtering="address-and-port-dependent")  # type: ignore[arg-type]
    rep.ports.append(PortResult(port=30303, protocol="tcp", family=6, reachable=reach6, path_open=path6,
                                listener=listener6, reason=reason6 or ("ok" if reach6 else "timeout")))  # type: ignore[arg-type]
    return rep


def test_ipv6_advice_names_the_softwares_own_settings() -> None:
    decision = decide(dual(), Inputs([TCP], software="monerod"))
    use = next(a for a in decision.advice if a.code == "use-ipv6")
    assert "--p2p-external-port 30303" in use.commands["node"]  # what settings_for says for monerod
    assert f"ip6tables -I FORWARD -i wan -d {V6} -p tcp --dport 30303 -j ACCEPT" in use.commands["ip6tables"]
    assert "Port Sharing" in use.commands["home-router"] and V6 in use.commands["home-router"]
    geth = next(a for a in decide(dual(), Inputs([TCP], software="geth")).advice if a.code == "use-ipv6")
    assert f"--nat extip:{V6}" in geth.commands["node"]


def test_ipv6_listen_settings_when_the_node_has_ipv4_only() -> None:
    rep = dual(reach6=False, listener6="nodereach", path6=True, reason6="ipv4-only")
    decision = decide(rep, Inputs([TCP], node_families=frozenset({4}), software="monerod"))
    assert decision.verdict == "unreachable" and decision.reachability.ipv6 == "unreachable"
    assert "ipv6-firewall" not in decision.causes  # IPv6 does not count: the node does not listen there
    use = next(a for a in decision.advice if a.code == "use-ipv6")
    assert "--p2p-use-ipv6" in use.commands["node"] and "--p2p-bind-ipv6-address ::" in use.commands["node"]
    assert "ip6tables" not in use.commands  # the path is open


def test_ipv6_reachable_with_ipv4_closed_is_partly_reachable() -> None:
    decision = decide(dual(reach6=True, path6=True), Inputs([TCP]))
    assert decision.verdict == "partly-reachable"
    assert (decision.reachability.ipv4, decision.reachability.ipv6) == ("unreachable", "reachable")
    assert [a.code for a in decision.advice][:2] == ["use-ipv6", "port-forward"]
    assert decision.advice[0].title == "IPv6 peers reach the node now"


def test_nat66_gets_a_forward_not_a_firewall_rule() -> None:
    decision = decide(dual(translation="nat66"), Inputs([TCP]))
    assert "ipv6-nat66" in decision.causes and "ipv6-firewall" not in decision.causes
    use = next(a for a in decision.advice if a.code == "use-ipv6")
    assert "NAT66" in use.detail and "ip6tables" not in use.commands
    assert "nodereach-open" not in [a.code for a in decision.advice]  # no pinhole through a translator


@pytest.mark.parametrize(("software", "says"), [("Bitcoin Core", "listenonion=1"), ("monerod", "no chain sync"),
                                                ("geth", None)])
def test_tunnel_behind_cgnat_without_ipv6(software: str, says: str | None) -> None:
    rep = report(layers=2, cgnat=True, ports=[unreach()], portmap=UPNP)
    decision = decide(rep, Inputs([TCP], software=software))
    tunnel = next(a for a in decision.advice if a.code == "tunnel")
    assert tunnel.commands["shell"] == "nodereach tunnel-config --public-host PUBLIC_HOST --port 30303/tcp"
    assert [a.code for a in decision.advice].index("tunnel") == 1
    if says:
        assert says in tunnel.detail
    else:
        assert "Tor" not in tunnel.detail
