"""`nodereach serve` over IPv6 in the lab: RFC 5780 over the server's two IPv6 addresses (nodereach's client and
coturn's turnutils_natdiscovery), dial-back over IPv6 against the home router's IPv6 firewall, probes from the
second IPv6 address, and the dual-stack default.

The server runs `nodereach serve --address 203.0.113.10 --alt-address 203.0.113.11 --address 2001:db8:203::10
--alt-address 2001:db8:203::11` (default ports) unless a test says otherwise; every expectation is the
scenario's ground truth (`lab.truth.ipv6`, proven by raw sockets in tests/test_lab_ipv6.py).
"""

from __future__ import annotations

import functools
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nodereach.lab import Lab
from nodereach.lab import addresses as A
from nodereach.reach.client import DialBackResult, probe_port
from nodereach.stun.client import StunClient
from nodereach.stun.errors import StunTimeout
from nodereach.stun.transaction import BindingReply, Rfc8489Retransmit
from serve_lab_helpers import IPV6_PAIR, URL6, http, http_in, serving

pytestmark = pytest.mark.lab

PRIMARY6 = (A.SERVER_IP6, 3478)
QUICK = Rfc8489Retransmit(rto=0.1, rc=3, rm=4)
"""Expected silence ends after 0.1 + 0.2 + 0.4 s (the lab's RTT is well under a millisecond)."""


async def _binding(server: tuple[str, int], *, change_ip: bool = False, change_port: bool = False,
                   client: StunClient | None = None) -> BindingReply | None:
    """One Binding request from a fresh IPv6 socket (or `client`'s); None when no answer came."""
    own = client is None
    c = client or await StunClient(local=("::", 0), retransmit=QUICK).open()
    try:
        return await c.binding(server, change_ip=change_ip, change_port=change_port)
    except StunTimeout:
        return None
    finally:
        if own:
            await c.close()


async def _rfc5780() -> dict[str, Any]:
    """RFC 5780 sections 4.3 and 4.4 over IPv6, from inside `client`: the answers to each test."""
    async with StunClient(local=("::", 0), retransmit=QUICK) as c:
        first = await _binding(PRIMARY6, client=c)
        second = await _binding((A.SERVER_ALT_IP6, 3478), client=c)  # mapping test II: the other address
        local = c.local_address
    # Filtering from a socket that has only ever sent to the primary: what its firewall state lets back in.
    async with StunClient(local=("::", 0), retransmit=QUICK) as f:
        base = await _binding(PRIMARY6, client=f)
        both = await _binding(PRIMARY6, change_ip=True, change_port=True, client=f)
        port = await _binding(PRIMARY6, change_port=True, client=f)
    return {"first": first, "second": second, "local": local, "base": base, "both": both, "port": port}


@pytest.mark.parametrize("scenario", ["ipv6-open", "ipv6-firewalled", "cgnat-ipv6", "nptv6"])
async def test_rfc5780_over_ipv6_with_nodereach_client(lab: Callable[..., Lab], tmp_path: Path,
                                                       scenario: str) -> None:
    net = lab(scenario)
    truth = net.truth.ipv6
    assert truth is not None
    with serving(net, tmp_path, *IPV6_PAIR):
        r = await net.run_async("client", _rfc5780)
    first, second = r["first"], r["second"]
    assert first is not None and second is not None and r["base"] is not None
    # The server's own IPv6 addresses, exactly: where it answered from and where the other tests go.
    assert first.source == first.response_origin == PRIMARY6
    assert first.other_address == (A.SERVER_ALT_IP6, 3479)
    assert second.source == second.response_origin == (A.SERVER_ALT_IP6, 3478)
    assert second.other_address == (A.SERVER_IP6, 3479)
    assert first.mapped is not None and first.mapped[0] == truth.public_address
    assert second.mapped == first.mapped  # the same public endpoint toward both server addresses
    mapping = "no-nat" if first.mapped == (truth.client_address, r["local"][1]) else "endpoint-independent"
    assert mapping == truth.mapping  # nptv6: the prefix is translated, the port kept
    if r["both"] is not None:
        assert r["both"].source == (A.SERVER_ALT_IP6, 3479)  # CHANGE-REQUEST honoured from the right socket
        filtering = "endpoint-independent"
    else:
        filtering = "address-dependent" if r["port"] is not None else "address-and-port-dependent"
    assert filtering == truth.filtering


MAPPING_TEXT = {"no-nat": "No NAT! (Endpoint Independent Mapping)",
                "endpoint-independent": "NAT with Endpoint Independent Mapping!"}
FILTERING_TEXT = {"endpoint-independent": "NAT with Endpoint Independent Filtering!",
                  "address-and-port-dependent": "NAT with Address and Port Dependent Filtering!"}


@pytest.mark.parametrize("scenario", ["ipv6-open", "ipv6-firewalled", "nptv6"])
def test_natdiscovery_over_ipv6_against_nodereach(lab: Callable[..., Lab], tmp_path: Path, scenario: str) -> None:
    """coturn's RFC 5780 client over IPv6 (it needs -L to compare its own address with the mapped one)."""
    net = lab(scenario)
    truth = net.truth.ipv6
    assert truth is not None
    with serving(net, tmp_path, *IPV6_PAIR):
        out = net.exec("client", ["turnutils_natdiscovery", "-m", "-f", "-L", truth.client_address,
                                  A.SERVER_IP6], timeout=40).stdout
    assert f"Other addr: : {A.SERVER_ALT_IP6}:3479" in out, out
    assert f"UDP reflexive addr: {truth.public_address}:" in out, out
    assert MAPPING_TEXT[truth.mapping] in out, out
    assert FILTERING_TEXT[truth.filtering] in out, out


async def _probe6(net: Lab, port: int, protocol: str, listen: bool = True) -> DialBackResult:
    fn = functools.partial(probe_port, A.SERVER_IP6, port, protocol, timeout=2.0, listen=listen)
    return await net.run_async("client", fn)


def _free_port6(net: Lab, kind: socket.SocketKind) -> int:
    with net.socket("client", socket.AF_INET6, kind) as s:
        s.bind(("::", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("scenario", ["ipv6-open", "ipv6-firewalled", "cgnat-ipv6"])
async def test_dialback_over_ipv6_matches_the_firewall(lab: Callable[..., Lab], tmp_path: Path,
                                                       scenario: str) -> None:
    """A request over IPv6 is probed over IPv6, from the second IPv6 address, toward the requester's own IPv6
    address: reachable exactly when the home router's IPv6 firewall lets unsolicited inbound in."""
    net = lab(scenario)
    truth = net.truth.ipv6
    assert truth is not None
    with serving(net, tmp_path, *IPV6_PAIR):
        for protocol, kind in (("tcp", socket.SOCK_STREAM), ("udp", socket.SOCK_DGRAM)):
            r = await _probe6(net, _free_port6(net, kind), protocol)
            assert (r.observed_address, r.source, r.second_address) == \
                (truth.public_address, A.SERVER_ALT_IP6, True), r
            assert r.reachable is truth.unsolicited_inbound, (protocol, r)
            assert r.reason == ("ok" if truth.unsolicited_inbound else "timeout"), r
        if scenario == "cgnat-ipv6":
            # The way out of CGNAT: IPv4 cannot be reached, IPv6 is once the firewall has a pinhole.
            port = _free_port6(net, socket.SOCK_STREAM)
            r4 = await net.run_async("client", functools.partial(probe_port, A.SERVER_IP, port, "tcp",
                                                                 timeout=2.0))
            assert (r4.reachable, r4.observed_address) == (False, net.truth.client_public_ip)
            net.open_pinhole(port, "tcp")
            r = await _probe6(net, port, "tcp")
            assert (r.reachable, r.reason, r.listener) == (True, "ok", "nodereach"), r


def _accept_probe(net: Lab, tcp: socket.socket, udp: socket.socket, ports: tuple[int, int]) -> dict[str, Any]:
    """Ask for a TCP and a UDP probe over IPv6 and report where each came from, as the node's sockets saw it."""
    out: dict[str, Any] = {}
    for protocol, port in zip(("tcp", "udp"), ports, strict=True):
        status, doc = http(URL6 + "/v1/probe", json.dumps({"port": port, "protocol": protocol}).encode())
        out[protocol] = (status, json.loads(doc))
    conn, peer = tcp.accept()
    conn.close()
    out["tcp_peer"] = peer[0]
    out["udp_peer"] = udp.recvfrom(256)[1][0]
    return out


async def test_ipv6_probe_comes_from_the_second_address(lab: Callable[..., Lab], tmp_path: Path) -> None:
    """The node's own sockets see the probes arrive from 2001:db8:203::11, although the request went to ::10."""
    net = lab("ipv6-open")
    with serving(net, tmp_path, *IPV6_PAIR):
        tcp = net.socket("client", socket.AF_INET6, socket.SOCK_STREAM)
        udp = net.socket("client", socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            tcp.bind(("::", 0))
            tcp.listen(4)
            tcp.settimeout(5)
            udp.bind(("::", 0))
            udp.settimeout(5)
            seen = net.call_in("client", _accept_probe, net, tcp, udp,
                               (tcp.getsockname()[1], udp.getsockname()[1]))
        finally:
            tcp.close()
            udp.close()
    assert seen["tcp_peer"] == seen["udp_peer"] == A.SERVER_ALT_IP6
    for protocol in ("tcp", "udp"):
        status, doc = seen[protocol]
        assert status == 200 and doc["address"] == A.CLIENT_IP6
        assert (doc["source"], doc["second_address"]) == (A.SERVER_ALT_IP6, True)


@pytest.mark.parametrize("scenario", ["ipv6-open", "ipv6-firewalled"])
async def test_one_ipv6_address_says_the_answer_is_weaker(lab: Callable[..., Lab], tmp_path: Path,
                                                          scenario: str) -> None:
    """No second IPv6 address: the probe leaves from the address the request reached, on a fresh port. The
    stateful (port-dependent) firewall still drops it, so the verdict stays right; the answer says it is weaker."""
    net = lab(scenario)
    truth = net.truth.ipv6
    assert truth is not None
    with serving(net, tmp_path, "--address", A.SERVER_IP6):
        status, info = http_in(net, "client", "/v1/info", url=URL6)
        r = await _probe6(net, _free_port6(net, socket.SOCK_STREAM), "tcp")
    assert status == 200 and isinstance(info, dict)
    assert info["families"] == [4, 6] and info["dialback"]["families"] == [
        {"family": 4, "second_address": A.SERVER_ALT_IP}, {"family": 6, "second_address": None}]
    assert [(e["family"], e["rfc5780"]) for e in info["stun"]["endpoints"]] == [(4, True), (6, False)]
    assert (r.source, r.second_address) == (A.SERVER_IP6, False)
    assert r.reachable is truth.unsolicited_inbound, r


def _stun_from(host: str) -> tuple[str, int] | None:
    """A plain Binding request from a connected socket: answered only if the answer comes from `host`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        s.connect((host, 3478))
        s.send(b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12))
        try:
            s.recv(256)
        except (TimeoutError, ConnectionRefusedError):
            return None
        return (host, 3478)


async def test_dual_stack_default_answers_from_every_address(lab: Callable[..., Lab], tmp_path: Path) -> None:
    """`nodereach serve` with no address in `server` (two addresses per family): STUN over each of the four
    answers from the address asked (a reply from another one would be dropped by the client's NAT and IPv6
    firewall), HTTP answers over both families, and an IPv6 dial-back leaves from the address it reached."""
    net = lab("ipv6-firewalled")
    with serving(net, tmp_path, ipv4_pair=False):
        for host in (A.SERVER_IP, A.SERVER_ALT_IP, A.SERVER_IP6, A.SERVER_ALT_IP6):
            assert net.call_in("client", _stun_from, host) == (host, 3478), f"no STUN answer from {host}"
        status, info = http_in(net, "client", "/v1/info", url=URL6)
        assert status == 200 and isinstance(info, dict) and info["families"] == [4, 6]
        for url, source in ((URL6, A.SERVER_IP6), (f"http://[{A.SERVER_ALT_IP6}]:3480", A.SERVER_ALT_IP6)):
            port = _free_port6(net, socket.SOCK_STREAM)
            status, doc = http_in(net, "client", "/v1/probe", {"port": port, "protocol": "tcp"}, url=url)
            assert status == 200 and isinstance(doc, dict)
            assert (doc["address"], doc["source"], doc["second_address"]) == (A.CLIENT_IP6, source, False)
            assert doc["reachable"] is False and doc["reason"] == "timeout"  # the firewall drops it (APD)


def _post_from(source: str, port: int) -> tuple[int, str]:
    """POST /v1/probe over IPv6 from one of the client's addresses: (status, error code or reason)."""
    import http.client

    conn = http.client.HTTPConnection(A.SERVER_IP6, 3480, timeout=5, source_address=(source, 0))
    try:
        conn.request("POST", "/v1/probe", json.dumps({"port": port, "protocol": "tcp", "timeout_ms": 300}),
                     {"Content-Type": "application/json"})
        r = conn.getresponse()
        doc = json.loads(r.read())
        return r.status, str(doc.get("error") or doc.get("reason"))
    finally:
        conn.close()


async def test_ipv6_requests_share_their_slash_56_limit(private_lab: Callable[..., Lab], tmp_path: Path) -> None:
    """Rotating IPv6 addresses (a subscriber has a whole prefix) does not escape the limits: the network
    bucket counts every address of the /56, as the /24 does for IPv4."""
    net = private_lab("ipv6-open")
    sources = [f"2001:db8:1:1::{n:x}" for n in range(0x20, 0x25)]
    for source in sources:
        net.exec("client", ["ip", "-6", "addr", "add", f"{source}/64", "dev", "eth0", "nodad"])
    config = tmp_path / "serve.toml"
    config.write_text("[dialback]\naddress_burst = 10\nnetwork_burst = 3\nnetwork_rate = 0.01\n")
    with serving(net, tmp_path, *IPV6_PAIR, "--config", str(config)):
        answers = [net.call_in("client", _post_from, source, 40000 + i) for i, source in enumerate(sources)]
    assert [status for status, _ in answers] == [200, 200, 200, 429, 429], answers
    assert [code for _, code in answers[3:]] == ["rate-limited-network"] * 2
