"""`python -m nodereach.stun`: the STUN server as a process, for tests, benchmarks and scaling out.

    python -m nodereach.stun --address 127.0.0.1 --alt-address 127.0.0.2 --port 0 --alt-port 0
    python -m nodereach.stun --address 203.0.113.10 --workers 2 --uvloop

Prints one JSON line {"addresses": {...}} once every worker is bound, serves until stdin closes or
SIGTERM/SIGINT, then prints {"stats": {...}} (the parent's own counters). With --workers N the parent binds
first (resolving port 0), then starts N-1 children on the same ports with SO_REUSEPORT: the kernel spreads
clients over the processes by 4-tuple hash, which is how one machine's cores are all used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import select
import signal
import stat
import subprocess
import sys
from typing import Any

from nodereach.defaults import STUN_ALT_PORT, STUN_PORT
from nodereach.stun.server import StunServer, StunServerConfig


def _start_workers(argv: list[str], n: int, addresses: dict[str, tuple[str, int]]) -> list[subprocess.Popen[bytes]]:
    """Children with the parent's resolved ports; each must report ready within 10 s."""
    port = addresses["primary"][1]
    alt = addresses.get("alt_port", addresses["primary"])[1]
    children = []
    for _ in range(n):
        child = subprocess.Popen([sys.executable, "-m", "nodereach.stun", *argv, "--port", str(port),
                                  "--alt-port", str(alt), "--reuse-port", "--workers", "1"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        children.append(child)
    for child in children:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 10)
        if not ready or not child.stdout.readline():
            _stop_workers(children)
            raise SystemExit("a SO_REUSEPORT worker did not start")
    return children


def _stop_workers(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        with contextlib.suppress(OSError):
            if child.stdin is not None:
                child.stdin.close()
    for child in children:
        try:
            child.wait(3)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(3)


async def serve(config: StunServerConfig, workers: int = 1, child_argv: list[str] | None = None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    children: list[subprocess.Popen[bytes]] = []
    async with StunServer(config) as server:
        try:
            if workers > 1:
                children = await asyncio.to_thread(_start_workers, child_argv or [], workers - 1, server.addresses)
            print(json.dumps({"addresses": server.addresses, "workers": workers}), flush=True)
            waiter = asyncio.ensure_future(stop.wait())
            watched: set[asyncio.Future[Any]] = {waiter}
            if _stdin_is_pollable():
                reader = asyncio.StreamReader()
                await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
                watched.add(asyncio.ensure_future(reader.read()))
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            for task in watched:
                task.cancel()
            print(json.dumps({"stats": server.stats.as_dict()}), flush=True)
        finally:
            if children:
                await asyncio.to_thread(_stop_workers, children)


def _stdin_is_pollable() -> bool:
    """A pipe, socket or terminal on stdin can tell "closed"; /dev/null or a file cannot be polled (epoll refuses
    it: asyncio logged a traceback) and never closes, so then only a signal stops the server (systemd's
    StandardInput=null, `< /dev/null`)."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(sys.stdin.fileno())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m nodereach.stun", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--alt-address", help="second IP: full RFC 5780 mode")
    p.add_argument("--port", type=int, default=STUN_PORT)
    p.add_argument("--alt-port", type=int, default=STUN_ALT_PORT)
    p.add_argument("--rate", type=float, default=50.0, help="requests/s per source IP (<= 0: unlimited)")
    p.add_argument("--burst", type=float, default=100.0)
    p.add_argument("--no-tcp", action="store_true")
    p.add_argument("--reuse-port", action="store_true", help="set SO_REUSEPORT (implied by --workers > 1)")
    p.add_argument("--workers", type=int, default=1, help="processes sharing the ports via SO_REUSEPORT")
    p.add_argument("--uvloop", action="store_true", help="run on uvloop (the `fast` extra)")
    a = p.parse_args(argv)
    cfg = StunServerConfig(a.address, a.alt_address, a.port, a.alt_port, tcp=not a.no_tcp, rate_per_s=a.rate,
                           burst=a.burst, reuse_port=a.reuse_port or a.workers > 1)
    child_argv = ["--address", a.address, "--rate", str(a.rate), "--burst", str(a.burst)]
    if a.alt_address:
        child_argv += ["--alt-address", a.alt_address]
    if a.no_tcp:
        child_argv.append("--no-tcp")
    if a.uvloop:
        child_argv.append("--uvloop")
    coro = serve(cfg, a.workers, child_argv)
    if a.uvloop:
        import uvloop

        uvloop.run(coro)
    else:
        asyncio.run(coro)
