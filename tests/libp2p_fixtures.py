"""js-libp2p (npm, pinned in tests/js_libp2p/package-lock.json) started inside a lab namespace.

    def test_x(lab, js_libp2p):
        net = lab("open")
        node = js_libp2p(net, "client", port=4001)   # listening; node.peer_id, node.addrs (multiaddr text)

The node runs `node tests/js_libp2p/peer.mjs IP PORT` (TCP + noise + yamux), prints its peer id and listen
multiaddrs once listening, and is stopped (SIGTERM, then SIGKILL) when the test ends, even on failure.
`scripts/install-system-deps.sh` installs the npm packages (`make test` runs it).
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
from typing import Any

import pytest

from nodereach.lab import Lab

JS_DIR = Path(__file__).parent / "js_libp2p"
READY_S = 30.0
"""Start-up bound; measured here about 1 s (Node 20 loading libp2p), more on 2 loaded cores."""
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_js_libp2p() -> None:
    """Skip without Node or the npm packages; under CI (`make test` installs both) that is a failure."""
    reason = None
    if shutil.which("node") is None:
        reason = "`node` is not installed (apt-get install nodejs, or `make system-deps`)"
    elif not (JS_DIR / "node_modules" / "libp2p").is_dir():
        reason = "js-libp2p is not installed (`make system-deps` runs npm ci in tests/js_libp2p)"
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"CI must run the js-libp2p tests, but: {reason}")
    pytest.skip(reason)


@dataclass
class JsLibp2p:
    proc: subprocess.Popen[Any]
    peer_id: str
    addrs: list[str]
    port: int
    log: list[str] = field(default_factory=list)

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


def _start(lab: Lab, host: str, ip: str, port: int) -> JsLibp2p:
    require_js_libp2p()
    proc = lab.spawn(host, ["node", str(JS_DIR / "peer.mjs"), ip, str(port)], stdout=subprocess.PIPE,
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
            doc = json.loads(line)
            return JsLibp2p(proc, doc["peer_id"], list(doc["addrs"]), port, seen)
    node = JsLibp2p(proc, "", [], port, seen)
    node.stop()
    raise AssertionError(f"js-libp2p did not start within {READY_S:.0f} s: {' | '.join(seen)[-800:]}")


@pytest.fixture
def js_libp2p() -> Iterator[Callable[..., JsLibp2p]]:
    """Start js-libp2p nodes in lab hosts (`js_libp2p(lab, host, ip="0.0.0.0", port=4001)`); all are stopped
    when the test ends."""
    started: list[JsLibp2p] = []

    def start(lab: Lab, host: str, ip: str = "0.0.0.0", port: int = 4001) -> JsLibp2p:
        node = _start(lab, host, ip, port)
        started.append(node)
        return node

    try:
        yield start
    finally:
        for node in started:
            node.stop()
