"""`nodereach check --json` over both address families in the dual-stack lab scenarios, judged by the ground
truth: `cgnat-ipv6` (CGNAT for IPv4, native IPv6 behind the home router's RFC 6092 firewall), `ipv6-firewalled`
(home NAT + the same firewall), `ipv6-open` (no IPv6 filter), `nptv6` (a ULA LAN translated 1:1).

The client runs the real CLI against a dual-stack `nodereach serve` (two addresses per family), with
`--server 203.0.113.10 --server 2001:db8:203::10`. Nodes are plain sockets: one that listens on both
families (`[::]` without IPV6_V6ONLY) and one on IPv4 only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest

from nodereach.lab import Lab
from nodereach.lab import addresses as A
from test_check_lab import (
    BIN,
    EXIT,
    PORTS,
    SERVERS,
    assert_advice_fits,
    assert_matches_truth,
    ensure_serve,
    run_check,
)

pytestmark = pytest.mark.lab

IPV6_SCENARIOS = ["cgnat-ipv6", "ipv6-firewalled", "ipv6-open", "nptv6"]

NODE = """
import socket, sys, time
family = socket.AF_INET6 if sys.argv[1] == "both" else socket.AF_INET
s = socket.socket(family, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if family == socket.AF_INET6:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # [::] taking IPv4 too, as most nodes bind
s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", int(sys.argv[2])))
s.listen(16)
print("ready", flush=True)
time.sleep(60)
"""


def with_node(lab: Lab, families: str, port: int, *args: str) -> tuple[int, dict[str, Any]]:
    """Run the check while a TCP node listens on `port` (`both` families, or `ipv4` only)."""
    node = lab.spawn("client", [sys.executable, "-c", NODE, families, str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert node.stdout is not None and node.stdout.readline().strip() == "ready"
        code, doc, _err, _took = run_check(lab, *SERVERS, "--port", f"{port}/tcp", *args)
    finally:
        node.kill()
        node.wait(5)
    return code, doc


@pytest.mark.parametrize("scenario", IPV6_SCENARIOS)
def test_check_reports_both_families(lab, scenario: str) -> None:  # type: ignore[no-untyped-def]
    net: Lab = lab(scenario)
    ensure_serve(net)
    code, doc, _err, _took = run_check(net, *SERVERS, *PORTS)
    assert_matches_truth(net, doc)
    assert_advice_fits(net, doc)
    assert code == EXIT[doc["verdict"]]
    assert doc["duration_s"] < 5.0
    assert [(s["family"], s["kind"]) for s in doc["servers"]] == [(4, "nodereach"), (6, "nodereach")]
    six = [p for p in doc["ports"] if p["family"] == 6]
    assert all(p["second_address"] is True for p in six if p["path_open"])  # probed from the server's ::11
    assert not any("weaker evidence" in n for n in doc["notes"])


def test_pinholes_and_a_dual_stack_node_are_partly_reachable(lab) -> None:  # type: ignore[no-untyped-def]
    """IPv6 firewall opened for the node's port, IPv4 still behind the home NAT: partly reachable, exit 4."""
    net: Lab = lab("ipv6-firewalled")
    ensure_serve(net)
    net.open_pinhole(30323, "tcp")
    code, doc = with_node(net, "both", 30323)
    assert_matches_truth(net, doc, ports=False)
    assert [(p["family"], p["reachable"], p["path_open"], p["listener"]) for p in doc["ports"]] == \
        [(4, False, False, "node"), (6, True, True, "node")]
    assert doc["reachability"] == {"ipv4": "unreachable", "ipv6": "reachable"}
    assert (doc["verdict"], code) == ("partly-reachable", 4)
    assert "ipv6-firewall" not in doc["causes"] and "nat" in doc["causes"]
    codes = [a["code"] for a in doc["advice"]]
    assert codes[:2] == ["use-ipv6", "port-forward"]
    assert doc["advice"][0]["title"] == "IPv6 peers reach the node now"
    assert f"[{A.CLIENT_IP6}]:30323/tcp" in doc["advice"][0]["detail"]


def test_ipv4_only_node_is_judged_on_ipv4_and_told_to_listen_on_ipv6(lab) -> None:  # type: ignore[no-untyped-def]
    net: Lab = lab("ipv6-open")
    ensure_serve(net)
    net.forward(30324, "tcp")
    code, doc = with_node(net, "ipv4", 30324)
    by_family = {p["family"]: p for p in doc["ports"]}
    assert (by_family[4]["reachable"], by_family[4]["listener"]) == (True, "node")
    # IPv6 is open all the way to the host, but nothing of the node takes it: nodereach listened itself.
    assert (by_family[6]["reachable"], by_family[6]["path_open"], by_family[6]["reason"]) == \
        (False, True, "ipv4-only")
    assert doc["reachability"] == {"ipv4": "reachable", "ipv6": "unreachable"}
    assert (doc["verdict"], code) == ("reachable", 0)  # not a permanent half verdict
    assert [a["code"] for a in doc["advice"]] == ["use-ipv6"]
    assert "listen on IPv6 too" in doc["advice"][0]["detail"]
    assert any(x["code"] == "ipv4-only" for x in doc["node"]["problems"])


def test_human_output_shows_both_families(lab) -> None:  # type: ignore[no-untyped-def]
    net: Lab = lab("cgnat-ipv6")
    ensure_serve(net)
    r = net.exec("client", ["env", "COLUMNS=240", BIN, "check", *SERVERS, "--port", "30303/tcp"], check=False,
                 timeout=30)
    assert r.returncode == 1, r.stderr
    out = r.stdout
    assert "Traceback" not in r.stderr
    assert "IPv4 unreachable" in out and "IPv6 unreachable" in out
    assert f"{A.CLIENT_IP6}   no translation, filtering address-and-port-dependent" in out
    assert "port 30303/tcp IPv6" in out and "port 30303/tcp " in out
    order = [out.index(t) for t in ("Ask your provider for a public IPv4", "Use IPv6: the node can be reachable",
                                    "open an IPv6 pinhole", "Nothing on your side")]
    assert order == sorted(order)
    assert f"ip6 daddr {A.CLIENT_IP6} tcp dport 30303 accept" in out



def test_server_with_one_ipv6_address_is_weaker_evidence(private_lab) -> None:  # type: ignore[no-untyped-def]
    """`serve` with one IPv6 address: its dial-back probe comes from the address the request went to, so an
    open path over IPv6 is weaker evidence (a note says so), and IPv6 filtering cannot be told (no RFC 5780)."""
    net: Lab = private_lab("ipv6-open")
    net.spawn("server", [BIN, "serve", "--address", A.SERVER_IP, "--alt-address", A.SERVER_ALT_IP, "--address",
                         A.SERVER_IP6], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while net.exec("server", ["bash", "-c", f"exec 3<>/dev/tcp/{A.SERVER_IP6}/3480"], check=False).returncode:
        assert time.monotonic() < deadline, "nodereach serve did not come up"
        time.sleep(0.05)
    _code, doc, _err, _took = run_check(net, *SERVERS, *PORTS)
    assert [(p["family"], p["path_open"], p["second_address"]) for p in doc["ports"]] == \
        [(4, False, True), (4, False, True), (6, True, False), (6, True, False)]
    assert sum("one IPv6 address" in n and "weaker evidence" in n for n in doc["notes"]) == 2
    assert (doc["ipv6"]["translation"], doc["ipv6"]["mapping"], doc["ipv6"]["filtering"]) == \
        ("none", "no-nat", "unknown")
    assert "IPv6 filtering: no RFC 5780 server with two IPv6 addresses among the servers" in doc["untested"]


SOURCE6 = f"""
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.connect(("{A.SERVER_IP6}", 9))
print(s.getsockname()[0])
"""


def test_a_host_with_privacy_addresses_is_probed_at_its_stable_address(private_lab) -> None:  # type: ignore[no-untyped-def]
    """Privacy addresses on (RFC 8981, use_tempaddr=2): the kernel sources from a temporary address, while the
    pinhole (here the operator's static one; `open --family 6` pins the same address) is for the stable one.
    The check's sockets prefer the stable source, so the servers see it and the dial-back tests the rule that
    was made: IPv6 reachable. Sourced from the temporary address, the dial-back met the firewall."""
    net: Lab = private_lab("ipv6-firewalled")
    ensure_serve(net)
    line = net.exec("client", ["ip", "-6", "-o", "addr", "show", "to", f"{A.CLIENT_IP6}/128"]).stdout.split()
    dev, prefix = line[1], line[3]
    net.exec("client", ["sysctl", "-qw", f"net.ipv6.conf.{dev}.use_tempaddr=2"])
    net.exec("client", ["ip", "-6", "addr", "change", prefix, "dev", dev, "mngtmpaddr", "valid_lft", "7200",
                        "preferred_lft", "3600"])
    deadline = time.monotonic() + 10
    while (temporary := net.exec("client", [sys.executable, "-c", SOURCE6]).stdout.strip()) == A.CLIENT_IP6:
        assert time.monotonic() < deadline, "the kernel made no temporary address to source from"
        time.sleep(0.1)
    assert temporary.startswith("2001:db8:1:1:")  # the premise: by default the servers would see this one
    net.open_pinhole(30325, "tcp")
    code, doc = with_node(net, "both", 30325)
    assert (doc["ipv6"]["address"], doc["ipv6"]["stable_address"], doc["public"]["ipv6"]) == (A.CLIENT_IP6,) * 3
    six = next(p for p in doc["ports"] if p["family"] == 6)
    assert (six["reachable"], six["path_open"], six["listener"]) == (True, True, "node")
    assert doc["reachability"]["ipv6"] == "reachable" and (doc["verdict"], code) == ("partly-reachable", 4)
    assert temporary not in json.dumps(doc)
