"""Outbound port filters (diagnose.portfilter) on loopback, without root: a closed port answers (ICMP port
unreachable, as a server's closed port does), a bound socket that never answers plays a filtered one. Silence
counts as "filtered" only after the tries the path's loss asks for."""

from __future__ import annotations

import asyncio
import socket
import time

from nodereach.diagnose import portfilter
from nodereach.diagnose.portfilter import MoreTries, PortPath, blocked_ports, unsettled_ports


def _closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _drain(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            sock.recv(2048)
        except BlockingIOError:
            return count
        count += 1


async def test_a_silent_udp_port_gets_the_tries_the_loss_asks_for() -> None:
    closed = _closed_udp_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        sink.setblocking(False)
        silent = sink.getsockname()[1]
        start = time.monotonic()
        more = MoreTries(asyncio.Event(), needed=lambda: 6, hard_end=lambda: start + 3.0)
        # A regular deadline with room for two datagrams 50 ms apart; the closed port answers the first.
        answered, quiet = await asyncio.gather(
            portfilter._udp("127.0.0.1", closed, 0.08, 0.05, 4, more),
            portfilter._udp("127.0.0.1", silent, 0.08, 0.05, 4, more))
        took = time.monotonic() - start
        received = _drain(sink)
    assert (answered.state, answered.tries) == ("refused", 1)
    assert (quiet.state, quiet.tries, received) == ("silent", 6, 6)
    assert 0.25 < took < 1.0  # six datagrams an RTO apart and one RTO for the last, not the hard end


async def test_without_an_answer_elsewhere_silence_gets_no_extra_tries() -> None:
    """Every port silent (a server that drops closed ports): nothing can be concluded, so nothing is extended."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        sink.setblocking(False)
        start = time.monotonic()
        more = MoreTries(asyncio.Event(), needed=lambda: 6, hard_end=lambda: start + 3.0)
        quiet = await portfilter._udp("127.0.0.1", sink.getsockname()[1], 0.12, 0.05, 4, more)
        took = time.monotonic() - start
        received = _drain(sink)
    assert quiet.state == "silent" and quiet.tries == received and 2 <= received <= 3
    assert took < 0.3


def test_silence_is_filtered_only_after_enough_tries() -> None:
    paths = [PortPath(3481, "udp", "refused", 1), PortPath(30303, "udp", "silent", 3),
             PortPath(4001, "udp", "silent", 6), PortPath(6881, "udp", "silent")]  # tries not counted: as before
    assert blocked_ports(paths, "udp", 6) == [4001, 6881]
    assert [p.port for p in unsettled_ports(paths, "udp", 6)] == [30303]
    assert blocked_ports(paths, "udp", None) == [4001, 6881, 30303]  # no loss-aware count: any silence
    assert blocked_ports(paths[1:], "udp", 6) is None and unsettled_ports(paths[1:], "udp", 6) == []


def test_too_few_tries_is_said_not_called_filtered() -> None:
    """The forwarded port silent after 3 tries at 10% loss each way (needs 6): the report does not claim an
    outbound filter (a reruns-off full run once did), it says what it could not settle."""
    from check_observations import observations, v4, with_v4
    from nodereach.diagnose.observations import PortPaths
    from test_check_conclude import report_doc

    obs = observations("full-cone", forwarded=True)
    paths = v4(obs).port_paths
    assert paths is not None
    unlucky = tuple(PortPath(p.port, p.protocol, "silent", 3) if (p.port, p.protocol) == (30303, "udp")
                    else PortPath(p.port, p.protocol, p.state, 6) for p in paths.paths)
    doc = report_doc(with_v4(obs, port_paths=PortPaths(unlucky, needed_tries=6)))
    assert doc["udp"]["blocked_ports"] == [] and doc["tcp"]["blocked_ports"] == []
    assert any("30303/udp: no answer to 3 tries" in u and "6 needed" in u for u in doc["untested"])
    settled = report_doc(with_v4(obs, port_paths=PortPaths(unlucky, needed_tries=3)))
    assert settled["udp"]["blocked_ports"] == [30303]  # enough tries for that loss: filtered
