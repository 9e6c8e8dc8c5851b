"""Wall time of a full `nodereach check` (one --port) in the lab at 50 ms RTT, next to pystun3, pynat and
coturn's turnutils_natdiscovery on the same scenario in the same run, each answer next to the ground truth.

    .venv/bin/python benchmarks/check_speed.py [--scenario port-restricted] [--runs 3] [--delay-ms 25]
    .venv/bin/python benchmarks/check_speed.py --lossy          # 100 ms RTT, 10% loss each way, 10 runs,
                                                                # one TCP and one UDP --port
    .venv/bin/python benchmarks/check_speed.py --node --nodereach-only   # with real monerod in the client:
                                                                # --port 18080/tcp --node monero (issue 10)
    .venv/bin/python benchmarks/check_speed.py --dual-stack --scenario ipv6-firewalled --nodereach-only
                                       # both families: serve with two addresses per family, check with
                                       # --server 203.0.113.10 --server 2001:db8:203::10 (issue 11)
    .venv/bin/python benchmarks/check_speed.py --nodereach-only --runs 10 --baseline /tmp/main
                                       # before/after: every run alternates with the check of another source
                                       # tree (`git archive main src | tar -x -C /tmp/main`) in the same lab

The subscriber link gets `delay_ms` one way (25 ms -> 50 ms RTT) and `--loss` percent loss per direction.
`--lossy` is the target of issue 9: a check with `--port 30303/tcp --port 30303/udp` at 100 ms RTT and 10%
loss must conclude every field (no port left `timeout`, the NAT as the ground truth says) in < 2.5 s (median
of 10); the table says how many runs were conclusive and gives the median of the in-process probing time.
nodereach runs against `nodereach serve --address 203.0.113.10 --alt-address 203.0.113.11`; the peer tools
against coturn in full RFC 5780 mode (203.0.113.30/.31), the reference server they were written for.
Conntrack is flushed before every run and every tool probes from a fresh random port (lab notes: old holes
make tools say "full cone").
Every source tree run is byte-compiled first (compileall), as an installed package is: with
PYTHONDONTWRITEBYTECODE set (this sandbox sets it) every check would otherwise compile nodereach's modules from
source, ~0.1 s of CPU that no installed copy pays. `--no-compile` measures that case.
Needs root (network namespaces) and, for the peers: pip install six wheel && pip install --no-build-isolation
pynat; apt-get install coturn. Prints the numbers; no threshold is asserted here.
"""

from __future__ import annotations

import argparse
import compileall
import json
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from nodereach.lab import Lab
from nodereach.lab import addresses as A

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent

TRUTH_WORDS = {
    # scenario -> (pystun3 / pynat wording, mapping, filtering)
    "open": ("Open Internet", "no-nat", "endpoint-independent"),
    "full-cone": ("Full Cone", "endpoint-independent", "endpoint-independent"),
    "restricted-cone": ("Restricted Cone", "endpoint-independent", "address-dependent"),
    "port-restricted": ("Port Restricted Cone", "endpoint-independent", "address-and-port-dependent"),
    "symmetric": ("Symmetric", "address-and-port-dependent", "address-and-port-dependent"),
    "cgnat": ("Port Restricted Cone", "endpoint-independent", "address-and-port-dependent"),
    # dual-stack scenarios (IPv4 as `port-restricted` / `cgnat`): with --dual-stack
    "ipv6-firewalled": ("Port Restricted Cone", "endpoint-independent", "address-and-port-dependent"),
    "ipv6-open": ("Port Restricted Cone", "endpoint-independent", "address-and-port-dependent"),
    "nptv6": ("Port Restricted Cone", "endpoint-independent", "address-and-port-dependent"),
    "cgnat-ipv6": ("Port Restricted Cone", "endpoint-independent", "address-and-port-dependent"),
}


def timed(lab: Lab, argv: list[str], timeout: float = 60) -> tuple[float, subprocess.CompletedProcess[str]]:
    lab.flush_conntrack()
    start = time.monotonic()
    r = lab.exec("client", argv, check=False, timeout=timeout)
    return time.monotonic() - start, r


def norm(text: str) -> str:
    return re.sub(r"[^a-z]", "", text.lower())


def run_nodereach(lab: Lab, port: int, protocols: tuple[str, ...] = ("udp",), node: str | None = None,
                  dual_stack: bool = False, source: str | None = None) -> tuple[float, str, bool, dict[str, Any]]:
    """One check; `source`: a source tree to run instead of this one (PYTHONPATH=source/src)."""
    command = [str(BIN / "nodereach")] if source is None else \
        ["env", f"PYTHONPATH={source}/src", sys.executable, "-m", "nodereach.cli"]
    argv = [*command, "check", "--json", "--server", A.SERVER_IP]
    if dual_stack:
        argv += ["--server", A.SERVER_IP6]
    for proto in protocols:
        argv += ["--port", f"{port}/{proto}"]
    if node is not None:
        argv += ["--node", node]
    took, r = timed(lab, argv)
    doc = json.loads(r.stdout)
    t = lab.truth
    nat = doc["nat"]
    ok = (nat["present"] is t.nat_present and nat["layers"] == t.layers and nat["cgnat"] is t.cgnat
          and nat["mapping"] == t.mapping and nat["filtering"] == (t.filtering if t.filtering != "no-nat"
                                                                    else "endpoint-independent"))
    ports = " ".join(f"{p['protocol']}{'/v6' if p.get('family') == 6 else ''}={p['reachable']}/{p['reason']}"
                     for p in doc["ports"])
    # Conclusive: every port has an answer (the lab's ports are not forwarded: the path is closed), no timeout.
    # check/2: the network's answer is `path_open` (`reachable` also needs a program listening).
    six = t.ipv6 if dual_stack else None
    ok = ok and all(p.get("path_open", p["reachable"]) is
                    (six.unsolicited_inbound if p.get("family") == 6 and six else t.unsolicited_inbound)
                    and p["path_open"] is not None for p in doc["ports"])
    if dual_stack:
        found6 = doc.get("ipv6") or {}
        ok = ok and (doc.get("reachability", {}).get("ipv6") == "untested" if six is None else
                     (found6.get("translation"), found6.get("filtering"), doc["public"]["ipv6"]) ==
                     (six.translation, six.filtering, six.public_address))
    if node is not None:
        block = doc.get("node") or {}
        ok = ok and block.get("rpc_error") is None and block.get("software") is not None
        answer_node = (f" node={block.get('software')} in={block.get('peers', {}).get('inbound')} "
                       f"listening={[x['address'] for x in block.get('listening', [])]}")
    else:
        answer_node = ""
    answer = (f"layers={nat['layers']} cgnat={nat['cgnat']} mapping={nat['mapping']} "
              f"filtering={nat['filtering']} {port} {ports}{answer_node}")
    return took, answer, ok, doc


def start_serve(lab: Lab, *extra: str) -> subprocess.Popen[bytes] | None:
    """`nodereach serve` on the lab's server, once its HTTP port accepts (at most 15 s); None if it did not."""
    serve = lab.spawn("server", [str(BIN / "nodereach"), "serve", "--address", A.SERVER_IP, "--alt-address",
                                 A.SERVER_ALT_IP, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while lab.exec("server", ["bash", "-c", f"exec 3<>/dev/tcp/{A.SERVER_IP}/3480"], check=False).returncode:
        if time.monotonic() > deadline or serve.poll() is not None:
            print("nodereach serve did not start", file=sys.stderr)
            return None
        time.sleep(0.05)
    return serve


def start_monerod(lab: Lab) -> None:
    """Real monerod (regtest, RPC on the client's loopback, no UPnP) for --node; waits until its RPC answers."""
    import tempfile

    data = tempfile.mkdtemp(prefix="nodereach-bench-monerod-")
    lab.spawn("client", ["monerod", "--regtest", "--fixed-difficulty", "1", "--non-interactive", "--no-igd",
                         "--no-zmq", "--rpc-ssl", "disabled", "--data-dir", data, "--p2p-bind-port", "18080",
                         "--rpc-bind-ip", "127.0.0.1", "--rpc-bind-port", "18081", "--log-level", "0"],
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    body = '{"jsonrpc":"2.0","id":"0","method":"get_info"}'
    while lab.exec("client", ["curl", "-sf", "--max-time", "1", "-d", body, "http://127.0.0.1:18081/json_rpc"],
                   check=False).returncode:
        if time.monotonic() > deadline:
            raise SystemExit("monerod did not start")
        time.sleep(0.2)


def run_pystun3(lab: Lab, expected: str) -> tuple[float, str, bool]:
    took, r = timed(lab, [str(BIN / "pystun3"), "-H", A.COTURN_IP, "-P", "3478", "-p",
                          str(random.randint(20000, 60000))])
    m = re.search(r"NAT Type:\s*(.+)", r.stdout)
    answer = m.group(1).strip() if m else (r.stdout + r.stderr).strip()[-80:]
    return took, answer, norm(answer) == norm(expected)


def run_pynat(lab: Lab, expected: str) -> tuple[float, str, bool]:
    took, r = timed(lab, [str(BIN / "pynat"), "--stun-host", A.COTURN_IP, "--stun-port", "3478", "--source-port",
                          str(random.randint(20000, 60000))])
    m = re.search(r"Network type:\s*(.+)", r.stdout)
    answer = m.group(1).strip() if m else (r.stdout + r.stderr).strip()[-80:]
    return took, answer, norm(expected) in norm(answer).replace("portrestricted", "portrestrictedcone") or \
        norm(answer).startswith(norm(expected))


def run_natdiscovery(lab: Lab, mapping: str, filtering: str) -> tuple[float, str, bool]:
    took, r = timed(lab, ["turnutils_natdiscovery", "-m", "-f", A.COTURN_IP])
    text = r.stdout + r.stderr
    found_m = re.findall(r"NAT with (.+?) Mapping", text) or re.findall(r"(No NAT)", text)
    found_f = re.findall(r"NAT with (.+?) Filtering", text)
    answer = f"mapping={found_m[-1] if found_m else '?'} filtering={found_f[-1] if found_f else '?'}"
    want_m = {"endpoint-independent": "Endpoint Independent", "address-dependent": "Address Dependent",
              "address-and-port-dependent": "Address and Port Dependent", "no-nat": "No NAT"}[mapping]
    want_f = {"endpoint-independent": "Endpoint Independent", "address-dependent": "Address Dependent",
              "address-and-port-dependent": "Address and Port Dependent"}[filtering]
    ok = bool(found_m) and norm(found_m[-1]) == norm(want_m) and bool(found_f) and norm(found_f[-1]) == norm(want_f)
    return took, answer, ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="port-restricted", choices=sorted(TRUTH_WORDS))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--delay-ms", type=float, default=25.0, help="one-way delay on the subscriber link")
    ap.add_argument("--loss", type=float, default=0.0, help="loss percent per direction on the subscriber link")
    ap.add_argument("--tcp", action="store_true", help="test 30303/tcp as well as 30303/udp")
    ap.add_argument("--lossy", action="store_true",
                    help="issue 9's target: --delay-ms 50 --loss 10 --tcp --runs 10 --nodereach-only")
    ap.add_argument("--nodereach-only", action="store_true", help="skip the peer tools (quick A/B runs)")
    ap.add_argument("--node", action="store_true", help="real monerod in the client: --port 18080/tcp --node monero")
    ap.add_argument("--dual-stack", action="store_true", help="serve with two addresses per family, check with "
                                                              "the IPv4 and the IPv6 server (issue 11)")
    ap.add_argument("--baseline", metavar="TREE", help="alternate every run with the check of this source tree "
                                                       "(before/after in one lab)")
    ap.add_argument("--no-compile", action="store_true", help="do not byte-compile the trees first (measure a "
                                                               "start-up that compiles every module from source)")
    args = ap.parse_args(argv)
    if not args.no_compile:
        for tree in [str(REPO), *([args.baseline] if args.baseline else [])]:
            compileall.compile_dir(f"{tree}/src/nodereach", quiet=1)
    if args.lossy:
        args.delay_ms, args.loss, args.tcp, args.runs, args.nodereach_only = 50.0, 10.0, True, 10, True
    protocols = ("udp", "tcp") if args.tcp else ("udp",)
    runs = max(1, min(args.runs, 10))
    words, mapping, filtering = TRUTH_WORDS[args.scenario]
    rows: list[tuple[str, list[float], str, bool]] = []
    with Lab(args.scenario, delay_ms=args.delay_ms, loss=args.loss) as lab:
        six = ["--address", A.SERVER_IP6, "--alt-address", A.SERVER_ALT_IP6] if args.dual_stack else []
        if start_serve(lab, *six) is None:
            return 2
        lab.start_coturn(rfc5780=True)
        if args.node:
            start_monerod(lab)
        print(f"scenario {args.scenario}: ground truth {lab.truth.mapping} mapping, {lab.truth.filtering} "
              f"filtering, {lab.truth.layers} NAT layer(s), CGNAT {lab.truth.cgnat}; RTT {2 * args.delay_ms:.0f} ms, "
              f"loss {args.loss:g}% per direction")
        times: list[float] = []
        probe_times: list[float] = []
        base_times: list[float] = []
        base_probe: list[float] = []
        answer, ok, conclusive = "", True, 0
        base_answer, base_ok, base_conclusive = "", True, 0
        for run in range(runs):
            # With a baseline both trees start the same way (python -m nodereach.cli), in turns first (the
            # first of a pair may find the lab's caches or the host's load different).
            pair = [str(REPO), args.baseline] if run % 2 == 0 else [args.baseline, str(REPO)]
            for tree in (pair if args.baseline else [None]):
                if args.node:
                    took, text, good, doc = run_nodereach(lab, 18080, ("tcp",), node="monero", source=tree)
                else:
                    took, text, good, doc = run_nodereach(lab, 30303, protocols, dual_stack=args.dual_stack,
                                                          source=tree)
                if tree is not None and tree == args.baseline:
                    base_times.append(took)
                    base_probe.append(doc["duration_s"])
                    base_answer, base_ok, base_conclusive = text, base_ok and good, base_conclusive + good
                    if not good:
                        print(f"  inconclusive baseline run ({doc['duration_s']:.2f} s): {text}")
                    continue
                answer = text
                times.append(took)
                probe_times.append(doc["duration_s"])
                ok = ok and good
                conclusive += good
                if not good:
                    print(f"  inconclusive run ({doc['duration_s']:.2f} s): {answer}")
        rows.append((f"nodereach check ({len(protocols)} port{'s' if len(protocols) > 1 else ''})", times, answer, ok))
        if args.baseline:
            rows.append(("  baseline tree", base_times, base_answer, base_ok))
        peers: list[tuple[str, Any]] = [] if args.nodereach_only else [("pystun3 2.0", lambda: run_pystun3(lab, words))]
        if (BIN / "pynat").exists() and not args.nodereach_only:
            peers.append(("pynat 0.7", lambda: run_pynat(lab, words)))
        if shutil.which("turnutils_natdiscovery") and not args.nodereach_only:
            peers.append(("turnutils_natdiscovery -m -f", lambda: run_natdiscovery(lab, mapping, filtering)))
        for name, fn in peers:
            times, ok, answer = [], True, ""
            for _ in range(runs):
                took, answer, good = fn()
                times.append(took)
                ok = ok and good
            rows.append((name, times, answer, ok))
    base = statistics.median(rows[0][1])
    print(f"\n{'tool':32} {'median s':>9} {'min s':>7} {'x nodereach':>11}  right  answer")
    for name, times, answer, ok in rows:
        med = statistics.median(times)
        print(f"{name:32} {med:9.2f} {min(times):7.2f} {med / base:11.1f}  {'yes' if ok else 'NO ':5}  {answer}")
    print(f"\nnodereach in-process probing time (duration_s): median {statistics.median(probe_times):.2f} s, "
          f"min {min(probe_times):.2f} s, max {max(probe_times):.2f} s; process wall time adds interpreter start-up "
          f"and `ip netns exec`. Conclusive runs: {conclusive} of {runs}.")
    if base_probe:
        print(f"baseline tree {args.baseline}: probing median {statistics.median(base_probe):.2f} s, min "
              f"{min(base_probe):.2f} s, max {max(base_probe):.2f} s; conclusive {base_conclusive} of {runs} (runs "
              f"alternated with this tree's in the same lab, each tree first in turn)")
    print("Why RFC 3489 tools can misread a port-restricted Linux NAT as symmetric: their CHANGE-REQUEST test runs "
          "on the same socket before the mapping test; the filtered reply from the alternate address leaves an "
          "UNREPLIED conntrack entry on the router that blocks the preserved port toward that address, so the "
          "next mapping gets a new port. nodereach runs mapping and filtering tests on separate sockets.")
    print("Only nodereach also measured: NAT layers, CGNAT, outbound port filters, the node's port from outside "
          "(dial-back), gateway port-mapping protocols, and advice.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
