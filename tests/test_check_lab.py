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


SERVE_ARGS = ["serve", "--address", A.SERVER_IP, "--alt-address", A.SERVER_ALT_IP, "--address", A.SERVER_IP6,
              "--alt-address", A.SERVER_ALT_IP6]
"""Dual-stack, as the server host has both families in every scenario: RFC 5780 and the dial-back per family."""
SERVERS = ["--server", A.SERVER_IP, "--server", A.SERVER_IP6]


def ensure_serve(lab: Lab) -> None:
    """One dual-stack `nodereach serve` per lab (labs are shared across tests); wait until its HTTP port
    answers over both families."""
    proc = _SERVERS.get(lab.id)
    if (proc is None or proc.poll() is not None) and not _port_open(lab):
        proc = lab.spawn("server", [BIN, *SERVE_ARGS], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _SERVERS[lab.id] = proc
    deadline = time.monotonic() + 15
    while not (_port_open(lab) and _port_open(lab, A.SERVER_IP6)):
        assert time.monotonic() < deadline, "nodereach serve did not come up in the lab (over both families)"
        time.sleep(0.05)


def _port_open(lab: Lab, address: str = A.SERVER_IP) -> bool:
    r = lab.exec("server", ["bash", "-c", f"exec 3<>/dev/tcp/{address}/3480"], check=False, timeout=5)
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


EXIT = {"reachable": 0, "unreachable": 1, "no-connectivity": 3, "partly-reachable": 4}
SCENARIOS = ["open", "open-firewalled", "full-cone", "restricted-cone", "port-restricted", "symmetric",
             "double-nat", "cgnat", "udp-blocked", "p2p-filtered"]


def assert_matches_truth(lab: Lab, doc: dict[str, Any], *, forwarded: bool = False, ports: bool = True,
                         listening: bool = False, pinholes: bool = False) -> None:
    """`listening`: the node listens on its ports over every family (else nodereach listened itself, as in most
    lab tests); `forwarded`: the IPv4 ports are forwarded, `pinholes`: the IPv6 firewall lets them in."""
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
    assert_ipv6_matches_truth(lab, doc)
    if not ports:
        return
    path4 = (truth.unsolicited_inbound or forwarded) and not truth.filtered_ports
    path6 = truth.ipv6 is not None and (truth.ipv6.unsolicited_inbound or pinholes)
    families = [p["family"] for p in doc["ports"]]
    assert families == sorted(families), "IPv4 entries first, then IPv6"
    assert set(families) == set(truth.families), doc["ports"]
    for p in doc["ports"]:
        path = path4 if p["family"] == 4 else path6
        want = path and not (p["family"] == 4 and truth.udp_blocked and p["protocol"] == "udp")
        # check/2: nothing of the node listens in these tests (nodereach listened itself), so no port is
        # reachable; the network's truth is in path_open.
        assert p["path_open"] is want, p
        if listening:
            assert (p["reachable"], p["listener"]) == (want, "node"), p
        else:
            assert (p["reachable"], p["reason"], p["listener"]) == (False, "nothing-listening", "nodereach"), p
    reach = {f: ("reachable" if listening and (path4 if f == 4 else path6) else "unreachable") for f in (4, 6)}
    if truth.ipv6 is None:
        reach[6] = "untested"
    assert doc["reachability"] == {"ipv4": reach[4], "ipv6": reach[6]}
    tested = [reach[f] for f in truth.families]
    want_verdict = "reachable" if all(r == "reachable" for r in tested) else \
        "partly-reachable" if "reachable" in tested else "unreachable"
    assert doc["verdict"] == want_verdict
    if listening:
        return
    if doc.get("node") is not None:  # the CLI's node stage (the conclude table tests have none)
        problems = [x["code"] for x in doc["node"]["problems"]]
        assert problems.count("nothing-listening") == len({(p["port"], p["protocol"]) for p in doc["ports"]}), \
            problems


def assert_ipv6_matches_truth(lab: Lab, doc: dict[str, Any]) -> None:
    """The IPv6 half: untested (with the reason) where the client has none, else the address the servers see
    (never a unique-local one), the translation and the firewall's filtering in RFC 4787 terms."""
    v6 = lab.truth.ipv6
    six = doc["ipv6"]
    if v6 is None:
        assert doc["reachability"]["ipv6"] == "untested"
        assert doc["public"]["ipv6"] is None and six["translation"] == "unknown"
        assert six["reason"] and "IPv6" in six["reason"], six
        assert any(u.startswith("IPv6: ") for u in doc["untested"])
        return
    assert doc["public"]["ipv6"] == v6.public_address
    assert six["address"] == v6.client_address
    assert six["translation"] == v6.translation, six
    assert six["mapping"] == v6.mapping, six
    assert six["filtering"] == v6.filtering, six
    assert (doc["udp"]["ipv6"], doc["tcp"]["ipv6"]) == (True, True)
    assert six["reason"] is None
    assert doc["reachability"]["ipv6"] in ("reachable", "unreachable")


def path_is_open(lab: Lab) -> bool:
    """Would unsolicited traffic to the node's ports reach the client (no forward), over every family?"""
    truth = lab.truth
    return truth.unsolicited_inbound and not truth.filtered_ports and \
        (truth.ipv6 is None or truth.ipv6.unsolicited_inbound)


def assert_advice_fits(lab: Lab, doc: dict[str, Any], *, pinholes: bool = False) -> None:
    """`pinholes`: the IPv6 firewall lets the node's ports in."""
    truth = lab.truth
    codes = [a["code"] for a in doc["advice"]]
    for a in doc["advice"]:
        assert a["title"] and a["detail"]
    if doc["verdict"] == "reachable":
        assert set(codes) <= {"use-ipv6"}, codes  # at most: listen on IPv6 too
        return
    assert codes, "an unreachable node must get advice"
    nothing = any(p["reason"] == "nothing-listening" for p in doc["ports"])
    if nothing:
        assert "start-node" in codes  # always said, after the network's remedies
    if path_is_open(lab) and nothing:
        assert codes == ["start-node"] and "nat" not in doc["causes"]  # the network is fine: only the node
        assert "network path is open" in doc["advice"][0]["detail"]
        return
    opener = next((a for a in doc["advice"] if a["code"] == "nodereach-open"), None)
    if truth.ipv6 is not None:
        # IPv6 works: "use IPv6" belongs to getting rid of the NAT, right after what only the provider can do.
        provider = {"ask-provider-public-ipv4", "remove-double-nat", "ask-provider-lift-filter", "use-other-port"}
        i = codes.index("use-ipv6")
        assert set(codes[:i]) <= provider, codes
        use = doc["advice"][i]
        assert truth.ipv6.public_address in use["detail"]
        if not truth.ipv6.unsolicited_inbound and not pinholes:
            assert "ipv6-firewall" in doc["causes"]
            assert {"nftables", "ip6tables", "openwrt", "routeros", "home-router"} <= set(use["commands"])
            assert f"ip6 daddr {truth.ipv6.client_address} udp dport 30303 accept" in use["commands"]["nftables"]
            # IPv6 pinholes: `--family 6` alone, or with the IPv4 mapping (every family, no --family)
            assert opener is not None and "--family 4" not in opener["commands"]["shell"]
            assert codes.index("nodereach-open") > codes.index("use-ipv6")
        else:
            assert "ipv6-firewall" not in doc["causes"] and "ip6tables" not in use["commands"]
        assert "tunnel" not in codes
    if truth.cgnat:
        assert codes[0] == "ask-provider-public-ipv4"
        # forwarding/UPnP cannot help IPv4 behind CGNAT; an IPv6 pinhole can
        assert not {"port-forward", "dmz"} & set(codes), codes
        assert opener is None or "--family 6" in opener["commands"]["shell"]
        assert "nothing-local" in codes
        assert "30303" in doc["advice"][0]["commands"]["message"]
        assert "cgnat" in doc["causes"]
        if truth.ipv6 is None:
            assert codes[1] == "tunnel" and "tunnel-config" in doc["advice"][1]["commands"]["shell"]
    elif truth.layers == 2:
        assert codes[0] == "remove-double-nat" and "port-forward" in codes and "nodereach-open" not in codes
        assert "double-nat" in doc["causes"]
    elif truth.udp_blocked or truth.filtered_ports:
        assert codes[0] == "ask-provider-lift-filter"
        assert ("udp-blocked" if truth.udp_blocked else "port-filtered") in doc["causes"]
    elif truth.nat_present:
        fwd = doc["advice"][codes.index("port-forward")]["commands"]
        assert codes.index("port-forward") == (1 if truth.ipv6 is not None else 0)
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
    code, doc, _err, _took = run_check(net, *SERVERS, *PORTS)  # no IPv6 on the client here: IPv6 untested
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
