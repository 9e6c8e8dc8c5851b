"""The demo's check probe: run the real `nodereach check --json` in a scenario's client and judge its JSON.

`check_probe(lab)` starts a dual-stack `nodereach serve --address 203.0.113.10 --alt-address 203.0.113.11
--address 2001:db8:203::10 --alt-address 2001:db8:203::11` on the lab's server, runs `nodereach check --json
--server 203.0.113.10 --server 2001:db8:203::10 --port 30303/udp --port 30303/tcp` in the client
(subprocesses, exactly as an operator would; a client without IPv6 must say IPv6 is untested), decodes the
document into a typed view (checkview.py) and compares it with the ground truth fact by fact (judge.py),
IPv4's and IPv6's. It imports nothing from the check: the JSON
schema is the contract.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from nodereach.lab import addresses as A
from nodereach.lab.checkview import CheckOutputError, CheckView, decode_check
from nodereach.lab.core import Lab
from nodereach.lab.judge import Finding, found_text, found_text6, judge

FOUND = "what nodereach found"
REACHABLE = "reachable"
ADVICE = "first advice"
CHECK_SECONDS = "check s"
FOUND6 = "IPv6 found"
SERVE_READY_S = 15.0
CHECK_TIMEOUT_S = 60.0
DIALBACK_PORT = 3480


def _bin() -> str:
    return str(Path(sys.executable).parent / "nodereach")


def _serve(lab: Lab) -> subprocess.Popen[Any]:
    """`nodereach serve` on the lab's server, waited for until its dial-back port accepts (bounded)."""
    proc = lab.spawn("server", [_bin(), "serve", "--address", A.SERVER_IP, "--alt-address", A.SERVER_ALT_IP,
                                "--address", A.SERVER_IP6, "--alt-address", A.SERVER_ALT_IP6],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + SERVE_READY_S
    while time.monotonic() < deadline and proc.poll() is None:
        ready = all(lab.exec("server", ["bash", "-c", f"exec 3<>/dev/tcp/{address}/{DIALBACK_PORT}"], check=False,
                             timeout=5).returncode == 0 for address in (A.SERVER_IP, A.SERVER_IP6))
        if ready:
            break
        time.sleep(0.05)
    return proc


def run_check(lab: Lab) -> CheckView:
    """Run the check in `lab`'s client against a fresh `serve`; its JSON as a typed view."""
    proc = _serve(lab)
    try:
        r = lab.exec("client", [_bin(), "check", "--json", "--server", A.SERVER_IP, "--server", A.SERVER_IP6,
                                "--port", "30303/udp", "--port", "30303/tcp"], check=False, timeout=CHECK_TIMEOUT_S)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
    try:
        return decode_check(r.stdout)
    except CheckOutputError as exc:
        raise CheckOutputError(f"{exc}; stderr: {r.stderr.strip()[-200:]}") from None


def check_probe(lab: Lab) -> Finding:
    """Facts judged against the ground truth, and the columns "what nodereach found", "reachable",
    "first advice", "IPv6 found" and the check's own time."""
    view = run_check(lab)
    facts = judge(lab.truth, view)
    # The demo's client runs no node, so a port is never `reachable` (check/2); the path is the lab's truth.
    ports = ", ".join(f"{p.protocol}{'/v6' if p.family == 6 else ''} path "
                      f"{'open' if p.path_open else 'closed' if p.path_open is False else '?'}" for p in view.ports)
    return Finding(facts=facts, columns=(
        (FOUND, found_text(view)),
        (REACHABLE, f"{view.verdict} ({ports})" if ports else view.verdict),
        (ADVICE, view.advice[0].title if view.advice else "-"),
        (FOUND6, found_text6(facts)),
        (CHECK_SECONDS, f"{view.duration_s:.2f}"),
    ))
