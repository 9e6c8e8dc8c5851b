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


async def test_first_decisive_copy_wins() -> None:
    """Copies of one dial-back request: all at once, or hedged (the next only if none connected in time); the
    first answer that decides ends the wait (a copy whose request lost a SYN would otherwise hold the result for
    the kernel's retransmission, a second later)."""
    import asyncio
    import time
    from collections.abc import Callable, Coroutine
    from typing import Any

    from nodereach.reach.client import _first_decisive

    Answer = tuple[int | None, dict[str, object]]

    def script(*plans: tuple[float, bool, int | None, dict[str, object]],
               ) -> tuple[Callable[[], Coroutine[Any, Any, Answer]], asyncio.Event, list[float]]:
        """Copy i connects (or not) and answers after plans[i][0] seconds."""
        connected, started, plan = asyncio.Event(), [], list(plans)

        async def ask() -> Answer:
            after, connects, status, doc = plan[len(started)]
            started.append(time.monotonic())
            if connects:
                connected.set()
            await asyncio.sleep(after)
            return status, doc
        return ask, connected, started

    yes, no = (200, {"reachable": True}), (200, {"reachable": False})
    ask, connected, started = script((5.0, True, *yes), (0.05, True, *no))
    t0 = time.monotonic()
    assert await _first_decisive(ask, 2, None, connected) == [no] and time.monotonic() - t0 < 1.0
    # Hedged: the first copy connected, so no second request is made.
    ask, connected, started = script((0.05, True, *no), (0.01, True, *yes))
    assert await _first_decisive(ask, 2, 0.02, connected) == [no] and len(started) == 1
    # Hedged: the first copy's connection is not up after 0.05 s (a lost SYN): the second one answers.
    ask, connected, started = script((5.0, False, *yes), (0.05, True, *no))
    t0 = time.monotonic()
    assert await _first_decisive(ask, 2, 0.05, connected) == [no] and time.monotonic() - t0 < 1.0
    assert len(started) == 2 and started[1] - started[0] >= 0.05
    # An undecided answer (no server; a node's UDP port: reachable null) waits for the others.
    ask, connected, started = script((0.01, False, None, {"message": "x"}), (0.1, True, *yes))
    assert await _first_decisive(ask, 2, None, connected) == [(None, {"message": "x"}), yes]
