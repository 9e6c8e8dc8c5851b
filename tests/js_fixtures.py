"""Real P2P implementations from npm (pinned in tests/js_peers/package-lock.json) started in lab namespaces:

- `libp2p`: js-libp2p 2.9 on TCP (noise + yamux) — multistream-select;
- `discv5`: ChainSafe's discv5 11 (Lodestar's discovery) on UDP — WHOAREYOU;
- `discv4`: EthereumJS devp2p 10 DPT (the EthereumJS client's discovery) on UDP — PONG.

    def test_x(lab, js_peer):
        net = lab("open")
        node = js_peer(net, "client", "discv5", ip=A.CLIENT_IP, port=9000)   # node.info: {"enr", "node_id"}

Each runs `node tests/js_peers/<kind>.mjs IP PORT`, prints one JSON line once listening (libp2p: peer_id,
addrs; discv5: enr, node_id; discv4: node_id, pubkey) and is stopped (SIGTERM, then SIGKILL) when the test
ends, even on failure. `scripts/install-system-deps.sh` installs the npm packages (`make test` runs it).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from nodereach.lab import Lab

JS_DIR = Path(__file__).parent / "js_peers"
READY_S = 30.0
"""Start-up bound; measured here 1-3 s (Node 20 loading the packages), more on 2 loaded cores."""
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
Kind = Literal["libp2p", "discv5", "discv4"]


def require_js_peers() -> None:
    """Skip without Node or the npm packages; under CI (`make test` installs both) that is a failure."""
    reason = None
    if shutil.which("node") is None:
        reason = "`node` is not installed (apt-get install nodejs, or `make system-deps`)"
    elif not (JS_DIR / "node_modules" / ".package-lock.json").is_file():
        reason = "the npm packages are not installed (`make system-deps` runs npm ci in tests/js_peers)"
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"CI must run the js peer tests, but: {reason}")
    pytest.skip(reason)


@dataclass
class JsPeer:
    kind: Kind
    proc: subprocess.Popen[Any]
    info: dict[str, Any]
    """What the peer printed once listening (see the module docstring)."""
    port: int
    output: list[str] = field(default_factory=list)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _start(lab: Lab, host: str, kind: Kind, ip: str, port: int) -> JsPeer:
    require_js_peers()
    proc = lab.spawn(host, ["node", str(JS_DIR / f"{kind}.mjs"), ip, str(port)], stdout=subprocess.PIPE,
                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, cwd=JS_DIR,
                     text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + READY_S
    seen: list[str] = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)  # wait for output under a deadline
        if not ready:
            if proc.poll() is not None:
                break
            continue
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line.rstrip())
        if line.startswith("{"):
            return JsPeer(kind, proc, json.loads(line), port, seen)
    peer = JsPeer(kind, proc, {}, port, seen)
    peer.stop()
    raise AssertionError(f"{kind} did not start within {READY_S:.0f} s: {' | '.join(seen)[-800:]}")


@pytest.fixture
def js_peer() -> Iterator[Callable[..., JsPeer]]:
    """Start real JS P2P peers in lab hosts: `js_peer(lab, host, kind, ip="0.0.0.0", port=...)` (for discv5
    and discv4 `ip` is the address the node advertises). All are stopped when the test ends."""
    started: list[JsPeer] = []

    def start(lab: Lab, host: str, kind: Kind, ip: str = "0.0.0.0", port: int = 4001) -> JsPeer:
        peer = _start(lab, host, kind, ip, port)
        started.append(peer)
        return peer

    try:
        yield start
    finally:
        for peer in started:
            peer.stop()
