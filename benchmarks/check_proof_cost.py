"""What the proof in the node's own protocol costs a `nodereach check`: real monerod behind the lab's NAT at
50 ms RTT, its P2P port forwarded (and, with --closed, not), runs interleaved: `--port 18080/tcp --node none`
(the path test alone: no node stage, no proof), `--node monero` (the node read over its RPC, the Levin proof
instead of the path test) and, with --udp, EthereumJS devp2p's discv4 on 30303/udp with `--node none`
(`udp-unobservable`) against `--node ethereum` (the discv4 proof).

    .venv/bin/python benchmarks/check_proof_cost.py [--runs 7] [--delay-ms 25] [--closed] [--udp]

Needs root (network namespaces), monerod (Debian `monero`) and, for --udp, the js peers (`make system-deps`).
Prints the numbers; no threshold is asserted here.
"""

from __future__ import annotations

import argparse
import json
import select
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from check_speed import BIN, start_monerod, start_serve, timed
from nodereach.lab import Lab
from nodereach.lab import addresses as A

JS_DIR = Path(__file__).resolve().parent.parent / "tests" / "js_peers"


def check(lab: Lab, *args: str) -> tuple[float, dict[str, Any]]:
    took, r = timed(lab, [str(BIN / "nodereach"), "check", "--json", "--server", A.SERVER_IP, *args])
    return took, json.loads(r.stdout)


def start_discv4(lab: Lab) -> subprocess.Popen[str]:
    proc = lab.spawn("client", ["node", str(JS_DIR / "discv4.mjs"), A.CLIENT_IP, "30303"], stdout=subprocess.PIPE,
                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=JS_DIR, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready and proc.stdout.readline().startswith("{"):
            return proc
    proc.kill()
    raise SystemExit("the discv4 peer did not start")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--delay-ms", type=float, default=25.0, help="one-way delay on the subscriber link")
    ap.add_argument("--closed", action="store_true", help="do not forward the node's port")
    ap.add_argument("--udp", action="store_true", help="also discv4 on 30303/udp")
    args = ap.parse_args(argv)
    runs = max(1, min(args.runs, 15))
    cases = [("path test only (--node none)", ["--port", "18080/tcp", "--node", "none"]),
             ("Levin proof (--node monero)", ["--port", "18080/tcp", "--node", "monero"])]
    if args.udp:
        cases += [("UDP, no proof (--node none)", ["--port", "30303/udp", "--node", "none"]),
                  ("discv4 proof (--node ethereum)", ["--port", "30303/udp", "--node", "ethereum"])]
    results: dict[str, list[tuple[float, dict[str, Any]]]] = {name: [] for name, _ in cases}
    with Lab("port-restricted", delay_ms=args.delay_ms) as lab:
        if start_serve(lab) is None:
            return 2
        start_monerod(lab)
        peer = start_discv4(lab) if args.udp else None
        if not args.closed:
            lab.forward(18080, "tcp")
            lab.forward(30303, "udp")
        try:
            for _ in range(runs):
                for name, argv_ in cases:  # interleaved: load from other work hits every case alike
                    results[name].append(check(lab, *argv_))
        finally:
            if peer is not None:
                peer.kill()
                peer.wait(5)
    print(f"port-restricted NAT, RTT {2 * args.delay_ms:.0f} ms, port {'not ' if args.closed else ''}forwarded, "
          f"{runs} runs each, interleaved")
    print(f"{'case':34} {'wall s':>7} {'min':>6} {'probing s':>10} {'min':>6}  port (reachable/reason/proof)")
    for name, got in results.items():
        walls = [t for t, _ in got]
        probing = [d["duration_s"] for _, d in got]
        p = got[-1][1]["ports"][0]
        check_ = p.get("protocol_check")
        proof = "-" if check_ is None else f"{check_['protocol']} ok={check_['ok']} rtt={check_.get('rtt_ms')}"
        print(f"{name:34} {statistics.median(walls):7.2f} {min(walls):6.2f} {statistics.median(probing):10.2f} "
              f"{min(probing):6.2f}  {p['reachable']}/{p['reason']}/{proof}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
