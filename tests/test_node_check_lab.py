"""`nodereach check` knows the node (issue 10), end to end in the lab with real monerod: the ports picked from
the program listening, the node block read over its RPC, check/2 port semantics, and listener problems."""

from __future__ import annotations

import json
import re
import time
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


def test_no_port_given_finds_monerod_and_reads_it(lab, node_daemons):
    net = lab("port-restricted")
    ensure_serve(net)
    node = node_daemons.monerod(net, "client")
    net.forward(18080, "tcp")
    code, doc = check(net)  # no --port: the node's port comes from the program listening
    assert [(p["port"], p["protocol"]) for p in doc["ports"]] == [(18080, "tcp")]
    port = doc["ports"][0]
    assert (port["reachable"], port["path_open"], port["listener"]) == (True, True, "node")
    block = doc["node"]
    assert block["software"] == "monerod" and block["version"].startswith("0.18")
    assert "monerod (pid" in block["ports_picked"] and "listens on 18080/tcp" in block["ports_picked"]
    assert block["rpc"].startswith("http://127.0.0.1:18081 (monerod runs (pid")
    assert [(x["port"], x["address"]) for x in block["listening"]] == [(18080, "0.0.0.0")]
    assert block["listening"][0]["process"].startswith("monerod (pid")
    assert block["peers"]["inbound"] == 0
    # The path is open and nobody came in yet: said, with the likely reasons.
    assert [p["code"] for p in block["problems"]] == ["no-inbound-peers"]
    assert code == 0 and doc["verdict"] == "reachable"
    # A peer on the lab internet connects in: the next check reads it from the node.
    node_daemons.monerod(net, "peer", p2p_address=A.PEER_IP, connect_to=f"{A.ROUTER_WAN_IP}:18080")
    node.wait_for(lambda i: i["incoming_connections_count"] >= 1, timeout=45)
    _code, doc = check(net)
    assert doc["node"]["peers"]["inbound"] >= 1 and doc["node"]["problems"] == []


def test_loopback_only_node_path_open_not_reachable(lab, node_daemons):
    net = lab("port-restricted")
    ensure_serve(net)
    node_daemons.monerod(net, "client", p2p_address="127.0.0.1")
    net.forward(18080, "tcp")
    code, doc = check(net, "--port", "18080/tcp", "--node", "monero")
    port = doc["ports"][0]
    assert (port["reachable"], port["reason"], port["path_open"]) == (False, "loopback-only", True)
    codes = [p["code"] for p in doc["node"]["problems"]]
    assert codes[0] == "loopback-only" and "no-inbound-peers" in codes
    assert code == 1 and doc["verdict"] == "unreachable"
    assert doc["causes"] == ["nothing-listening"]  # the network is fine: no NAT cause
    assert doc["advice"][0]["code"] == "start-node" and "network path is open" in doc["advice"][0]["detail"]


def test_nothing_listening_is_not_reachable_and_says_the_path(lab):
    net = lab("open")
    ensure_serve(net)
    code, doc = check(net, "--port", "30303/tcp", "--node", "none")
    port = doc["ports"][0]
    # Before check/2 this said reachable: nodereach had listened itself.
    assert (port["reachable"], port["reason"], port["path_open"], port["listener"]) == \
        (False, "nothing-listening", True, "nodereach")
    assert doc["node"]["problems"][0]["code"] == "nothing-listening" and doc["node"]["rpc"] is None
    assert code == 1 and doc["verdict"] == "unreachable"


def test_node_rpc_that_hangs_costs_its_bound_only(lab):
    """An RPC that accepts and never answers: one clear reason, the rest of the check unaffected."""
    net = lab("open")
    ensure_serve(net)
    hang = net.spawn("client", ["python3", "-c", "import socket,time\ns=socket.socket()\n"
                                "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                                "s.bind(('127.0.0.1', 18081)); s.listen()\nc=[]\n"
                                "while True: c.append(s.accept())"])
    try:
        deadline = time.monotonic() + 10
        while net.exec("client", ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/18081"], check=False).returncode:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        started = time.monotonic()
        _code, doc = check(net, "--port", "30303/udp", "--node", "monero")
        took = time.monotonic() - started
    finally:
        hang.kill()
        hang.wait(5)
    assert re.fullmatch(r"http://127\.0\.0\.1:18081 did not answer within 0\.[1-8] s", doc["node"]["rpc_error"])
    assert any(p["code"] == "rpc-unavailable" for p in doc["node"]["problems"])
    assert doc["nat"]["filtering"] == "endpoint-independent" and doc["ports"][0]["path_open"] is True
    assert took < 15
