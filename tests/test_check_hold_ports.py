"""CheckOptions.hold_free_ports=False (what `nodereach watch` runs): the check never listens on a node port
that nothing holds, so a node starting at that moment always gets its port. Loopback, a real `serve`."""

from __future__ import annotations

import asyncio
import socket
import threading

from nodereach.diagnose.engine import run_check
from nodereach.diagnose.options import CheckOptions, ServerSpec
from nodereach.net import PortSpec
from reach_helpers import free_port
from test_serve_command import Serve


def binds_while(port: int, stop: threading.Event, taken: list[int]) -> None:
    """A node trying to bind its port again and again: count the times it could not."""
    while not stop.is_set():
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            taken.append(1)
        finally:
            s.close()
        stop.wait(0.001)


def test_check_leaves_a_free_port_free() -> None:
    serve = Serve("--address", "127.0.0.1")
    serve.wait_ready()
    try:
        port = free_port()
        spec = ServerSpec("127.0.0.1", serve.stun, serve.http)
        for hold, listener in ((True, "nodereach"), (False, "none")):
            opts = CheckOptions(servers=[spec], ports=[PortSpec(port, "tcp")], timeout=3, hold_free_ports=hold)
            stop, taken = threading.Event(), []
            t = threading.Thread(target=binds_while, args=(port, stop, taken))
            if not hold:
                t.start()
            try:
                report = asyncio.run(run_check(opts))
            finally:
                stop.set()
                if t.is_alive():
                    t.join()
            [result] = report.ports
            assert result.listener == listener, (hold, result)
            if hold:
                assert result.path_open is True  # the check listened and the server reached its listener
            else:
                assert result.reachable is False and taken == []  # nobody listens; the port was never held
    finally:
        serve.stop()
