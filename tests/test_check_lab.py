"""`nodereach check --json` in every lab scenario: the lab's ground truth is the judge.

The client runs the real CLI as a subprocess in its namespace against
`nodereach serve --address 203.0.113.10 --alt-address 203.0.113.11` on the lab's server host.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nodereach.lab import Lab
from nodereach.lab import addresses as A

pytestmark = pytest.mark.lab

BIN = str(Path(sys.executable).parent / "nodereach")
PORTS = ["--port", "30303/udp", "--port", "30303/tcp"]
_SERVERS: dict[str, subprocess.Popen[Any]] = {}


def ensure_serve(lab: Lab) -> None:
    """One `nodereach serve` per lab (labs are shared across tests); wait until its HTTP port answers."""
    proc = _SERVERS.get(lab.id)
    if (proc is None or proc.poll() is not None) and not _port_open(lab):
        proc = lab.spawn("server", [BIN, "serve", "--address", A.SERVER_IP, "--alt-address", A.SERVER_ALT_IP],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _SERVERS[lab.id] = proc
    deadline = time.monotonic() + 15
    while not _port_open(lab):
        assert time.monotonic() < deadline, "nodereach serve did not come up in the lab"
        time.sleep(0.05)


def _port_open(lab: Lab) -> bool:
    r = lab.exec("server", ["bash", "-c", f"exec 3<>/dev/tcp/{A.SERVER_IP}/3480"], check=False, timeout=5)
    return r.returncode == 0


def run_check(lab: Lab, *args: str, timeout: float = 30) -> tuple[int, dict[str, Any], str, float]:
    """Run `nodereach check --json` in the client; stdout must be exactly one JSON document."""
    start = time.monotonic()
    r = lab.exec("client", [BIN, "check", "--json", *args], check=False, timeout=timeout)
    took = time.monotonic() - start
    assert "Traceback" not in r.stderr, r.stderr
    doc = json.loads(r.stdout)  # raises if anything else was printed on stdout
    assert r.stdout.strip().count("\n") == 0, "more than one line on stdout"
    return r.returncode, doc, r.stderr, took


EXIT = {"reachable": 0, "unreachable": 1, "no-connectivity": 3}
SCENARIOS = ["open", "open-firewalled", "full-cone", "restricted-cone", "port-restricted", "symmetric",
             "double-nat", "cgnat", "udp-blocked", "p2p-filtered"]
NO_PORTMAP_FIX = {"port-forward", "dmz", "nodereach-open"}


def assert_matches_truth(lab: Lab, doc: dict[str, Any], *, forwarded: bool = False, ports: bool = True,
                         listening: bool = False) -> None:
    """`listening`: the node listens on its ports (else nodereach listened itself, as in most lab tests)."""
    truth = lab.truth
    nat = doc["nat"]
    assert doc["schema"] == "nodereach.check/2"
    assert nat["present"] is truth.nat_present
    assert nat["layers"] == truth.layers
    assert nat["cgnat"] is truth.cgnat
    assert doc["udp"]["outbound"] is (not truth.udp_blocked)
    assert doc["tcp"]["outbound"] is True
    assert doc["public"]["ipv4"] == truth.client_public_ip
    if truth.udp_blocked:
        # No UDP answer: mapping and filtering cannot be measured, and check says why instead of guessing.
        assert nat["mapping"] == "unknown" and "UDP" in nat["unknown_reasons"]["mapping"]
        assert nat["filtering"] == "unknown" and "UDP" in nat["unknown_reasons"]["filtering"]
    else:
        assert nat["mapping"] == truth.mapping
        expected_filtering = truth.filtering if truth.filtering != "no-nat" else "endpoint-independent"
        assert nat["filtering"] == expected_filtering
    blocked = set(doc["udp"]["blocked_ports"]) | set(doc["tcp"]["blocked_ports"])
    assert blocked == ({p for p in truth.filtered_ports} if truth.filtered_ports else set())
    if truth.nat_present and not truth.udp_blocked:
        # masquerade keeps the port when free; fully-random (symmetric) never does
        assert nat["port_preservation"] is (truth.mapping != "address-and-port-dependent")
    hops = [h["address"] for h in nat["hops"]]
    for private_hop in truth.private_hops:
        assert private_hop in hops
    if not ports:
        return
    path = truth.unsolicited_inbound or forwarded
    if truth.filtered_ports:
        path = False
    for p in doc["ports"]:
        want = path and not (truth.udp_blocked and p["protocol"] == "udp")
        # check/2: nothing of the node listens in these tests (nodereach listened itself), so no port is
        # reachable; the network's truth is in path_open.
        assert p["path_open"] is want, p
        if listening:
            assert (p["reachable"], p["listener"]) == (want, "node"), p
        else:
            assert (p["reachable"], p["reason"], p["listener"]) == (False, "nothing-listening", "nodereach"), p
    assert doc["verdict"] == ("reachable" if listening and path else "unreachable")
    if listening:
        return
    if doc.get("node") is not None:  # the CLI's node stage (the conclude table tests have none)
        problems = [x["code"] for x in doc["node"]["problems"]]
        assert problems.count("nothing-listening") == len(doc["ports"]), problems


def path_is_open(lab: Lab) -> bool:
    """Would unsolicited traffic to the node's ports reach the client (no forward)?"""
    return lab.truth.unsolicited_inbound and not lab.truth.filtered_ports


def assert_advice_fits(lab: Lab, doc: dict[str, Any]) -> None:
    truth = lab.truth
    codes = [a["code"] for a in doc["advice"]]
    for a in doc["advice"]:
        assert a["title"] and a["detail"]
    if doc["verdict"] == "reachable":
        assert codes == []
        return
    assert codes, "an unreachable node must get advice"
    nothing = any(p["reason"] == "nothing-listening" for p in doc["ports"])
    if nothing:
        assert "start-node" in codes  # always said, after the network's remedies
    if path_is_open(lab) and nothing:
        assert codes == ["start-node"] and "nat" not in doc["causes"]  # the network is fine: only the node
        assert "network path is open" in doc["advice"][0]["detail"]
        return
    if truth.cgnat:
        assert codes[0] == "ask-provider-public-ipv4"
        assert not NO_PORTMAP_FIX & set(codes), codes  # forwarding/UPnP cannot help behind CGNAT
        assert "nothing-local" in codes
        assert "30303" in doc["advice"][0]["commands"]["message"]
        assert "cgnat" in doc["causes"]
    elif truth.layers == 2:
        assert codes[0] == "remove-double-nat" and "port-forward" in codes and "nodereach-open" not in codes
        assert "double-nat" in doc["causes"]
    elif truth.udp_blocked or truth.filtered_ports:
        assert codes[0] == "ask-provider-lift-filter"
        assert ("udp-blocked" if truth.udp_blocked else "port-filtered") in doc["causes"]
    elif truth.nat_present:
        assert codes[0] == "port-forward"
        fwd = doc["advice"][0]["commands"]
        assert f"dnat to {A.CLIENT_IP}:30303" in fwd["nftables"] and "to-addresses=192.168.1.10" in fwd["routeros"]
        assert "nat" in doc["causes"]
    else:
        assert codes[0] == "open-firewall" and "firewall" in doc["causes"]
    if truth.filtered_ports:
        assert "use-other-port" in codes


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_check_reports_ground_truth(lab, scenario: str) -> None:  # type: ignore[no-untyped-def]
    net: Lab = lab(scenario)
    ensure_serve(net)
    code, doc, _err, _took = run_check(net, "--server", A.SERVER_IP, *PORTS)
    assert_matches_truth(net, doc)
    assert_advice_fits(net, doc)
    assert code == EXIT[doc["verdict"]]
    assert doc["duration_s"] < 5.0
    assert doc["servers"][0]["kind"] == "nodereach"


@pytest.mark.parametrize("scenario", ["full-cone", "port-restricted", "symmetric"])
def test_forwarded_port_is_reachable(lab, scenario: str) -> None:  # type: ignore[no-untyped-def]
    net: Lab = lab(scenario)
    ensure_serve(net)
    net.forward(30303, "udp")
    net.forward(30303, "tcp")
    node = net.spawn("client", [sys.executable, "-c", NODE_LISTENER, "tcp", "30303"], stdout=subprocess.PIPE,
                     text=True)  # the node listens on TCP only
    try:
        assert node.stdout is not None and node.stdout.readline().strip() == "ready"
        code, doc, _err, _took = run_check(net, "--server", A.SERVER_IP, *PORTS)
    finally:
        node.kill()
        node.wait(5)
    assert_matches_truth(net, doc, forwarded=True, ports=False)
    by_proto = {p["protocol"]: p for p in doc["ports"]}
    assert (by_proto["tcp"]["reachable"], by_proto["tcp"]["path_open"], by_proto["tcp"]["listener"]) == \
        (True, True, "node")
    # Nothing on UDP: not reachable, though the forward lets the path through (check/2)
    assert (by_proto["udp"]["reachable"], by_proto["udp"]["path_open"], by_proto["udp"]["reason"]) == \
        (False, True, "nothing-listening")
    # The verdict follows the port where the node listens; the empty one is a node problem.
    assert code == 0 and doc["verdict"] == "reachable"
    assert [(x["code"], "30303/udp" in x["detail"]) for x in doc["node"]["problems"]] == [("nothing-listening", True)]
    assert [(x["port"], x["protocol"], x["address"]) for x in doc["node"]["listening"]] == [(30303, "tcp", "0.0.0.0")]


def test_cgnat_layers_say_whose_nat(lab) -> None:  # type: ignore[no-untyped-def]
    net: Lab = lab("cgnat")
    ensure_serve(net)
    _code, doc, _err, _took = run_check(net, "--server", A.SERVER_IP)
    details = doc["nat"]["layer_details"]
    assert [(d["owner"], d["inside_network"]) for d in details] == [("operator", "192.168.0.0/16"),
                                                                     ("provider", "100.64.0.0/10")]
    assert details[1]["router"] == A.CGNAT_ISP_LAN
    assert doc["local"] == {"address": A.CLIENT_IP, "gateway": A.HOME_LAN_GW, "interface": doc["local"]["interface"],
                            "address_is_public": False}
    assert doc["ports"] == [] and doc["verdict"] == "unreachable"


def test_human_output_has_panel_path_and_advice(lab) -> None:  # type: ignore[no-untyped-def]
    net: Lab = lab("cgnat")
    ensure_serve(net)
    r = net.exec("client", ["env", "COLUMNS=220", BIN, "check", "--server", A.SERVER_IP, "--port", "30303/tcp"],
                 check=False, timeout=30)
    assert r.returncode == 1, r.stderr
    out = r.stdout
    assert "unreachable" in out and "provider NAT (CGNAT) 100.64.0.1" in out
    assert "node 192.168.1.10" in out and "internet as 198.51.100.3" in out
    assert out.index("Ask your provider for a public IPv4") < out.index("Nothing on your side")
    assert "Traceback" not in r.stderr


NODE_LISTENER = """
import socket, sys, time
kind = socket.SOCK_STREAM if sys.argv[1] == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, kind)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[2])))
if kind == socket.SOCK_STREAM:
    s.listen(16)
print("ready", flush=True)
time.sleep(60)
"""


def test_node_holding_its_ports(lab) -> None:  # type: ignore[no-untyped-def]
    """When the node itself listens: TCP is judged by the server's handshake; UDP cannot be observed and says so."""
    net: Lab = lab("open")
    ensure_serve(net)
    nodes = [net.spawn("client", [sys.executable, "-c", NODE_LISTENER, proto, "30313"], stdout=subprocess.PIPE,
                       text=True) for proto in ("tcp", "udp")]
    try:
        for node in nodes:
            assert node.stdout is not None and node.stdout.readline().strip() == "ready"
        _code, doc, _err, _took = run_check(net, "--server", A.SERVER_IP, "--port", "30313/tcp", "--port",
                                            "30313/udp")
    finally:
        for node in nodes:
            node.kill()
            node.wait(5)
    by_proto = {p["protocol"]: p for p in doc["ports"]}
    assert (by_proto["tcp"]["reachable"], by_proto["tcp"]["listener"]) == (True, "node")
    assert (by_proto["udp"]["reachable"], by_proto["udp"]["reason"], by_proto["udp"]["listener"]) == \
        (None, "udp-unobservable", "node")
    assert doc["verdict"] == "reachable"  # the one definite answer is positive


@pytest.mark.parametrize(("scenario", "preserved"), [("port-restricted", True), ("symmetric", False)])
def test_public_endpoint_of_the_node_port(lab, scenario: str, preserved: bool) -> None:  # type: ignore[no-untyped-def]
    net: Lab = lab(scenario)
    ensure_serve(net)
    _code, doc, _err, _took = run_check(net, "--server", A.SERVER_IP, "--port", "30303/udp")
    endpoint = doc["ports"][0]["public_endpoint"]
    assert endpoint is not None and endpoint.startswith(net.truth.client_public_ip + ":")
    assert endpoint.endswith(":30303") is preserved
    assert any("maps the node's UDP port 30303" in n for n in doc["notes"]) is not preserved
    assert doc["ports"][0]["reachable"] is False  # measured before the mapping existed
