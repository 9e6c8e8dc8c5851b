"""`conclude(observations) -> Report` without root: for every lab scenario, the observations a run there
produces (tests/check_observations.py), clean and under loss, odd replies and a run that runs out of time,
judged by the same assertions as the lab tests (tests/test_check_lab.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from check_observations import ALT_BOTH, PRIMARY, SERVER, observations, replace, v4, with_v4
from nodereach.diagnose.conclude import conclude
from nodereach.diagnose.model import PortResult, Report
from nodereach.diagnose.observations import (
    FamilyObservations,
    FilteringTests,
    Hairpin,
    LifetimeObservation,
    Observations,
    PathTrace,
    PortPaths,
    PortProbe,
    ServerAnswer,
    TcpTest,
)
from nodereach.diagnose.options import CheckOptions, ResolvedServer, ServerSpec
from nodereach.lab import addresses as A
from nodereach.lab.scenarios import SCENARIOS, GroundTruth, get_scenario
from nodereach.stun.transaction import BindingReply
from test_check_lab import assert_advice_fits, assert_matches_truth


class _Truth:
    """What the lab tests' judge reads from a lab: its ground truth."""

    def __init__(self, truth: GroundTruth) -> None:
        self.truth = truth


def report_doc(obs: Observations) -> dict[str, Any]:
    """The report as `check --json` prints it (the public contract the lab tests read)."""
    doc: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(conclude(obs)))
    return doc


def judge(scenario: str, obs: Observations, **kw: Any) -> dict[str, Any]:
    truth = get_scenario(scenario).truth(home_router=kw.pop("home_router", False))
    doc = report_doc(obs)
    assert_matches_truth(_Truth(truth), doc, **kw)  # type: ignore[arg-type]
    assert_advice_fits(_Truth(truth), doc)  # type: ignore[arg-type]
    return doc


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_scenario_clean(scenario: str) -> None:
    doc = judge(scenario, observations(scenario))
    assert doc["servers"][0]["kind"] == "nodereach"
    assert doc["schema"] == "nodereach.check/2"


@pytest.mark.parametrize("scenario", ["full-cone", "port-restricted", "symmetric", "restricted-cone", "cgnat"])
def test_forwarded_ports(scenario: str) -> None:
    doc = judge(scenario, observations(scenario, forwarded=True, listener="node"), forwarded=True, listening=True)
    assert doc["verdict"] == "reachable" and doc["advice"] == [] and doc["causes"] == []
    assert all(p["path_open"] is True for p in doc["ports"])


@pytest.mark.parametrize("scenario", ["full-cone", "port-restricted"])
def test_forwarded_but_nothing_listening(scenario: str) -> None:
    """check/2: the path is open, nothing takes the traffic: unreachable, and only the node is to blame."""
    doc = report_doc(observations(scenario, forwarded=True))
    assert_matches_truth(_Truth(get_scenario(scenario).truth()), doc, forwarded=True)  # type: ignore[arg-type]
    assert [(p["reachable"], p["path_open"], p["reason"]) for p in doc["ports"]] == \
        [(False, True, "nothing-listening")] * 2
    assert doc["causes"] == ["nothing-listening"] and [a["code"] for a in doc["advice"]] == ["start-node"]


@pytest.mark.parametrize(("scenario", "advice"), [("port-restricted", ["port-forward", "dmz", "nodereach-open",
                                                                       "start-node"]),
                                                  ("cgnat", None)])
def test_home_router(scenario: str, advice: list[str] | None) -> None:
    doc = judge(scenario, observations(scenario, home_router=True), home_router=True)
    assert doc["portmap"]["upnp"]["available"] is True
    if advice is not None:
        assert [a["code"] for a in doc["advice"]] == advice


def test_cgnat_layers_say_whose_nat() -> None:
    doc = report_doc(observations("cgnat"))
    details = doc["nat"]["layer_details"]
    assert [(d["owner"], d["inside_network"]) for d in details] == [("operator", "192.168.0.0/16"),
                                                                     ("provider", "100.64.0.0/10")]
    assert details[1]["router"] == A.CGNAT_ISP_LAN
    assert doc["local"] == {"address": A.CLIENT_IP, "gateway": A.HOME_LAN_GW, "interface": "eth0",
                            "address_is_public": False}


def test_symmetric_nat_moves_the_node_port() -> None:
    doc = report_doc(observations("symmetric"))
    endpoint = doc["ports"][0]["public_endpoint"]
    assert endpoint.startswith(A.ROUTER_WAN_IP + ":") and not endpoint.endswith(":30303")
    assert any("maps the node's UDP port 30303" in n for n in doc["notes"])


# --- loss: one probe's answer missing, the others still decide ---------------------------------------------
def _hole(hops: tuple[str | None, ...], ttl: int) -> tuple[str | None, ...]:
    return tuple(None if i == ttl - 1 else h for i, h in enumerate(hops))


Variant = Callable[[Observations], Observations]


def _udp_hop_lost(ttl: int) -> Variant:
    """A TTL's ICMP answer lost for UDP (three tries), the TCP SYN's came back."""
    def vary(obs: Observations) -> Observations:
        path = v4(obs).path
        assert path is not None
        return with_v4(obs, path=replace(path, udp=_hole(path.udp, ttl)))
    return vary


def _hairpin_lost(obs: Observations) -> Observations:
    return with_v4(obs, hairpin=Hairpin(True, False))


def _tcp_test_lost(obs: Observations) -> Observations:
    """STUN over TCP ran out of time (lost SYNs); the TCP port paths answered."""
    return with_v4(obs, tcp=TcpTest(None, "timeout"))


def _retransmitted(obs: Observations) -> Observations:
    """Every STUN answer came only after a retransmission."""
    fam = v4(obs)
    binding = tuple(replace(a, reply=replace(a.reply, attempts=2)) if a.reply else a for a in fam.binding)
    return with_v4(obs, binding=binding)


VARIANTS = {"udp-hop1-lost": _udp_hop_lost(1), "udp-hop2-lost": _udp_hop_lost(2), "hairpin-lost": _hairpin_lost,
            "tcp-test-lost": _tcp_test_lost, "retransmitted": _retransmitted}
LOSS_CASES = [(scenario, name) for scenario in ("port-restricted", "cgnat", "double-nat", "symmetric", "udp-blocked")
              for name in VARIANTS
              # udp-blocked without STUN over TCP: see test_udp_blocked_and_stun_over_tcp_lost
              if (scenario, name) != ("udp-blocked", "tcp-test-lost")]


@pytest.mark.parametrize(("scenario", "variant"), LOSS_CASES)
def test_loss_that_does_not_change_the_answer(scenario: str, variant: str) -> None:
    judge(scenario, VARIANTS[variant](observations(scenario)))


def test_udp_blocked_and_stun_over_tcp_lost() -> None:
    """No STUN answer at all, TCP to other ports works: a server that is no STUN server looks the same, so
    outbound UDP is unknown (not "blocked"), and the report says why."""
    doc = report_doc(_tcp_test_lost(observations("udp-blocked")))
    assert doc["udp"]["outbound"] is None and "neither STUN over UDP nor over TCP" in doc["udp"]["reason"]
    assert doc["tcp"]["outbound"] is True and doc["nat"]["mapping"] == "unknown"


def test_udp_filter_before_the_provider_hides_the_path_but_tcp_sees_it() -> None:
    """UDP dropped right after the home router: the UDP trace ends at the first hop, and only the TCP SYNs show
    the provider's CGNAT behind it."""
    obs = observations("cgnat")
    path = v4(obs).path
    assert path is not None
    seen = with_v4(obs, path=PathTrace(udp=path.udp[:1], tcp=path.tcp))
    nat = report_doc(seen)["nat"]
    assert (nat["layers"], nat["cgnat"]) == (2, True)
    blind = report_doc(with_v4(obs, path=PathTrace(udp=path.udp[:1])))["nat"]
    assert blind["cgnat"] is None and "cgnat" in blind["unknown_reasons"]  # UDP alone cannot tell


def test_one_port_unanswered_is_timeout_and_the_other_decides() -> None:
    obs = observations("full-cone", forwarded=True, listener="node")
    fam = v4(obs)
    doc = report_doc(with_v4(obs, ports=(fam.ports[0], PortProbe(fam.ports[1].spec, None))))
    assert [(p["protocol"], p["reachable"], p["reason"]) for p in doc["ports"]] == [("udp", True, "ok"),
                                                                                   ("tcp", None, "timeout")]
    assert doc["verdict"] == "reachable"


def test_unforwarded_negative_is_still_unreachable_when_one_port_timed_out() -> None:
    obs = observations("port-restricted")
    fam = v4(obs)
    doc = report_doc(with_v4(obs, ports=(fam.ports[0], PortProbe(fam.ports[1].spec, None))))
    assert doc["verdict"] == "unreachable" and doc["advice"][0]["code"] == "port-forward"


# --- odd replies -----------------------------------------------------------------------------------------
def test_reply_from_a_foreign_address_is_not_trusted() -> None:
    obs = observations("port-restricted")
    doc = report_doc(with_v4(obs, binding=(ServerAnswer(SERVER, None, foreign_source=("203.0.113.66", 3478)),),
                             mapping=None))
    assert doc["nat"]["mapping"] == "unknown"
    assert "not the server address" in doc["nat"]["unknown_reasons"]["mapping"]
    assert "203.0.113.66" in doc["servers"][0]["reason"]


def test_garbage_from_the_server_is_reported() -> None:
    obs = observations("port-restricted")
    bad = with_v4(obs, binding=(ServerAnswer(SERVER, None, garbage=3),), mapping=None,
                  filtering=FilteringTests(None, None, None), tcp=TcpTest(None, "garbage reply (not STUN)"),
                  hairpin=Hairpin(False, False, "no public endpoint to aim at"))
    doc = report_doc(bad)
    assert doc["servers"][0]["reason"] == "3 garbage replies (not STUN)"
    assert doc["nat"]["mapping"] == "unknown" and doc["nat"]["filtering"] == "unknown"


def test_change_request_refused_leaves_filtering_unknown() -> None:
    obs = observations("port-restricted")
    ft = v4(obs).filtering
    assert ft is not None
    refused = BindingReply(source=PRIMARY, mapped=None, other_address=None, response_origin=None, rtt=0.1,
                           error=(420, "Unknown Attribute"))
    doc = report_doc(with_v4(obs, filtering=replace(ft, change_ip_and_port=refused)))
    assert doc["nat"]["filtering"] == "unknown"
    assert "420" in doc["nat"]["unknown_reasons"]["filtering"]


def test_change_reply_from_the_wrong_address_counts_for_nothing() -> None:
    obs = observations("full-cone")
    ft = v4(obs).filtering
    assert ft is not None and ft.change_ip_and_port is not None
    wrong = replace(ft.change_ip_and_port, source=PRIMARY)  # asked for the alternate address, came from the primary
    doc = report_doc(with_v4(obs, filtering=replace(ft, change_ip_and_port=wrong)))
    assert doc["nat"]["filtering"] == "unknown"
    assert f"expected {ALT_BOTH[0]}:{ALT_BOTH[1]}" in doc["nat"]["unknown_reasons"]["filtering"]


def test_plain_stun_server_only() -> None:
    """No RFC 5780 server and no dial-back: mapping compared between two plain servers, the rest untested."""
    obs = observations("port-restricted")
    fam = v4(obs)
    a = fam.binding[0].reply
    assert a is not None
    plain_a = ResolvedServer(ServerSpec(A.COTURN_IP, http_port=None), (A.COTURN_IP,))
    plain_b = ResolvedServer(ServerSpec(A.SERVER_IP, http_port=None), (A.SERVER_IP,))
    answers = (ServerAnswer(plain_a, replace(a, source=(A.COTURN_IP, 3478), other_address=None)),
               ServerAnswer(plain_b, replace(a, other_address=None)))
    obs = replace(obs, options=replace(obs.options, servers=(plain_a.spec, plain_b.spec)),
                  servers=(plain_a, plain_b))
    tcp = v4(obs).tcp
    assert tcp is not None and tcp.reply is not None
    doc = report_doc(with_v4(obs, servers=(plain_a, plain_b), binding=answers, mapping=None,
                             tcp=TcpTest(replace(tcp.reply, other_address=None), None),
                             port_paths=PortPaths(skipped="outbound port filters: needs a nodereach server (--server)"),
                             ports=()))
    assert doc["nat"]["mapping"] == "endpoint-independent" and doc["nat"]["filtering"] == "unknown"
    assert [s["kind"] for s in doc["servers"]] == ["stun", "stun"]
    assert [(p["reachable"], p["reason"]) for p in doc["ports"]] == [(None, "no-server"), (None, "no-server")]
    assert "untested" in doc["causes"] and doc["advice"][-1]["code"] == "get-nodereach-server"


# --- time running out, missing families, no route -----------------------------------------------------------
def test_run_out_of_time_reports_what_came_back() -> None:
    obs = observations("port-restricted")
    fam = v4(obs)
    late = replace(with_v4(obs, mapping=None, filtering=None, hairpin=None,
                           ports=tuple(PortProbe(p.spec, None) for p in fam.ports)), timed_out=True)
    doc = report_doc(late)
    assert doc["public"]["ipv4"] == A.ROUTER_WAN_IP and doc["udp"]["outbound"] is True
    assert doc["nat"]["filtering"] == "unknown" and doc["nat"]["mapping"] == "unknown"
    assert [(p["reachable"], p["reason"]) for p in doc["ports"]] == [(None, "timeout"), (None, "timeout")]
    assert any("time limit" in n for n in doc["notes"])


def test_no_route() -> None:
    obs = observations("open")
    fam = v4(obs)
    unreachable = FamilyObservations(4, fam.servers, unavailable="no route to the servers (Network is unreachable)",
                                     route_error=True)
    doc = report_doc(replace(obs, families={4: unreachable}))
    assert doc["udp"]["outbound"] is False and doc["verdict"] == "no-connectivity"
    assert any("no route to 203.0.113.10" in n for n in doc["notes"])


def test_no_server_resolves() -> None:
    broken = ResolvedServer(ServerSpec("stun.invalid"), error="name 'stun.invalid' not resolved")
    obs = Observations(options=CheckOptions(servers=(broken.spec,)), servers=(broken,),
                       families={4: FamilyObservations(4, (), unavailable="no usable IPv4 server")})
    doc = report_doc(obs)
    assert doc["verdict"] == "no-connectivity" and doc["servers"][0]["reason"] == broken.error
    assert doc["udp"] == {"outbound": None, "reason": "no usable IPv4 server", "ipv4": None, "ipv6": None,
                          "blocked_ports": []}


def test_ipv6_only_server() -> None:
    six = ResolvedServer(ServerSpec("::1", 3478), ("::1",))
    obs = Observations(options=CheckOptions(servers=(six.spec,)), servers=(six,), families={
        4: FamilyObservations(4, (), unavailable="no usable IPv4 server"),
        6: FamilyObservations(6, (six,), binding=(ServerAnswer(six, None),), tcp=TcpTest(None, "refused"))})
    doc = report_doc(obs)
    assert doc["udp"]["ipv6"] is None and doc["tcp"]["ipv6"] is True and doc["tcp"]["outbound"] is True
    assert any("IPv6 only" in n for n in doc["notes"])


def test_plain_stun_server_over_ipv6() -> None:
    """An IPv6 STUN server without RFC 5780 or dial-back next to the IPv4 nodereach server: IPv6's address and
    translation are measured, its filtering and ports are not (and the report says so)."""
    six = ResolvedServer(ServerSpec("2001:db8::10", http_port=None), ("2001:db8::10",))
    mapped = BindingReply(source=("2001:db8::10", 3478), mapped=("2001:db8::50", 40000), other_address=None,
                          response_origin=None, rtt=0.1)
    obs = observations("port-restricted")
    obs = replace(obs, families={**obs.families, 6: FamilyObservations(
        6, (six,), source="2001:db8::50", local_port=40000, binding=(ServerAnswer(six, mapped),),
        tcp=TcpTest(None, "timeout"))})
    doc = report_doc(obs)
    assert (doc["public"]["ipv6"], doc["udp"]["ipv6"], doc["tcp"]["ipv6"]) == ("2001:db8::50", True, False)
    assert (doc["ipv6"]["translation"], doc["ipv6"]["mapping"], doc["ipv6"]["filtering"]) == \
        ("none", "no-nat", "unknown")
    assert [(p["family"], p["reason"]) for p in doc["ports"] if p["family"] == 6] == [(6, "no-server")] * 2
    assert any("IPv6 filtering: no RFC 5780 server" in u for u in doc["untested"])
    assert doc["servers"][-1] == {"address": "[2001:db8::10]:3478", "kind": "stun", "answered": True, "family": 6,
                                  "rtt_ms": 100.0, "reason": None}


def test_lifetime_and_internal_errors_are_reported() -> None:
    obs = replace(observations("port-restricted"), lifetime=LifetimeObservation(30.0, "binding alive after 30 s"),
                  errors=("internal error in hairpin (RuntimeError: x); its results are unknown",))
    doc = report_doc(obs)
    assert doc["nat"]["binding_lifetime_s"] == 30.0
    assert "binding lifetime: binding alive after 30 s" in doc["notes"]
    assert any("internal error in hairpin" in n for n in doc["notes"])


def test_conclude_is_pure() -> None:
    obs = observations("cgnat")
    first, second = conclude(obs), conclude(obs)
    assert isinstance(first, Report) and first == second and first is not second
    assert observations("cgnat") == obs  # nothing in the observations was changed
    assert isinstance(v4(obs).ports[0].result, PortResult)
