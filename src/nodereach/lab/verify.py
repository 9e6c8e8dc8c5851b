"""Quick proof that a running lab behaves as its ground truth says (raw sockets; used by the demo).

The thorough proofs are the tests (tests/test_lab_scenarios.py); this runs the same kinds of probes once,
in about a second per scenario, so `nodereach demo` only shows ground truth it has just seen hold.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from nodereach.lab import addresses as A
from nodereach.lab import probe as P
from nodereach.lab.core import Lab
from nodereach.lab.scenarios import Ipv6Truth

FILTERING_EXPECTATIONS = {
    "endpoint-independent": {"other-port": True, "other-ip": True},
    "address-dependent": {"other-port": True, "other-ip": False},
    "address-and-port-dependent": {"other-port": False, "other-ip": False},
}


@dataclass
class Verification:
    scenario: str
    checks: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(self.checks.values())

    def failed(self) -> list[str]:
        return [name for name, ok in self.checks.items() if not ok]


def verify(lab: Lab, timeout: float = 0.4) -> Verification:
    """Probe the lab: public address, mapping, filtering, UDP/TCP reachability, private hops, filters."""
    truth = lab.truth
    result = Verification(lab.scenario.name)
    c = result.checks
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(P.udp(lab, "client"))
        server, other_port, other_ip = stack.enter_context(P.trio(lab))
        ext = P.send_seen_as(client, server, timeout=timeout * 2)
        c["udp outbound"] = (ext is not None) != truth.udp_blocked
        if ext is not None:
            c["public address"] = ext[0] == truth.client_public_ip
            ext2 = P.send_seen_as(client, other_ip, timeout=timeout * 2)
            same_port = ext2 is not None and ext2[1] == ext[1]
            c["mapping"] = same_port == (truth.mapping != "address-and-port-dependent")
            if ext2 is not None:  # the second flow opened holes for other_ip: test filtering on a fresh one
                lab.flush_conntrack()
                ext = P.send_seen_as(client, server, timeout=timeout * 2) or ext
            expect = FILTERING_EXPECTATIONS.get(truth.filtering)
            if expect is not None:
                got = {"other-port": P.delivered(other_port, client, ext, timeout=timeout, tries=1),
                       "other-ip": P.delivered(other_ip, client, ext, timeout=timeout, tries=1)}
                c["filtering"] = got == expect
    listener = P.tcp_listener(lab, "server", A.SERVER_IP, 0)
    try:
        ok = P.tcp_connects(lab, "client", (A.SERVER_IP, listener.getsockname()[1]), timeout=timeout * 2)
        seen = P.tcp_accepts(listener, timeout) if ok else None
        c["tcp outbound"] = seen is not None and seen[0] == truth.client_public_ip
    finally:
        listener.close()
    if not truth.udp_blocked:
        hops = P.ttl_hops(lab, "client", A.SERVER_IP, max_ttl=truth.layers + 2, timeout=timeout * 2)
        c["private hops"] = hops[:len(truth.private_hops)] == list(truth.private_hops)
    if truth.filtered_ports:
        port = truth.filtered_ports[0]
        with P.udp(lab, "client") as cl, P.udp(lab, "server", A.SERVER_IP, port) as blocked:
            c["p2p port filtered"] = not P.delivered(cl, blocked, (A.SERVER_IP, port), timeout=timeout, tries=1)
    if truth.cgnat:
        wan = truth.nat_wan_addresses[0]
        c["cgnat wan"] = wan.startswith("100.") and wan in lab.exec("router", ["ip", "-4", "-o", "addr"]).stdout
    if truth.ipv6 is not None:
        lab.flush_conntrack()
        _verify6(lab, truth.ipv6, c, timeout)
    lab.flush_conntrack()
    return result


def _verify6(lab: Lab, truth: Ipv6Truth, c: dict[str, bool], timeout: float) -> None:
    """The IPv6 truth: public address and port, filtering, unsolicited inbound, hops."""
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(P.udp(lab, "client", "::"))
        server, other_port, other_ip = stack.enter_context(P.trio(lab, "server", A.SERVER_IP6, A.SERVER_ALT_IP6))
        ext = P.send_seen_as(client, server, timeout=timeout * 2)
        port = P.sockname(client)[1]
        c["ipv6 public address"] = ext == (truth.public_address, port)
        expect = FILTERING_EXPECTATIONS.get(truth.filtering)
        if ext is not None and expect is not None:
            got = {"other-port": P.delivered(other_port, client, ext, timeout=timeout, tries=1),
                   "other-ip": P.delivered(other_ip, client, ext, timeout=timeout, tries=1)}
            c["ipv6 filtering"] = got == expect
    # the client's socket is closed now: its port is free again for a listener that never sent anything
    c["ipv6 unsolicited inbound"] = P.inbound_reaches(lab, "client", (truth.public_address, port), "udp",
                                                      timeout=timeout) == truth.unsolicited_inbound
    c["ipv6 hops"] = P.ttl_hops(lab, "client", A.SERVER_IP6, max_ttl=len(truth.hops) + 1,
                                timeout=timeout * 2) == list(truth.hops)
