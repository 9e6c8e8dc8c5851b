"""The node block and the check/2 port semantics (pure), and the node stage against real monerod in a lab."""

from __future__ import annotations

import asyncio

import pytest

from nodereach.net import PortSpec
from nodereach.node.adapters.base import NodeStatus, PortMapping
from nodereach.node.listeners import Listener, PortListening, assess
from nodereach.node.reader import NodeReading, NodeSpec
from nodereach.node.report import double_mapping, node_report, port_outcome
from nodereach.node.view import NodeChoice, NodeObservation, observe, scan_host
from nodereach.p2p.advertised import Advertised

T = PortSpec(18080, "tcp")
ARRIVAL = {4: "192.168.1.10"}


def pl(*listeners: Listener, spec: PortSpec = T) -> PortListening:
    return assess([spec], [4], ARRIVAL, list(listeners))[0]


ANY = Listener("tcp", "0.0.0.0", 18080, 4, True, pid=7, process="monerod")
LOOP = Listener("tcp", "127.0.0.1", 18080, 4, True, pid=7, process="monerod")


@pytest.mark.parametrize(("reachable", "reason", "listener", "listening", "expected"), [
    (True, "ok", "node", pl(ANY), (True, True, "ok")),
    (False, "no-mapping-or-filtered", "node", pl(ANY), (False, False, "no-mapping-or-filtered")),
    # nodereach listened itself: the path is open, but nothing of the node's takes the traffic
    (True, "ok", "nodereach", pl(), (False, True, "nothing-listening")),
    (False, "no-mapping-or-filtered", "nodereach", pl(), (False, False, "nothing-listening")),
    (None, "timeout", "nodereach", pl(), (False, None, "nothing-listening")),
    # the node listens on loopback only: the host answered with RST, so the path itself is open
    (False, "refused", "node", pl(LOOP), (False, True, "loopback-only")),
    (None, "no-server", None, pl(ANY), (None, None, "no-server")),
    (True, "ok", "node", None, (True, True, "ok")),
])
def test_port_outcome(reachable, reason, listener, listening, expected):
    got = port_outcome(reachable, reason, listener, listening)
    assert (got.reachable, got.path_open, got.reason) == expected


def status(**kw) -> NodeStatus:
    base = dict(kind="monero", software="monerod", version="0.18.0.0", inbound=0, outbound=3)
    base.update(kw)
    return NodeStatus(**base)  # type: ignore[arg-type]


def obs_with(st: NodeStatus | None, listeners=(ANY,), error: str | None = None) -> NodeObservation:
    reading = NodeReading(st.kind if st else "monero", "http://127.0.0.1:18081", "test", st, error)  # type: ignore[arg-type]
    return NodeObservation((T,), tuple(listeners), reading=reading)


def test_node_block_fields_and_no_inbound_peers():
    rep, assessed = node_report(obs_with(status()), families=[4], arrival=ARRIVAL, public={4: "198.51.100.2"},
                                path_open={T: True})
    assert (rep.software, rep.version, rep.peers.inbound, rep.peers.outbound) == ("monerod", "0.18.0.0", 0, 3)
    assert [(x.port, x.protocol, x.address, x.family, x.process) for x in rep.listening] == [
        (18080, "tcp", "0.0.0.0", 4, "monerod (pid 7)")]
    assert [p.code for p in rep.problems] == ["no-inbound-peers"]
    assert "just started" in rep.problems[0].detail
    assert assessed[0].listening


def test_node_block_listener_advertised_and_mapping_problems():
    st = status(kind="ethereum", software="geth", inbound=2,
                advertised=(Advertised("192.168.1.10", 30303, "tcp", "enode", "ip", 4, False, "tcp"),),
                p2p_ports=(PortSpec(30303, "tcp"),), mapping=PortMapping(True, "--nat"))
    spec = PortSpec(30303, "tcp")
    ob = NodeObservation((spec,), (Listener("tcp", "127.0.0.1", 30303, 4, True),),
                         reading=NodeReading("ethereum", "/x/geth.ipc", "test", st))
    rep, _ = node_report(ob, families=[4], arrival=ARRIVAL, public={4: "198.51.100.2"})
    codes = [p.code for p in rep.problems]
    assert codes == ["loopback-only", "advertises-private-address", "node-maps-ports"]
    assert rep.problems[1].settings == ["--nat extip:198.51.100.2"]
    assert rep.maps_ports is not None and rep.maps_ports.enabled is True
    assert [(a.address, a.port, a.protocol, a.source) for a in rep.advertised] == [
        ("192.168.1.10", 30303, "tcp", "enode")]


def test_rpc_failure_is_one_problem_and_the_rest_stays():
    rep, _ = node_report(obs_with(None, error="nothing answers on http://127.0.0.1:18081"), families=[4],
                         arrival=ARRIVAL, public={})
    assert rep.rpc_error and [p.code for p in rep.problems] == ["rpc-unavailable"]
    assert rep.listening and rep.software is None


def test_double_mapping():
    st = status(mapping=PortMapping(True, "port-forwarding-enabled", (PortSpec(51413, "tcp"), PortSpec(51413, "udp"))),
                software="Transmission")
    clash = double_mapping(st, [PortSpec(51413, "tcp"), PortSpec(6881, "tcp")])
    assert clash is not None and clash.ports == (PortSpec(51413, "tcp"),) and clash.setting == "port-forwarding-enabled"
    assert double_mapping(status(mapping=PortMapping(False, "--nat")), [T]) is None
    assert double_mapping(status(mapping=PortMapping(None, "--igd")), [T]) is None  # unknown: not refused
    assert double_mapping(None, [T]) is None


def test_scan_host_is_fast_and_sees_processes():
    host = scan_host()
    assert host.processes and host.elapsed_s < 2.0


def test_node_choice():
    assert NodeChoice.parse(None).auto and NodeChoice.parse("none") == NodeChoice(None, False)
    assert NodeChoice.parse("monero=http://127.0.0.1:18089").spec == NodeSpec("monero", "http://127.0.0.1:18089")


@pytest.mark.lab
def test_node_stage_with_real_monerod(lab, node_daemons):
    net = lab("port-restricted")
    node_daemons.monerod(net, "client")

    async def stage():
        return await observe([T, PortSpec(18080, "udp")], NodeChoice.parse(None), budget_s=2.0)

    ob = net.call_in("client", lambda: asyncio.run(stage()))
    assert ob.error is None
    assert ob.programs == ("monerod",) and [d.spec.kind for d in ob.detected] == ["monero"]
    assert ob.reading is not None and ob.reading.status is not None and ob.reading.status.inbound == 0
    rep, _ = node_report(ob, families=[4], arrival={4: net.addresses("client")[0]},
                         public={4: net.router_wan_address}, endpoints={}, path_open={})
    assert [(x.port, x.protocol, x.address) for x in rep.listening] == [(18080, "tcp", "0.0.0.0")]
    assert rep.listening[0].process and rep.listening[0].process.startswith("monerod (pid")
    assert [p.code for p in rep.problems] == ["nothing-listening"]  # 18080/udp: monerod is TCP only
    assert rep.software == "monerod" and rep.rpc.startswith("http://127.0.0.1:18081 (monerod runs (pid")
    assert ob.elapsed_s < 2.0


def test_human_report_has_the_node_panel():
    from rich.console import Console

    from nodereach.diagnose.model import PortResult, Report
    from nodereach.diagnose.render import render_report

    st = status(kind="ethereum", software="geth", version="1.14.8", inbound=0, outbound=7,
                advertised=(Advertised("192.168.1.10", 30303, "tcp", "enode", "ip", 4, False, "tcp"),),
                mapping=PortMapping(True, "--nat"))
    spec = PortSpec(30303, "tcp")
    ob = NodeObservation((spec,), (Listener("tcp", "0.0.0.0", 30303, 4, True, pid=9, process="geth"),),
                         reading=NodeReading("ethereum", "/root/.ethereum/geth.ipc", "geth runs (pid 9)", st))
    rep = Report(verdict="unreachable", ports=[PortResult(port=30303, protocol="tcp", reachable=False,
                                                          path_open=False, reason="no-mapping-or-filtered")])
    rep.node, _ = node_report(ob, families=[4], arrival=ARRIVAL, public={4: "198.51.100.2"})
    console = Console(width=200, record=True)
    render_report(rep, console)
    text = console.export_text()
    assert "the node" in text and "geth 1.14.8" in text and "in 0   out 7" in text
    assert "0.0.0.0:30303/tcp" in text and "192.168.1.10:30303/tcp (enode)" in text
    assert "advertises-private-address" in text and "--nat extip:198.51.100.2" in text
    assert "network path closed" in text


def test_nodereachs_own_dialback_listener_is_not_the_node():
    """The node stage scans beside the probes: a socket it saw on a port where nodereach listened for the
    dial-back itself is nodereach's own, never reported as the node listening."""
    from check_observations import PORTS, observations, replace
    from nodereach.diagnose.conclude import conclude

    obs = observations("open")
    own = tuple(Listener(p.transport, "0.0.0.0", p.port, 4, True) for p in PORTS)
    rep = conclude(replace(obs, node=NodeObservation(PORTS, own)))
    assert rep.node is not None and rep.node.listening == []
    assert [p.code for p in rep.node.problems] == ["nothing-listening"] * len(PORTS)
    assert all((p.reachable, p.path_open, p.reason) == (False, True, "nothing-listening") for p in rep.ports)
