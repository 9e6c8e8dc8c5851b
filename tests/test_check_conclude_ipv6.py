"""`conclude()` over IPv6, without root: every IPv6 lab scenario from its ground truth (tests/check_observations.py
models the lab's translation and the router's firewall), with pinholes, with nodes that listen on one family
or both, and the odd cases: NAT66, a server on the same site, no IPv6 connectivity, one server address, a run
that ran out of time. The judge is the lab tests' (tests/test_check_lab.py)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from check_observations import NO_IPV6, SERVER6, observations, replace, v6, with_v6
from nodereach.diagnose.classify import TranslationObservation, classify_translation, prefix_translated
from nodereach.diagnose.model import EXIT_CODES
from nodereach.diagnose.observations import FilteringTests, PortProbe, ServerAnswer, TcpTest
from nodereach.lab import addresses as A
from nodereach.lab.scenarios import get_scenario
from test_check_conclude import _Truth, report_doc
from test_check_lab import assert_advice_fits, assert_matches_truth

IPV6_SCENARIOS = ["cgnat-ipv6", "ipv6-firewalled", "ipv6-open", "nptv6"]


def judge(scenario: str, doc: dict[str, Any], **kw: Any) -> None:
    truth = _Truth(get_scenario(scenario).truth())
    assert_matches_truth(truth, doc, **kw)  # type: ignore[arg-type]
    assert_advice_fits(truth, doc, pinholes=kw.get("pinholes", False))  # type: ignore[arg-type]


def codes(doc: dict[str, Any]) -> list[str]:
    return [a["code"] for a in doc["advice"]]


def advice(doc: dict[str, Any], code: str) -> dict[str, Any]:
    return next(a for a in doc["advice"] if a["code"] == code)


@pytest.mark.parametrize("scenario", IPV6_SCENARIOS)
def test_every_ipv6_scenario(scenario: str) -> None:
    doc = report_doc(observations(scenario))
    judge(scenario, doc)
    six = get_scenario(scenario).truth().ipv6
    assert six is not None
    assert [(p["family"], p["protocol"]) for p in doc["ports"]] == [(4, "udp"), (4, "tcp"), (6, "udp"), (6, "tcp")]
    assert [s["family"] for s in doc["servers"]] == [4, 6]
    assert doc["servers"][1]["kind"] == "nodereach" and doc["servers"][1]["address"] == f"[{A.SERVER_IP6}]:3478"
    udp6 = next(p for p in doc["ports"] if p["family"] == 6 and p["protocol"] == "udp")
    assert udp6["public_endpoint"] == f"[{six.public_address}]:30303"


@pytest.mark.parametrize("scenario", ["ipv6-firewalled", "cgnat-ipv6"])
def test_firewall_closed_ipv6_gets_rules_and_a_pinhole_last(scenario: str) -> None:
    doc = report_doc(observations(scenario))
    assert "ipv6-firewall" in doc["causes"] and doc["verdict"] == "unreachable"
    use = advice(doc, "use-ipv6")
    for target in ("ip6tables", "openwrt", "routeros", "home-router"):
        assert A.CLIENT_IP6 in use["commands"][target] and "30303" in use["commands"][target]
    assert "family='ipv6'" in use["commands"]["openwrt"] and "/ipv6 firewall filter" in use["commands"]["routeros"]
    assert "listen on IPv6 too" in use["detail"] and f"advertise its IPv6 address {A.CLIENT_IP6}" in use["detail"]
    opener = advice(doc, "nodereach-open")
    order = codes(doc)
    assert order.index("nodereach-open") > order.index("use-ipv6")
    if scenario == "cgnat-ipv6":
        # IPv4 mapping cannot help behind CGNAT, an IPv6 pinhole can; the provider's address first, no tunnel.
        assert order[:2] == ["ask-provider-public-ipv4", "use-ipv6"] and "tunnel" not in order
        assert opener["commands"]["shell"] == "nodereach open --family 6 30303/udp 30303/tcp"
    else:
        assert order[:4] == ["use-ipv6", "port-forward", "dmz", "nodereach-open"]
        assert opener["commands"]["shell"] == "nodereach open 30303/udp 30303/tcp"  # IPv4 mapping + IPv6 pinhole


@pytest.mark.parametrize("scenario", ["ipv6-firewalled", "cgnat-ipv6"])
def test_pinholes_and_a_listening_node_make_it_partly_reachable(scenario: str) -> None:
    doc = report_doc(observations(scenario, pinholes=True, listener="node"))
    judge(scenario, doc, listening=True, pinholes=True)
    assert doc["reachability"] == {"ipv4": "unreachable", "ipv6": "reachable"}
    assert doc["verdict"] == "partly-reachable" and EXIT_CODES["partly-reachable"] == 4
    assert "ipv6-firewall" not in doc["causes"]
    use = advice(doc, "use-ipv6")
    assert use["title"] == "IPv6 peers reach the node now" and f"[{A.CLIENT_IP6}]:30303/tcp" in use["detail"]
    assert "nodereach-open" not in codes(doc) or "--family 4" in advice(doc, "nodereach-open")["commands"]["shell"]


def test_ipv6_open_with_the_node_on_both_families_and_a_forward() -> None:
    doc = report_doc(observations("ipv6-open", forwarded=True, listener="node"))
    judge("ipv6-open", doc, forwarded=True, listening=True)
    assert doc["verdict"] == "reachable" and doc["advice"] == [] and doc["causes"] == []


def test_node_on_ipv4_only_is_judged_on_ipv4_and_told_to_listen_on_ipv6() -> None:
    """Not a permanent half verdict: the node has IPv4 only, so IPv4 decides; IPv6 works, so listen there too."""
    doc = report_doc(observations("ipv6-open", forwarded=True, listener="node", listener6="nodereach"))
    assert doc["reachability"] == {"ipv4": "reachable", "ipv6": "unreachable"}
    assert doc["verdict"] == "reachable" and doc["causes"] == []
    assert codes(doc) == ["use-ipv6"]
    use = advice(doc, "use-ipv6")
    assert "listen on IPv6 too" in use["detail"] and "over IPv6 (nothing-listening)" in use["detail"]
    assert "ip6tables" not in use["commands"]  # the path is open: no firewall rule needed
    six = [p for p in doc["ports"] if p["family"] == 6]
    assert all(p["path_open"] is True and p["reachable"] is False for p in six)


def test_ipv6_open_path_with_nothing_listening_anywhere() -> None:
    doc = report_doc(observations("ipv6-open"))
    judge("ipv6-open", doc)
    assert doc["verdict"] == "unreachable" and "ipv6-firewall" not in doc["causes"]
    order = codes(doc)
    assert order[0] == "use-ipv6" and order[-1] == "start-node"
    assert "over IPv6" in advice(doc, "start-node")["detail"]


def test_nptv6_is_told_apart_and_the_ula_never_public() -> None:
    doc = report_doc(observations("nptv6", listener="node"))
    assert doc["ipv6"]["translation"] == "nptv6" and doc["ipv6"]["address"] == A.NPT_CLIENT_IP6
    assert doc["public"]["ipv6"] == A.CLIENT_IP6 != A.NPT_CLIENT_IP6
    assert doc["reachability"]["ipv6"] == "reachable" and doc["verdict"] == "partly-reachable"
    assert "NPTv6" in advice(doc, "use-ipv6")["detail"] or "IPv6 peers reach" in advice(doc, "use-ipv6")["title"]


def test_nat66_when_ports_or_more_than_the_prefix_change() -> None:
    obs = observations("nptv6")
    fam = v6(obs)
    first = fam.binding[0].reply
    assert first is not None and first.mapped is not None
    moved = with_v6(obs, binding=(ServerAnswer(SERVER6, replace(first, mapped=(first.mapped[0], 51234))),))
    doc = report_doc(moved)
    assert doc["ipv6"]["translation"] == "nat66" and "port changed" in doc["ipv6"]["unknown_reasons"][
        "translation_detail"]
    rewritten = with_v6(obs, binding=(ServerAnswer(SERVER6, replace(first, mapped=("2001:db8:1:1:1::99",
                                                                                     first.mapped[1]))),))
    assert report_doc(rewritten)["ipv6"]["translation"] == "nat66"


def test_translation_table() -> None:
    local = frozenset({"2001:db8:1:1::10", "fe80::10"})
    seen = TranslationObservation
    assert classify_translation(seen("2001:db8:1:1::10", local, 4000, ("2001:db8:1:1::10", 4000))).value == "none"
    assert classify_translation(seen(None, local, 4000, None)).value == "unknown"
    assert classify_translation(seen(None, frozenset(), 4000, ("2001:db8:9::1", 4000))).value == "unknown"
    ula = "fd00:192:168:1::10"
    local = frozenset({ula, "fe80::10"})
    assert classify_translation(seen(ula, local, 4000, ("2001:db8:1:1::10", 4000))).value == "nptv6"
    assert classify_translation(seen(ula, local, 4000, ("2001:db8:1:1::10", 4000),
                                     "address-and-port-dependent")).value == "nat66"
    assert classify_translation(seen(ula, local, 4000, ("2001:db8:1:1::10", 4001))).value == "nat66"
    assert classify_translation(seen(ula, local, 4000, (ula, 4001))).value == "nat66"  # port translation only
    # RFC 6296 §3.5's example: /48 prefixes, checksum-neutral word in the subnet id, interface id kept
    assert prefix_translated("fd01:203:405:1::1234", "2001:db8:1:d550::1234")
    # /64 prefixes: the checksum-neutral word is the interface id's first; the sum decides
    assert prefix_translated("fd01:203:405:1::1234", "2001:db8:1:1:d54f::1234")
    assert not prefix_translated("fd01:203:405:1::1234", "2001:db8:1:1:1::1234")


def test_a_server_on_the_same_site_sees_a_ula_never_public() -> None:
    obs = observations("nptv6")
    fam = v6(obs)
    first = fam.binding[0].reply
    assert first is not None
    ula_seen = replace(first, mapped=(A.NPT_CLIENT_IP6, fam.local_port or 0))
    tcp = fam.tcp
    assert tcp is not None and tcp.reply is not None
    doc = report_doc(with_v6(obs, binding=(ServerAnswer(SERVER6, ula_seen),),
                             tcp=TcpTest(replace(tcp.reply, mapped=(A.NPT_CLIENT_IP6, 45010)), None)))
    assert doc["public"]["ipv6"] is None
    assert "unique-local" in doc["ipv6"]["unknown_reasons"]["public"]
    assert doc["ipv6"]["translation"] == "none"
    assert "use-ipv6" not in codes(doc)  # nothing public to advertise


def test_host_without_ipv6_is_untested_not_unreachable() -> None:
    doc = report_doc(observations("port-restricted"))
    assert doc["reachability"] == {"ipv4": "unreachable", "ipv6": "untested"}
    assert doc["ipv6"]["reason"] == NO_IPV6 and f"IPv6: {NO_IPV6}" in doc["untested"]
    assert all(p["family"] == 4 for p in doc["ports"]) and doc["verdict"] == "unreachable"


def test_no_ipv6_server_named_is_untested() -> None:
    obs = observations("ipv6-open")
    doc = report_doc(replace(obs, families={4: obs.families[4]}))
    assert doc["reachability"]["ipv6"] == "untested" and "no server with an IPv6 address" in doc["ipv6"]["reason"]


def test_ipv6_route_but_no_answer_is_no_connectivity_and_does_not_decide() -> None:
    obs = observations("ipv6-open", forwarded=True, listener="node")
    fam = v6(obs)
    silent = with_v6(obs, binding=(ServerAnswer(SERVER6, None),), mapping=None,
                     filtering=FilteringTests(None, None, None), tcp=TcpTest(None, "timeout"),
                     ports=tuple(PortProbe(p.spec, None) for p in fam.ports))
    doc = report_doc(silent)
    assert doc["reachability"] == {"ipv4": "reachable", "ipv6": "no-connectivity"}
    assert doc["verdict"] == "reachable"
    assert (doc["udp"]["ipv6"], doc["tcp"]["ipv6"]) == (False, False)
    assert doc["ipv6"]["reason"] == "no server answered over IPv6 (UDP or TCP)"


def test_one_server_address_is_weaker_evidence() -> None:
    obs = observations("ipv6-open", forwarded=True, listener="node")
    fam = v6(obs)
    single = tuple(replace(p, result=msgspec.structs.replace(p.result, second_address=False)) if p.result else p
                   for p in fam.ports)
    doc = report_doc(with_v6(obs, ports=single))
    assert doc["verdict"] == "reachable"
    weak = [n for n in doc["notes"] if "one IPv6 address" in n]
    assert len(weak) == 2 and "weaker evidence" in weak[0]
    assert {p["second_address"] for p in doc["ports"] if p["family"] == 6} == {False}


def test_ipv6_run_out_of_time() -> None:
    obs = observations("ipv6-firewalled")
    fam = v6(obs)
    late = replace(with_v6(obs, mapping=None, filtering=None, ports=tuple(PortProbe(p.spec, None) for p in fam.ports)),
                   timed_out=True)
    doc = report_doc(late)
    assert doc["public"]["ipv6"] == A.CLIENT_IP6 and doc["ipv6"]["translation"] == "none"
    assert doc["ipv6"]["filtering"] == "unknown" and doc["ipv6"]["unknown_reasons"]["filtering"]
    assert [(p["reachable"], p["reason"]) for p in doc["ports"] if p["family"] == 6] == [(None, "timeout")] * 2
    # unknown IPv6 ports: the IPv6 firewall is not blamed on a guess from them, IPv4 decides
    assert doc["reachability"]["ipv4"] == "unreachable"


def test_ipv6_change_reply_from_the_wrong_address_counts_for_nothing() -> None:
    obs = observations("ipv6-open")
    ft = v6(obs).filtering
    assert ft is not None and ft.change_ip_and_port is not None
    wrong = replace(ft.change_ip_and_port, source=(A.SERVER_IP6, 3478))
    doc = report_doc(with_v6(obs, filtering=replace(ft, change_ip_and_port=wrong)))
    assert doc["ipv6"]["filtering"] == "unknown"
    assert f"expected [{A.SERVER_ALT_IP6}]:3479" in doc["ipv6"]["unknown_reasons"]["filtering"]


def test_cgnat_without_ipv6_points_to_the_tunnel() -> None:
    doc = report_doc(observations("cgnat"))
    order = codes(doc)
    assert order[:2] == ["ask-provider-public-ipv4", "tunnel"]
    tunnel = advice(doc, "tunnel")
    assert tunnel["commands"]["shell"] == \
        "nodereach tunnel-config --public-host PUBLIC_HOST --port 30303/udp --port 30303/tcp"
    assert "listenonion" in tunnel["detail"] and "no chain sync" in tunnel["detail"]


def test_nodereachs_own_ipv6_listener_does_not_hide_the_nodes_ipv4_one() -> None:
    """The node stage scans beside the probes: over IPv6 nodereach listened itself on `[::]` (IPv6 only), over
    IPv4 the node holds `0.0.0.0`. Only nodereach's socket is left out: the node has IPv4, and its IPv6
    port says why it is not reached there (`ipv4-only`), without a half verdict."""
    from check_observations import PORTS
    from nodereach.node.listeners import Listener
    from nodereach.node.view import NodeObservation

    obs = observations("ipv6-open", forwarded=True, listener="node", listener6="nodereach")
    seen = tuple(Listener(p.transport, "0.0.0.0", p.port, 4, True) for p in PORTS) + \
        tuple(Listener(p.transport, "::", p.port, 6, False) for p in PORTS)  # nodereach's, IPV6_V6ONLY
    doc = report_doc(replace(obs, node=NodeObservation(PORTS, seen)))
    assert [(x["address"], x["family"]) for x in doc["node"]["listening"]] == [("0.0.0.0", 4)] * 2
    assert [(p["family"], p["reason"]) for p in doc["ports"]] == [(4, "ok"), (4, "ok"), (6, "ipv4-only"),
                                                                  (6, "ipv4-only")]
    assert doc["verdict"] == "reachable" and codes(doc) == ["use-ipv6"]
    assert "30303/udp over IPv6 (ipv4-only)" in advice(doc, "use-ipv6")["detail"]
    # `nodereach watch` reads the IPv6 entries as a family the node does not use: no unreachable port there
    from nodereach.diagnose.conclude import conclude
    from nodereach.watch.fullcheck import observe_report

    watched = observe_report(conclude(replace(obs, node=NodeObservation(PORTS, seen))), mono=1.0, wall=2.0)
    assert watched.verdict == "reachable"
    assert {(p.key.family, p.family_unused) for p in watched.ports} == {(4, False), (6, True)}


def test_translation_from_stun_over_tcp_alone_ignores_its_port() -> None:
    """No UDP answer over IPv6 (UDP lost or filtered), STUN over TCP answered from its own ephemeral port: the
    address says `none`; the TCP port is no evidence of a port-translating NAT66."""
    obs = observations("ipv6-open")
    doc = report_doc(with_v6(obs, binding=(ServerAnswer(SERVER6, None),), mapping=None,
                             filtering=FilteringTests(None, None, None)))
    assert doc["ipv6"]["translation"] == "none" and doc["public"]["ipv6"] == A.CLIENT_IP6
    assert doc["ipv6"]["filtering"] == "unknown" and doc["udp"]["ipv6"] is False


def test_watch_reads_families_and_the_partly_reachable_verdict() -> None:
    """`nodereach watch` reduces the report per port and family (nodereach_port_reachable{family}) and keeps
    `partly-reachable` as the verdict (nodereach_reachable 0)."""
    from nodereach.diagnose.conclude import conclude
    from nodereach.watch.fullcheck import observe_report
    from nodereach.watch.model import PortKey

    rep = conclude(observations("ipv6-firewalled", pinholes=True, listener="node"))
    obs = observe_report(rep, mono=1.0, wall=2.0)
    assert obs.verdict == "partly-reachable"
    assert {(p.key, p.reachable) for p in obs.ports} == {
        (PortKey(30303, "udp", 4), False), (PortKey(30303, "tcp", 4), False),
        (PortKey(30303, "udp", 6), True), (PortKey(30303, "tcp", 6), True)}


def _human(doc_obs: Any) -> str:
    from rich.console import Console

    from nodereach.diagnose.conclude import conclude
    from nodereach.diagnose.render import render_report

    console = Console(width=220, record=True)
    render_report(conclude(doc_obs), console)
    return console.export_text()


def test_human_output_of_both_families() -> None:
    text = " ".join(_human(observations("nptv6", listener="node")).split())  # columns aside
    assert "partly-reachable" in text
    assert "per family IPv4 unreachable IPv6 reachable" in text
    assert f"IPv6 {A.NPT_CLIENT_IP6} seen as {A.CLIENT_IP6} NPTv6 (prefix translated), filtering " \
        "endpoint-independent UDP works TCP works" in text
    assert "port 30303/udp IPv6 reachable ok" in text and "port 30303/tcp IPv6 reachable ok" in text
    assert text.index("1. IPv6 peers reach the node now") < text.index("2. Forward the node's ports")
    none = " ".join(_human(observations("port-restricted")).split())
    assert "per family" not in none and f"IPv6 {NO_IPV6}" in none and "IPv6 reachable" not in none


STABLE6 = "2001:db8:1:1::5a"
"""The host's stable address next to the lab's client address, which plays a temporary (RFC 8981) one."""


def with_privacy_address(obs: Any, *, stable: bool = True) -> Any:
    """The same run on a host with privacy addresses on: the kernel's source toward the servers (the lab's
    client address) is temporary, and the interface also holds a stable global address (if `stable`), a
    deprecated one and a unique-local one, as /proc/net/if_inet6 lists them."""
    from nodereach.routes import IFA_F_DEPRECATED, IFA_F_TEMPORARY, Address6

    lines = [Address6(A.CLIENT_IP6, 2, 64, 0, IFA_F_TEMPORARY, "eth0"),
             Address6("2001:db8:1:1::77", 2, 64, 0, IFA_F_DEPRECATED, "eth0"),
             Address6("fd00::10", 2, 64, 0, 0, "eth0"),
             Address6("2001:db8:9::10", 5, 64, 0, 0, "wg0")]  # another interface: never chosen
    if stable:
        lines.insert(2, Address6(STABLE6, 2, 64, 0, 0, "eth0"))
    return replace(obs, local=replace(obs.local, net=replace(obs.local.net, addresses6=tuple(lines))))


@pytest.mark.parametrize("scenario", ["ipv6-firewalled", "cgnat-ipv6"])
def test_a_temporary_source_address_is_never_the_one_peers_are_given(scenario: str) -> None:
    """Privacy addresses (RFC 8981) change about daily: the firewall rules and the address to advertise name
    the host's stable address on the same interface, while what the servers saw stays reported as seen."""
    doc = report_doc(with_privacy_address(observations(scenario)))
    assert doc["verdict"] == "unreachable" and "ipv6-firewall" in doc["causes"]
    assert (doc["ipv6"]["address"], doc["ipv6"]["stable_address"]) == (A.CLIENT_IP6, STABLE6)
    assert doc["public"]["ipv6"] == A.CLIENT_IP6
    use = advice(doc, "use-ipv6")
    for target in ("nftables", "ip6tables", "openwrt", "routeros", "home-router"):
        assert STABLE6 in use["commands"][target] and A.CLIENT_IP6 not in use["commands"][target], target
    assert f"advertise its IPv6 address {STABLE6}" in use["detail"] and A.CLIENT_IP6 not in use["detail"]


def test_without_a_stable_address_the_source_is_all_there_is() -> None:
    doc = report_doc(with_privacy_address(observations("ipv6-firewalled"), stable=False))
    assert doc["ipv6"]["stable_address"] == A.CLIENT_IP6
    assert A.CLIENT_IP6 in advice(doc, "use-ipv6")["commands"]["ip6tables"]


def test_a_node_advertising_its_stable_address_is_not_told_to_advertise_the_temporary_one() -> None:
    """Servers see the temporary source; a node that advertises the stable address does right (before this,
    `advertised-address-mismatch` told it to advertise the temporary one, gone within a day)."""
    from check_observations import PORTS
    from nodereach.node.adapters.base import NodeStatus
    from nodereach.node.listeners import Listener
    from nodereach.node.reader import NodeReading
    from nodereach.node.view import NodeObservation
    from nodereach.p2p.advertised import Advertised

    obs = with_privacy_address(observations("ipv6-open", forwarded=True, listener="node"))
    seen = tuple(Listener(p.transport, "::", p.port, 6, True) for p in PORTS)

    def node_doc(address: str) -> dict[str, Any]:
        status = NodeStatus(kind="ethereum", software="geth", p2p_ports=PORTS, advertised=(
            Advertised(address, 30303, "udp", "enr", "ip", 6, False, "udp"),))
        node = NodeObservation(PORTS, seen, reading=NodeReading("ethereum", "/x/geth.ipc", "test", status))
        return report_doc(replace(obs, node=node))

    assert [p["code"] for p in node_doc(STABLE6)["node"]["problems"]
            if p["code"].startswith("advertis")] == []
    stale = node_doc("2001:db8:1:1::77")  # a deprecated address of the host: a real mismatch
    problem = next(p for p in stale["node"]["problems"] if p["code"] == "advertised-address-mismatch")
    assert STABLE6 in problem["detail"] and A.CLIENT_IP6 not in problem["detail"]


def test_human_output_names_the_stable_address_next_to_a_temporary_one() -> None:
    text = " ".join(_human(with_privacy_address(observations("ipv6-firewalled"))).split())
    assert f"IPv6 {A.CLIENT_IP6} (temporary; stable: {STABLE6}) no translation" in text
    plain = " ".join(_human(observations("ipv6-firewalled")).split())
    assert "temporary" not in plain
