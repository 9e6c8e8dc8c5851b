"""The proof in the node's own protocol inside `check` (issue 10, item 4), without root: which proof each node
kind's port gets (nodereach.node.proofs), what the node's answer does to the port's verdict
(nodereach.diagnose.proof), and the report `conclude()` writes from observations that carry one.
The same path through real node software is tests/test_check_proofs_lab.py."""

from __future__ import annotations

import pytest

from check_observations import observations, replace, v4, with_v4
from nodereach.diagnose.conclude import conclude
from nodereach.diagnose.model import PortResult, ProtocolCheckResult
from nodereach.diagnose.proof import judge
from nodereach.net import PortSpec
from nodereach.node.adapters.base import NodeStatus
from nodereach.node.adapters.bitcoin import proof_ids, signet_magic
from nodereach.node.adapters.transmission import Session, Torrent, Torrents, status_from
from nodereach.node.listeners import Listener
from nodereach.node.proofs import ProofPlan, plan, plan_for
from nodereach.node.reader import NodeReading
from nodereach.node.view import NodeObservation
from nodereach.p2p.advertised import Advertised
from nodereach.reach.client import ProofRequest

TCP = PortSpec(18080, "tcp")
ENR = ("enr:-IS4QHCYrYZbAKWCBRlAy5zzaDZXJBGkcnh4MHcBFZntXNFrdvJjX04jRzjzCBOonrkTfj499SZuOh8R33Ls8RRcy5wBgmlkgnY0gmlw"
       "hH8AAAGJc2VjcDI1NmsxoQPKY0yuDUmstAHYpMa2_oxVtw0RW_QAdpzBQA8yWM0xOIN1ZHCCdl8")
"""EIP-778's example record (the node at 127.0.0.1, UDP 30303)."""


def listening(spec: PortSpec, address: str = "0.0.0.0", process: str = "", pid: int | None = 7) -> Listener:
    return Listener(spec.transport, address, spec.port, 4, True, pid=pid, process=process)


def st(kind: str, **kw: object) -> NodeStatus:
    return NodeStatus(kind=kind, software=kind, **kw)  # type: ignore[arg-type]


def enr_entry(port: int, transport: str = "udp", quic: bool = False) -> Advertised:
    return Advertised("198.51.100.2", port, transport, "enr", "ip", 4, quic, "udp")  # type: ignore[arg-type]


def proof_of(p: ProofPlan, spec: PortSpec) -> ProofRequest | None:
    return p.request_for(spec)


# --- which proof a port gets -------------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "status", "spec", "expected"), [
    ("monero", None, TCP, ProofRequest("monero")),
    ("monero", st("monero"), PortSpec(18080, "udp"), None),
    ("kubo", None, PortSpec(4001, "tcp"), ProofRequest("libp2p")),
    ("kubo", None, PortSpec(4001, "udp"), None),  # QUIC: not spoken
    ("bitcoin", st("bitcoin", peer_ids=("network:regtest",)), PortSpec(8333, "tcp"),
     ProofRequest("bitcoin", network="regtest")),  # the RPC's chain wins over the port
    ("bitcoin", st("bitcoin", peer_ids=("magic:0a0b0c0d",)), PortSpec(8333, "tcp"),
     ProofRequest("bitcoin", magic=bytes.fromhex("0a0b0c0d"))),
    ("bitcoin", None, PortSpec(18444, "tcp"), ProofRequest("bitcoin", network="regtest")),
    ("bitcoin", None, PortSpec(8333, "tcp"), ProofRequest("bitcoin", network="main")),
    ("transmission", st("transmission", peer_ids=(f"infohash:{'ab' * 20}",)), PortSpec(51413, "tcp"),
     ProofRequest("bittorrent", infohash=bytes.fromhex("ab" * 20))),
    ("transmission", st("transmission", peer_ids=(f"infohash:{'ab' * 20}",)), PortSpec(51413, "udp"), None),
    ("beacon", st("beacon", advertised=(enr_entry(9000), enr_entry(9000, "tcp"), enr_entry(9001, quic=True)),
                  peer_ids=("peer:16Uiu2", ENR)), PortSpec(9000, "udp"), ProofRequest("discv5", enr=ENR)),
    ("beacon", st("beacon", advertised=(enr_entry(9000), enr_entry(9001, quic=True)), peer_ids=(ENR,)),
     PortSpec(9001, "udp"), None),  # the QUIC port is no discovery port
    ("beacon", st("beacon", peer_ids=(ENR,)), PortSpec(9000, "tcp"), ProofRequest("libp2p")),
    ("ethereum", st("ethereum", p2p_ports=(PortSpec(30303, "tcp"), PortSpec(30303, "udp")), peer_ids=(ENR,)),
     PortSpec(30303, "udp"), ProofRequest("discv4", enr=ENR)),
    ("ethereum", None, PortSpec(30303, "udp"), ProofRequest("discv4")),  # RPC unread: any PONG proves arrival
    ("ethereum", st("ethereum"), PortSpec(30303, "tcp"), None),  # RLPx: not spoken
    ("lnd", st("lnd"), PortSpec(9735, "tcp"), None),
    ("syncthing", st("syncthing"), PortSpec(22000, "tcp"), None),
])
def test_proof_per_kind_and_port(kind, status, spec, expected):
    got = plan(kind, status, [spec], [listening(spec)])
    assert proof_of(got, spec) == expected
    assert got.notes == ()


def test_ethereum_without_enr_checks_the_pong_against_the_enode_key():
    from nodereach.p2p.crypto import node_id

    pub = bytes.fromhex("ca634cae0d49acb401d8a4c6b6fe8c55b70d115bf400769cc1400f3258cd31387574077f301b421bc84df7266c44"
                        "e9e6d569fc56be00812904767bf5ccd1fc7f")
    spec = PortSpec(30303, "udp")
    got = plan("ethereum", st("ethereum", peer_ids=(f"enode:{pub.hex()}",)), [spec], [listening(spec)])
    assert proof_of(got, spec) == ProofRequest("discv4", node_id=node_id(pub))


@pytest.mark.parametrize(("kind", "status", "spec", "note"), [
    ("bitcoin", None, PortSpec(9999, "tcp"), "the node's chain is unknown"),
    ("transmission", st("transmission"), PortSpec(51413, "tcp"), "it runs no torrent"),
    ("transmission", None, PortSpec(51413, "tcp"), "its RPC was not read"),
    ("beacon", None, PortSpec(9000, "udp"), "the node's ENR is unknown"),
])
def test_a_node_port_without_what_its_proof_needs_gets_a_note(kind, status, spec, note):
    lst = listening(spec, process={"bitcoin": "bitcoind"}.get(kind, ""))
    got = plan(kind, status, [spec], [lst])
    assert got.ports == () and len(got.notes) == 1 and note in got.notes[0] and str(spec) in got.notes[0]


def test_only_the_nodes_ports_that_something_holds_get_a_proof():
    other = PortSpec(8080, "tcp")
    # not the node's port (not its default, not configured, held by another program): nothing is asked
    assert plan("monero", st("monero"), [other], [listening(other, process="nginx")]).ports == ()
    # a configured port of the node, or one its own process holds, is the node's
    assert proof_of(plan("monero", st("monero"), [other], [listening(other, process="monerod")]), other) == \
        ProofRequest("monero")
    assert proof_of(plan("bitcoin", st("bitcoin", p2p_ports=(PortSpec(8080, "tcp"),), peer_ids=("network:main",)),
                         [other], [listening(other)]), other) == ProofRequest("bitcoin", network="main")
    # nothing holds it, or only loopback does: nothing from outside could answer
    assert plan("monero", st("monero"), [TCP], []).ports == ()
    assert plan("monero", st("monero"), [TCP], [listening(TCP, "127.0.0.1")]).ports == ()
    # no node known: no proof
    assert plan(None, None, [TCP], [listening(TCP)]).ports == ()


def test_plan_from_the_node_stage_ignores_the_dialbacks_own_listener():
    obs = NodeObservation((TCP,), (listening(TCP, pid=4242),), reading=NodeReading("monero", "x", "test"))
    assert plan_for(obs).request_for(TCP) == ProofRequest("monero")
    assert plan_for(obs, own_pid=4242).ports == ()
    assert plan_for(None).ports == () and plan_for(NodeObservation((TCP,), ())).ports == ()


def test_bitcoin_chain_to_the_proofs_network():
    # The global signet's magic, as Bitcoin Core publishes it (test/functional/data/util/getchainparams-signet.json).
    from nodereach.node.adapters.bitcoin import DEFAULT_SIGNET_CHALLENGE

    assert signet_magic(DEFAULT_SIGNET_CHALLENGE).hex() == "0a03cf40"
    assert proof_ids("main", None) == ("network:main",)
    assert proof_ids("test", None) == ("network:testnet3",)
    assert proof_ids("testnet4", None) == ("network:testnet4",)
    assert proof_ids("regtest", None) == ("network:regtest",)
    assert proof_ids("signet", DEFAULT_SIGNET_CHALLENGE.hex()) == ("network:signet",)
    custom = "51" + "21" + "02" + "11" * 32 + "51ae"
    assert proof_ids("signet", custom) == (f"magic:{signet_magic(bytes.fromhex(custom)).hex()}",)
    assert proof_ids("signet", "zz") == () and proof_ids("unknown", None) == ()


def test_transmission_offers_running_torrents_first_and_never_a_stopped_one():
    torrents = Torrents([Torrent("a" * 40, status=0), Torrent("b" * 40, status=4), Torrent("c" * 40, status=6),
                         Torrent("d" * 40, status=None), Torrent("short", status=6)])
    got = status_from(Session(peer_port=51413), torrents)
    assert got.peer_ids == (f"infohash:{'c' * 40}", f"infohash:{'b' * 40}", f"infohash:{'d' * 40}")


# --- what the node's answer does to the port ------------------------------------------------------------

def port(protocol: str = "tcp", reachable: bool | None = True, reason: str = "ok", listener: str = "node",
         path_open: bool | None = True) -> PortResult:
    return PortResult(port=18080, protocol=protocol, reachable=reachable, reason=reason, listener=listener,  # type: ignore[arg-type]
                      path_open=path_open)


def answer(ok: bool, reachable: bool | None, reason: str, protocol: str = "tcp", detail: str = "d") -> PortResult:
    check = ProtocolCheckResult(protocol="monero", ok=ok, detail=detail)
    return PortResult(port=18080, protocol=protocol, reachable=reachable, reason=reason, listener="none",  # type: ignore[arg-type]
                      protocol_check=check)


UNOBSERVABLE = port("udp", None, "udp-unobservable", path_open=None)


@pytest.mark.parametrize(("before", "proof", "expected"), [
    (port(), None, (True, True, "ok", False)),
    (port(), answer(True, True, "ok"), (True, True, "ok", True)),
    # open path, but what answered is not the node (another magic, another torrent, another program)
    (port(), answer(False, True, "ok"), (False, True, "protocol-check-failed", True)),
    # the path test decides the path: a proof that could not connect this time changes nothing but says so
    (port(), answer(False, False, "timeout"), (True, True, "ok", True)),
    # a proof that did not run at all: nothing learnt
    (port(), PortResult(port=18080, protocol="tcp", reason="server-busy"), (True, True, "ok", False)),
    (port(), PortResult(port=18080, protocol="tcp", reason="no-time"), (True, True, "ok", False)),
    # nodereach listened itself: whatever a proof met there was not the node
    (port(reachable=False, reason="nothing-listening", listener="nodereach"), answer(True, True, "ok"),
     (False, True, "nothing-listening", False)),
    # UDP: unobservable without the proof; the node's answer, silence and a rejection decide it
    (UNOBSERVABLE, None, (None, None, "udp-unobservable", False)),
    (UNOBSERVABLE, answer(True, True, "ok", "udp"), (True, True, "ok", True)),
    (UNOBSERVABLE, answer(False, False, "timeout", "udp"), (False, False, "timeout", True)),
    (UNOBSERVABLE, answer(False, False, "refused", "udp"), (False, True, "refused", True)),
    (UNOBSERVABLE, answer(False, True, "ok", "udp"), (False, True, "protocol-check-failed", True)),
    # a listener problem the scan found yields to the node's own answer from outside
    (port(reachable=False, reason="wrong-interface"), answer(True, True, "ok"), (True, True, "ok", True)),
])
def test_the_proof_in_the_ports_verdict(before, proof, expected):
    got = judge(before, proof)
    assert (got.reachable, got.path_open, got.reason, got.check is not None) == expected
    if proof is not None and proof.reason in ("server-busy", "no-time"):
        assert got.note is not None and proof.reason in got.note


# --- the report ------------------------------------------------------------------------------------------

def run(proof: PortResult | None, spec: PortSpec = TCP, forwarded: bool = True, status: NodeStatus | None = None):
    """A port-restricted run where the node (monerod) holds `spec`, with the proof's answer as observed."""
    obs = observations("port-restricted", ports=(spec,), forwarded=forwarded, listener="node")
    probes = tuple(replace(p, proof=proof) for p in v4(obs).ports)
    obs = with_v4(obs, ports=probes)
    reading = NodeReading("monero", "http://127.0.0.1:18081", "test", status or st("monero", inbound=1, outbound=2))
    node = NodeObservation((spec,), (listening(spec, process="monerod"),), reading=reading)
    return conclude(replace(obs, node=node))


def test_report_with_the_nodes_answer():
    ok = answer(True, True, "ok", detail="Monero node: ping OK, peer_id a47a8f696fd9d468")
    rep = run(ok)
    p = rep.ports[0]
    assert (p.reachable, p.reason, p.path_open) == (True, "ok", True)
    assert p.protocol_check == ok.protocol_check
    assert rep.verdict == "reachable"


def test_report_when_something_else_answers_on_the_open_port():
    wrong = answer(False, True, "ok", detail="closed without answering")
    rep = run(wrong)
    p = rep.ports[0]
    assert (p.reachable, p.reason, p.path_open) == (False, "protocol-check-failed", True)
    assert rep.verdict == "unreachable"
    # the network is fine: no NAT cause, the node block and the advice say what answered instead
    assert rep.causes == ["protocol-check-failed"]
    assert rep.advice[0].code == "check-forward-target" and "closed without answering" in rep.advice[0].detail
    assert rep.node is not None
    problem = next(q for q in rep.node.problems if q.code == "protocol-check-failed")
    assert "18080/tcp is open from outside" in problem.detail and "closed without answering" in problem.detail


def test_report_udp_port_observed_through_the_discovery_proof():
    spec = PortSpec(30303, "udp")
    pong = PortResult(port=30303, protocol="udp", reachable=True, reason="ok", listener="none",
                      protocol_check=ProtocolCheckResult(protocol="discv4", ok=True, detail="PONG"))
    silent = PortResult(port=30303, protocol="udp", reachable=False, reason="timeout", listener="none",
                        protocol_check=ProtocolCheckResult(protocol="discv4", ok=False, detail="no PONG"))
    base = observations("port-restricted", ports=(spec,), forwarded=True, listener="node")
    unobservable = PortResult(port=30303, protocol="udp", reachable=None, reason="udp-unobservable", listener="node")
    for proof, expected, verdict in ((pong, (True, "ok", True), "reachable"),
                                     (silent, (False, "timeout", False), "unreachable")):
        obs = with_v4(base, ports=tuple(replace(p, result=unobservable, proof=proof)
                                        for p in v4(base).ports))
        node = NodeObservation((spec,), (listening(spec, process="geth"),),
                               reading=NodeReading("ethereum", "x", "test", st("ethereum")))
        rep = conclude(replace(obs, node=node))
        p = rep.ports[0]
        assert (p.reachable, p.reason, p.path_open) == expected and p.protocol_check == proof.protocol_check
        assert rep.verdict == verdict
        if verdict == "unreachable":
            assert "nat" in rep.causes and any(a.code == "port-forward" for a in rep.advice)


def test_report_notes_why_a_node_port_got_no_proof():
    spec = PortSpec(51413, "tcp")
    obs = observations("port-restricted", ports=(spec,), forwarded=True, listener="node")
    node = NodeObservation((spec,), (listening(spec, process="transmission-da"),),
                           reading=NodeReading("transmission", "x", "test", st("transmission", inbound=0)))
    rep = conclude(replace(obs, node=node))
    assert rep.ports[0].protocol_check is None and rep.ports[0].reachable is True
    assert rep.node is not None and any("no BitTorrent proof" in n for n in rep.node.notes)


def test_human_report_shows_the_proof():
    from rich.console import Console

    from nodereach.diagnose.render import render_report

    rep = run(answer(False, True, "ok", detail="the peer speaks another network's messages (magic main)"))
    console = Console(width=240, record=True)
    render_report(rep, console)
    text = console.export_text()
    assert "protocol-check-failed" in text and "✗ no answer as the node" in text
    assert "another network's messages (magic main)" in text
    rep = run(answer(True, True, "ok", detail="Monero node: ping OK"))
    console = Console(width=240, record=True)
    render_report(rep, console)
    assert "✓ the node answered" in console.export_text()
