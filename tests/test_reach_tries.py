"""The dial-back server's probe makes several independent tries within its deadline (fresh SYNs, repeated
datagrams on reach.prober.SCHEDULE), as many as the request's bytes pay for, and accounts every byte: a
port behind a NAT that drops them is "no" only after all of them went unanswered."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodereach.lab import addresses as A
from nodereach.lab import netns
from nodereach.reach.prober import SCHEDULE, TCP_SEGMENT_OVERHEAD, TCP_SYN_BYTES, tcp_tries
from serve_lab_helpers import http_in, nft_counters, serving

COUNT = """
table inet nrtries {{
    counter syn {{}}
    counter datagrams {{}}
    chain out {{
        type filter hook output priority 0; policy accept;
        ip daddr {req} tcp flags & (syn | ack) == syn counter name syn
        ip daddr {req} udp sport != {{3478, 3479}} counter name datagrams
    }}
}}
"""


def test_tcp_tries_follow_the_budget() -> None:
    handshake = 3 * TCP_SEGMENT_OVERHEAD
    assert tcp_tries(0.7, handshake + 6 * TCP_SYN_BYTES) == len(SCHEDULE)  # one SYN each within 0.7 s
    assert tcp_tries(0.7, handshake + 2 * TCP_SYN_BYTES + 59) == 2
    assert tcp_tries(0.7, handshake + TCP_SYN_BYTES - 1) == 0
    # Attempts living past 1 s get the kernel's SYN retransmission, which is paid for too.
    assert tcp_tries(2.0, handshake + 4 * TCP_SYN_BYTES) == 2
    assert tcp_tries(0.7, 10_000, ipv6=True) == len(SCHEDULE)
    # A proof's connection also pays for its request and the answer's ACKs (`connected`).
    assert tcp_tries(0.7, 500 + 3 * TCP_SYN_BYTES, connected=500) == 3


@pytest.mark.lab
async def test_nat_drops_every_try_and_each_is_counted(private_lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lab = private_lab("port-restricted")
    with serving(lab, tmp_path):
        netns.nft(lab.ns("server"), COUNT.format(req=A.ROUTER_WAN_IP))
        pad = "x" * 200  # a request large enough to pay for every try
        for proto in ("tcp", "udp"):
            status, doc = http_in(lab, "client", "/v1/probe", {"port": 30999, "protocol": proto, "timeout_ms": 700,
                                                              "token": "ab" * 16, "pad": pad})
            assert status == 200, doc
            assert isinstance(doc, dict)
            assert (doc["reachable"], doc["reason"]) == (False, "timeout"), doc
            assert 0.7 <= doc["duration_ms"] / 1000 < 1.0  # the deadline asked for, not the kernel's 1 s SYN timer
            assert doc["bytes_sent"] <= doc["request_bytes"]
        counted = nft_counters(lab, "server", "nrtries")
        assert counted["syn"][0] == len(SCHEDULE)  # six fresh SYNs, not one and a retransmission after 1 s
        assert counted["datagrams"][0] == len(SCHEDULE)


@pytest.mark.lab
async def test_a_proof_that_cannot_connect_made_the_path_tests_tries(private_lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A TCP proof toward a port the NAT drops makes the same fresh SYNs as the path test, within the deadline
    asked for, so its "no" is as sure as the path test's and the check asks nothing more (diagnose.ports)."""
    lab = private_lab("port-restricted")
    with serving(lab, tmp_path):
        netns.nft(lab.ns("server"), COUNT.format(req=A.ROUTER_WAN_IP))
        for connect_ms, low, high in ((None, 0.7, 1.0), (350, 0.35, 0.6)):
            body = {"port": 30999, "protocol": "tcp", "timeout_ms": 700, "proof": {"protocol": "monero"},
                    "pad": "x" * 600}
            if connect_ms is not None:
                body["connect_timeout_ms"] = connect_ms  # the path test's deadline: the "no" comes as early
            status, doc = http_in(lab, "client", "/v1/probe", body)
            assert status == 200, doc
            assert isinstance(doc, dict)
            assert (doc["reachable"], doc["reason"]) == (False, "timeout"), doc
            assert doc["protocol_check"]["ok"] is False and "no TCP connection" in doc["protocol_check"]["detail"]
            assert low <= doc["duration_ms"] / 1000 < high, (connect_ms, doc["duration_ms"])
            assert doc["bytes_sent"] <= doc["request_bytes"]
        counted = nft_counters(lab, "server", "nrtries")
        assert counted["syn"][0] == 2 * len(SCHEDULE)
