"""The check's dial-back adapter: nodereach.reach.client's answer in the report's terms, and end to end
against the real dial-back service on loopback (own listener verified; the node's UDP port unobservable)."""

from __future__ import annotations

import socket

import pytest

from nodereach.diagnose.dialback import probe, to_port_result
from nodereach.reach.client import DialBackResult
from nodereach.reach.limits import LimitsConfig
from nodereach.reach.service import DialbackConfig, DialbackService
from reach_helpers import free_port


@pytest.mark.parametrize("result, expected", [
    (DialBackResult(1, "udp", False, "timeout", listener="nodereach"), (False, "no-mapping-or-filtered")),
    (DialBackResult(1, "tcp", False, "timeout", listener="node"), (False, "timeout")),  # the node's own port
    (DialBackResult(1, "tcp", False, "refused", listener="nodereach"), (False, "refused")),
    (DialBackResult(1, "tcp", True, "ok", rtt_ms=1.5, listener="nodereach"), (True, "ok")),
    (DialBackResult(1, "udp", None, "udp-unobservable", listener="node"), (None, "udp-unobservable")),
    (DialBackResult(1, "tcp", None, "local-error"), (None, "local-error")),
])
def test_to_port_result(result: DialBackResult, expected: tuple[bool | None, str]) -> None:
    pr = to_port_result(result)
    assert (pr.reachable, pr.reason) == expected
    assert (pr.port, pr.protocol, pr.listener, pr.rtt_ms) == (1, result.protocol, result.listener, result.rtt_ms)


async def test_probe_against_the_service() -> None:
    svc = DialbackService(DialbackConfig(alt_addresses=("127.0.0.2",),
                                         limits=LimitsConfig(address_burst=100, network_burst=100)))
    http_port = (await svc.start(["127.0.0.1"], 0))[0][1]
    try:
        ok = await probe("127.0.0.1", http_port, free_port(), "tcp", server_wait=lambda h: 0.5, http_timeout=2.0,
                         copies=2)
        assert (ok.reachable, ok.reason, ok.listener) == (True, "ok", "nodereach") and ok.rtt_ms is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as node:
            node.bind(("0.0.0.0", 0))
            held = await probe("127.0.0.1", http_port, node.getsockname()[1], "udp", server_wait=lambda h: 0.3,
                               http_timeout=2.0)
        assert (held.reachable, held.reason, held.listener) == (None, "udp-unobservable", "node")
        gone = await probe("127.0.0.1", free_port(), free_port(), "tcp", server_wait=lambda h: 0.3, http_timeout=1.0)
        assert (gone.reachable, gone.reason) == (None, "no-server")
    finally:
        await svc.close()
