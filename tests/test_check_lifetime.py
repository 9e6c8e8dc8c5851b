"""--lifetime: the UDP binding lifetime, measured through RESPONSE-PORT against the lab's real conntrack."""

from __future__ import annotations

import pytest

from nodereach.diagnose.lifetime import intervals
from nodereach.lab import Lab
from nodereach.lab import addresses as A
from test_check_lab import ensure_serve, run_check


def test_intervals_are_bounded_by_max() -> None:
    assert intervals(12) == [2.0, 5.0, 10.0, 12.0]
    assert max(intervals(3600)) == 3600.0
    assert intervals(1) == [1.0]


@pytest.mark.lab
def test_binding_lifetime_matches_conntrack_timeout(lab) -> None:  # type: ignore[no-untyped-def]
    net: Lab = lab("port-restricted")
    ensure_serve(net)
    timeout_s = int(net.exec("router", ["sysctl", "-n", "net.netfilter.nf_conntrack_udp_timeout"]).stdout)
    code, doc, _err, took = run_check(net, "--server", A.SERVER_IP, "--lifetime", "--lifetime-max", "45",
                                      timeout=90)
    value = doc["nat"]["binding_lifetime_s"]
    assert value is not None and value <= timeout_s < 45, (value, timeout_s, doc["notes"])
    # the longest interval well inside the timeout must be seen alive (the lab's 30 s: 20 s)
    assert value >= max(w for w in intervals(45) if w < 0.75 * timeout_s), (value, timeout_s)
    assert 45 <= took < 60 and code == 1


async def test_one_interval_answers_through_response_port_on_loopback() -> None:
    """Y's question, answered to X's port (RESPONSE-PORT, the answer routed to X's client by its transaction
    id): alive. Both sockets' answers are samples of the run's one estimate."""
    from nodereach.diagnose import lifetime
    from nodereach.stun.rtt import SharedRtt
    from nodereach.stun.server import StunServer, StunServerConfig

    async with StunServer(StunServerConfig("127.0.0.1", port=0)) as server:
        rtt = SharedRtt()
        assert await lifetime._one(server.addresses["primary"], 0.0, rtt) is True
        assert rtt.samples == 2 and rtt.lost_tries == 0
