"""`nodereach check --node KIND` proves the port in the node's own protocol (issue 10, item 4), end to end in
the lab with real node software behind the lab's NAT and `nodereach serve` on the lab internet: monerod (Levin
ping), transmission-daemon (BitTorrent handshake for a torrent read from its RPC), js-libp2p (multistream-select)
and EthereumJS devp2p's discv4 (PONG) on a UDP port that is `udp-unobservable` without the proof.

The fixtures are tests/node_fixtures.py and tests/js_fixtures.py; the decisions themselves are table-tested
without root in tests/test_check_proofs.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from nodereach.lab import Lab
from nodereach.lab import addresses as A
from test_check_lab import BIN, ensure_serve

pytestmark = pytest.mark.lab


def check(net: Lab, *args: str) -> tuple[int, dict[str, Any]]:
    r = net.exec("client", [BIN, "check", "--json", "--server", A.SERVER_IP, *args], check=False, timeout=60)
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, json.loads(r.stdout)


def only_port(doc: dict[str, Any]) -> dict[str, Any]:
    assert len(doc["ports"]) == 1, doc["ports"]
    port: dict[str, Any] = doc["ports"][0]
    return port


def test_monerod_answers_the_levin_ping_once_forwarded(lab, node_daemons):
    net = lab("port-restricted")
    ensure_serve(net)
    node_daemons.monerod(net, "client")
    code, doc = check(net, "--port", "18080/tcp", "--node", "monero")
    port = only_port(doc)
    # Not forwarded: the proof gets no connection after the path test's tries (reach.proofs.prove_tcp), which
    # answers the path as well: no second request.
    assert (port["reachable"], port["path_open"], port["listener"]) == (False, False, "node")
    assert port["reason"] == "timeout"
    assert port["protocol_check"]["ok"] is False and "no TCP connection" in port["protocol_check"]["detail"]
    assert code == 1 and "nat" in doc["causes"]

    net.forward(18080, "tcp")
    code, doc = check(net, "--port", "18080/tcp", "--node", "monero")
    port = only_port(doc)
    assert (port["reachable"], port["reason"], port["path_open"]) == (True, "ok", True)
    proof = port["protocol_check"]
    assert proof["protocol"] == "monero" and proof["ok"] is True, proof
    assert "ping OK, peer_id" in proof["detail"] and proof["rtt_ms"] is not None
    assert code == 0 and doc["verdict"] == "reachable"


def test_transmission_handshake_for_the_torrent_its_rpc_names(lab, node_daemons):
    net = lab("port-restricted")
    ensure_serve(net)
    node = node_daemons.transmission(net, "client")
    node.add_seed()  # the check is told nothing of it: the infohash comes from the node's RPC
    net.forward(51413, "tcp")
    code, doc = check(net, "--port", "51413/tcp", "--node", "transmission")
    port = only_port(doc)
    proof = port["protocol_check"]
    assert proof is not None and proof["protocol"] == "bittorrent" and proof["ok"] is True, proof
    assert "-TR" in proof["detail"]  # Transmission's own peer id answered for the infohash read over RPC
    assert (port["reachable"], port["reason"]) == (True, "ok")
    assert code == 0


def test_another_program_on_the_nodes_port_fails_the_proof(lab, node_daemons, js_peer):
    """Transmission runs on 51414 while the operator forwarded its default port 51413, where another program
    (a libp2p node) listens: the path is open, the handshake gets no BitTorrent answer, and the report says
    the port leads to something other than the node."""
    net = lab("port-restricted")
    ensure_serve(net)
    node = node_daemons.transmission(net, "client", peer_port=51414)
    node.add_seed()
    js_peer(net, "client", "libp2p", port=51413)
    net.forward(51413, "tcp")
    code, doc = check(net, "--port", "51413/tcp", "--node", "transmission")
    port = only_port(doc)
    assert (port["reachable"], port["reason"], port["path_open"]) == (False, "protocol-check-failed", True)
    assert port["protocol_check"]["protocol"] == "bittorrent" and port["protocol_check"]["ok"] is False
    assert code == 1 and doc["causes"] == ["protocol-check-failed"]
    assert doc["advice"][0]["code"] == "check-forward-target"
    assert any(p["code"] == "protocol-check-failed" for p in doc["node"]["problems"])


def test_js_libp2p_multistream_through_check(lab, js_peer):
    """A libp2p node (`--node kubo`: its RPC is not there, the kind is enough for multistream-select)."""
    net = lab("port-restricted")
    ensure_serve(net)
    js_peer(net, "client", "libp2p", port=4001)
    net.forward(4001, "tcp")
    code, doc = check(net, "--port", "4001/tcp", "--node", "kubo")
    port = only_port(doc)
    assert port["protocol_check"] is not None and port["protocol_check"]["protocol"] == "libp2p"
    assert port["protocol_check"]["ok"] is True, port["protocol_check"]
    assert (port["reachable"], port["reason"]) == (True, "ok")
    assert doc["node"]["rpc_error"]  # kubo's RPC is missing: said, and the proof still ran
    assert code == 0


def test_discv4_makes_the_nodes_udp_port_observable(lab, js_peer):
    """Without the proof a UDP port the node holds is `udp-unobservable`; through `check --node ethereum` the
    node's PONG makes it reachable once forwarded, and its silence unreachable (NAT advice) before."""
    net = lab("port-restricted")
    ensure_serve(net)
    js_peer(net, "client", "discv4", ip=A.CLIENT_IP, port=30303)
    _code, doc = check(net, "--port", "30303/udp", "--node", "none")
    port = only_port(doc)
    assert (port["reachable"], port["reason"], port["protocol_check"]) == (None, "udp-unobservable", None)

    code, doc = check(net, "--port", "30303/udp", "--node", "ethereum")
    port = only_port(doc)
    assert port["protocol_check"] is not None and port["protocol_check"]["protocol"] == "discv4"
    assert (port["reachable"], port["reason"], port["path_open"]) == (False, "timeout", False)
    assert code == 1 and "nat" in doc["causes"]

    net.forward(30303, "udp")
    code, doc = check(net, "--port", "30303/udp", "--node", "ethereum")
    port = only_port(doc)
    assert port["protocol_check"]["ok"] is True and "PONG" in port["protocol_check"]["detail"], port
    assert (port["reachable"], port["reason"], port["path_open"]) == (True, "ok", True)
    assert code == 0 and doc["verdict"] == "reachable"
