"""CPU instructions per STUN request in the server's decision (`StunServer.respond`), counted by callgrind.

    .venv/bin/python benchmarks/stun_instructions.py [--src OTHER_CHECKOUT/src] [--calls 2000]

Deterministic, unlike replies per CPU-second, so it compares two trees on a loaded machine: run it once per
tree (`--src` puts another checkout's package first on the path, e.g. `git worktree add /tmp/before main`).
Each request kind runs twice under callgrind, with 0 and with --calls calls of respond() on the same bytes;
the difference divided by the calls is the cost of one decision (the UDP driver's syscalls are not in it).
Needs valgrind (apt-get install valgrind).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
KINDS = {  # name: (what, RFC 5780 mode)
    "plain": ("plain 20-byte request (the UDP driver answers these before respond())", False),
    "fingerprint": ("FINGERPRINT", False),
    "software": ("SOFTWARE + FINGERPRINT", False),
    "change-none": ("CHANGE-REQUEST changing nothing", False),
    "change-5780": ("CHANGE-REQUEST change IP + port, RFC 5780 mode", True),
    "change-420": ("CHANGE-REQUEST in basic mode: 420", False),
}


def _child(kind: str, calls: int) -> None:
    from nodereach.stun import attributes as A
    from nodereach.stun.message import binding_request, encode_message
    from nodereach.stun.server import StunServer, StunServerConfig

    tid = b"nodereachben"
    request = {
        "plain": encode_message(binding_request(transaction_id=tid)),
        "fingerprint": encode_message(binding_request(transaction_id=tid), fingerprint=True),
        "software": encode_message(binding_request(transaction_id=tid, software="libnice 0.1.21"), fingerprint=True),
        "change-none": encode_message(binding_request(transaction_id=tid).add(A.CHANGE_REQUEST, bytes(4))),
        "change-5780": encode_message(binding_request(transaction_id=tid, change_ip=True, change_port=True)),
        "change-420": encode_message(binding_request(transaction_id=tid, change_ip=True)),
    }[kind]
    full = KINDS[kind][1]
    server = StunServer(StunServerConfig("198.51.100.10", "198.51.100.11" if full else None, port=3478,
                                         alt_port=3479))
    server.addresses = {"primary": ("198.51.100.10", 3478), "alt_port": ("198.51.100.10", 3479),
                        "alt_ip": ("198.51.100.11", 3478), "alt_both": ("198.51.100.11", 3479)}
    source = ("203.0.113.7", 40000)
    respond = server.respond
    if respond(request, source, (0, 0)) is None:
        raise SystemExit(f"{kind}: no reply")
    for _ in range(calls):
        respond(request, source, (0, 0))


def _instructions(src: str | None, kind: str, calls: int, tmp: str) -> int:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.abspath(src or SRC) + os.pathsep + env.get("PYTHONPATH", "")
    out = os.path.join(tmp, "callgrind.out")
    run = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
                          os.path.abspath(__file__), "--child", kind, "--calls", str(calls)],
                         capture_output=True, text=True, env=env, timeout=600, check=True)
    found = re.search(r"Collected : (\d+)", run.stderr)
    if found is None:
        raise RuntimeError(f"no callgrind total in: {run.stderr[-500:]}")
    return int(found.group(1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", help="a checkout's src/ to measure instead of this one")
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--kinds", nargs="*", choices=sorted(KINDS), default=list(KINDS))
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        _child(a.child, a.calls)
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is needed: apt-get install valgrind")
    print(f"CPU instructions per respond() call (callgrind), {a.calls} calls, tree: {a.src or 'this checkout'}")
    with tempfile.TemporaryDirectory(prefix="nr-cg-") as tmp:
        for kind in a.kinds:
            base = _instructions(a.src, kind, 0, tmp)
            total = _instructions(a.src, kind, a.calls, tmp)
            print(f"  {kind:<12} {(total - base) / a.calls:>9,.0f}   {KINDS[kind][0]}", flush=True)


if __name__ == "__main__":
    main()
