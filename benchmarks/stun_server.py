"""STUN Binding throughput: nodereach's server vs coturn --stun-only, same load generator, same run.

    .venv/bin/python benchmarks/stun_server.py [--seconds 3] [--workers 2] [--request fingerprint]

Every server listens on 127.0.0.1 (free port); the load generator is a separate process (bounded by
--seconds and --max-requests) keeping a window of requests in flight on several sockets, and counts
matching replies. Reported: replies/s per server and the ratio to coturn single-threaded (`-m 0`).
`--request plain` (default) sends a bare 20-byte Binding request, which nodereach answers from precomputed
bytes in its UDP driver. The other kinds carry attributes every server must parse and check; nodereach
answers them on its second fast path (stun/fastpath.py; the full path, parser + attribute table + encoder,
before it existed): `fingerprint` adds FINGERPRINT (28 bytes, WebRTC and most libraries), `software`
SOFTWARE + FINGERPRINT (48 bytes, libnice / aioice style), `change` a CHANGE-REQUEST that changes nothing
(28 bytes: RFC 5780 clients; the reply comes from the address asked, so the load generator's connected
sockets receive it).
Then the memory of the rate limiter holding 100k distinct source addresses (simulated in the limiter).
"""

from __future__ import annotations

import argparse
import binascii
import contextlib
import gc
import json
import os
import resource
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQ = bytes.fromhex("000100002112a442") + b"nodereachben"
_WITH_FP = bytes.fromhex("000100082112a442") + b"nodereachben"
_SOFTWARE = b"libnice 0.1.21\x00\x00"  # 14 bytes + padding
_WITH_SW = bytes.fromhex("0001001c2112a442") + b"nodereachben" + bytes.fromhex("8022000e") + _SOFTWARE


def _fingerprinted(head: bytes) -> bytes:
    return head + bytes.fromhex("80280004") + (binascii.crc32(head) ^ 0x5354554E).to_bytes(4, "big")


REQUESTS = {"plain": REQ,
            "fingerprint": _fingerprinted(_WITH_FP),
            "software": _fingerprinted(_WITH_SW),
            "change": bytes.fromhex("000100082112a442") + b"nodereachben" + bytes.fromhex("0003000400000000")}


# --- load generator (runs as its own process) ----------------------------------------------------------
def load(host: str, port: int, seconds: float, max_requests: int, sockets: int = 4, window: int = 64,
         req: bytes = REQ) -> dict:
    """Keep `window` requests in flight per socket; a silent 20 ms means loss: refill the window."""
    socks = []
    for _ in range(sockets):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind(("127.0.0.1", 0))
        s.connect((host, port))
        s.setblocking(False)
        socks.append(s)
    outstanding = {s.fileno(): 0 for s in socks}
    by_fd = {s.fileno(): s for s in socks}
    sent = received = 0
    buf = bytearray(2048)
    start = time.perf_counter()
    end = start + seconds
    while sent < max_requests:
        for s in socks:
            fd = s.fileno()
            n = window - outstanding[fd]
            for _ in range(n):
                try:
                    s.send(req)
                except BlockingIOError:
                    break
                sent += 1
                outstanding[fd] += 1
        ready, _, _ = select.select(socks, [], [], 0.02)
        if not ready:
            if time.perf_counter() > end:
                break
            for fd in outstanding:  # lost: refill
                outstanding[fd] = 0
            continue
        for s in ready:
            fd = s.fileno()
            while True:
                try:
                    n = s.recv_into(buf)
                except BlockingIOError:
                    break
                if n >= 20 and buf[8:20] == REQ[8:20]:
                    received += 1
                if outstanding[fd] > 0:
                    outstanding[fd] -= 1
        if time.perf_counter() > end:
            break
    elapsed = time.perf_counter() - start
    for s in by_fd.values():
        s.close()
    return {"sent": sent, "received": received, "seconds": elapsed, "rate": received / elapsed}


def run_load(port: int, seconds: float, max_requests: int, request: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--load", str(port), "--seconds", str(seconds),
                          "--max-requests", str(max_requests), "--request", request], capture_output=True, text=True,
                         timeout=seconds + 30, check=True)
    return json.loads(out.stdout)


# --- servers -------------------------------------------------------------------------------------------
def wait_ready(port: int, proc: subprocess.Popen, deadline_s: float = 10) -> None:
    deadline = time.monotonic() + deadline_s
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.05)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.args}")
            s.sendto(REQ, ("127.0.0.1", port))
            with contextlib.suppress(OSError):
                if s.recvfrom(2048)[0][8:20] == REQ[8:20]:
                    return
    raise RuntimeError("server did not answer")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        t.bind(("127.0.0.1", port))
        return port


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def start_coturn(port: int, threads: int, tmp: str) -> list[subprocess.Popen]:
    argv = ["turnserver", "-n", "--stun-only", "--no-cli", "--no-tls", "--no-dtls", "--no-tcp", "--log-file",
            f"{tmp}/coturn.log", "--simple-log", "--pidfile", f"{tmp}/coturn.pid", "-L", "127.0.0.1",
            "--listening-port", str(port), "--alt-listening-port", str(free_port()), "-m", str(threads)]
    return [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                             start_new_session=True)]


def start_nodereach(port: int, workers: int, uvloop: bool) -> list[subprocess.Popen]:
    argv = [sys.executable, "-m", "nodereach.stun", "--address", "127.0.0.1", "--port", str(port),
            "--no-tcp", "--rate", "1e9", "--burst", "1e9", "--workers", str(workers)]
    if uvloop:
        argv.append("--uvloop")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.PIPE)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 15)  # the JSON line comes once every worker is bound
    if not ready or not proc.stdout.readline():
        stop([proc])
        raise RuntimeError("nodereach server did not start")
    return [proc]


def _family(pid: int) -> list[int]:
    """pid and its children (the SO_REUSEPORT workers a launcher started)."""
    pids = [pid]
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):  # children belong to the thread that forked them
            with open(f"/proc/{pid}/task/{task}/children") as f:
                pids += [int(c) for c in f.read().split()]
    return pids


def cpu_seconds(procs: list[subprocess.Popen]) -> float:
    """User + system CPU time of the server processes (all threads), from /proc."""
    total = 0
    for pid in (q for p in procs for q in _family(p.pid)):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def measure(name: str, starter, seconds: float, max_requests: int,  # type: ignore[no-untyped-def]
            request: str = "plain") -> dict:
    port = free_port()
    procs = starter(port)
    try:
        wait_ready(port, procs[0])
        cpu0 = cpu_seconds(procs)
        result = run_load(port, seconds, max_requests, request)
        cpu = cpu_seconds(procs) - cpu0
    finally:
        stop(procs)
    result["name"] = name
    result["cpu"] = cpu
    result["per_core"] = result["received"] / cpu if cpu > 0 else float("nan")
    print(f"{name:<44} {result['rate']:>9,.0f} replies/s  {result['per_core']:>9,.0f} replies per CPU-second  "
          f"(sent {result['sent']:,}, got {result['received']:,}, server CPU {cpu:.2f}s)", flush=True)
    return result


# --- memory of the rate limiter ------------------------------------------------------------------------
def limiter_memory(n: int = 100_000) -> dict:
    """Fill a limiter with n distinct 127.x.y.z sources (the strings recvfrom would hand us)."""
    from nodereach.stun.ratelimit import SourceRateLimiter

    def fill(lim: SourceRateLimiter, first_octet: int) -> None:
        now = time.monotonic()
        for i in range(n):
            lim.allow(f"{first_octet}.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", now)

    gc.collect()
    rss0 = _rss_kib()
    lim = SourceRateLimiter(rate_per_s=50, burst=100, max_sources=n)
    fill(lim, 127)
    rss1 = _rss_kib()
    fill(lim, 10)  # a second wave of new sources: eviction keeps memory bounded
    rss2 = _rss_kib()
    del lim
    gc.collect()
    tracemalloc.start()
    lim = SourceRateLimiter(rate_per_s=50, burst=100, max_sources=n)
    fill(lim, 127)
    current, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"sources": len(lim), "traced_bytes": current, "bytes_per_source": current / n,
            "rss_growth_kib": rss1 - rss0, "rss_after_second_wave_kib": rss2 - rss0}


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=3.0, help="load time per server")
    p.add_argument("--max-requests", type=int, default=2_000_000, help="cap on requests per server")
    p.add_argument("--workers", type=int, default=2, help="SO_REUSEPORT workers for the multi-process row")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best run per server is kept")
    p.add_argument("--request", choices=sorted(REQUESTS), default="plain",
                   help="plain: 20-byte request; fingerprint, software, change: with attributes (module doc)")
    p.add_argument("--load", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.load:
        print(json.dumps(load("127.0.0.1", a.load, a.seconds, a.max_requests, req=REQUESTS[a.request])))
        return
    if shutil.which("turnserver") is None:
        sys.exit("coturn (turnserver) is needed for the comparison: apt-get install coturn")
    try:
        import uvloop  # noqa: F401
        have_uvloop = True
    except ImportError:
        have_uvloop = False
    print(f"STUN Binding replies/s on loopback, {os.cpu_count()} cores, one load process, {a.seconds:.0f}s per "
          f"run, {a.rounds} interleaved rounds (best kept: other work on the machine only slows runs down), "
          f"{a.request} requests of {len(REQUESTS[a.request])} bytes\n")
    tmp = tempfile.mkdtemp(prefix="nr-bench-")
    ncpu = os.cpu_count() or 1
    servers = [("coturn1", "coturn --stun-only, single thread (-m 0)", lambda port: start_coturn(port, 0, tmp)),
               ("coturnN", f"coturn --stun-only, {ncpu} relay threads", lambda port: start_coturn(port, ncpu, tmp)),
               ("asyncio", "nodereach, asyncio, 1 process", lambda port: start_nodereach(port, 1, False))]
    if have_uvloop:
        servers += [("uvloop", "nodereach, uvloop, 1 process", lambda port: start_nodereach(port, 1, True)),
                    ("workers", f"nodereach, uvloop, {a.workers} SO_REUSEPORT workers",
                     lambda port: start_nodereach(port, a.workers, True))]
    best: dict[str, dict] = {}
    try:
        for rnd in range(a.rounds):
            print(f"round {rnd + 1}")
            for key, name, starter in servers:
                r = measure(name, starter, a.seconds, a.max_requests, a.request)
                if key not in best or r["rate"] > best[key]["rate"]:
                    best[key] = r
                eff = f"{key}_cpu"
                if eff not in best or r["per_core"] > best[eff]["per_core"]:
                    best[eff] = r
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\nbest of rounds (throughput is capped by the one Python load process; replies per CPU-second of the")
    print("server is the per-core rate, and is robust to other load on the machine):")
    for key, name, _ in servers:
        print(f"  {name:<44} {best[key]['rate']:>9,.0f} replies/s   {best[key + '_cpu']['per_core']:>9,.0f} "
              "replies per CPU-second")
    print()
    c1, cn = best["coturn1"], best["coturnN"]
    for key, name, _ in servers[2:]:
        r, e = best[key], best[key + "_cpu"]
        print(f"ratio {name:<42} throughput / coturn 1 thread = {r['rate'] / c1['rate']:.2f}, / coturn {ncpu} "
              f"threads = {r['rate'] / cn['rate']:.2f};  per core / coturn 1 thread = "
              f"{e['per_core'] / best['coturn1_cpu']['per_core']:.2f}")
    mem = limiter_memory()
    print(f"\nrate limiter with {mem['sources']:,} distinct sources: {mem['traced_bytes'] / 2**20:.1f} MiB traced "
          f"({mem['bytes_per_source']:.0f} B/source), RSS +{mem['rss_growth_kib'] / 1024:.1f} MiB; after another "
          f"100k new sources (evicting): RSS +{mem['rss_after_second_wave_kib'] / 1024:.1f} MiB (bounded)")


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(ROOT, "src"))
    main()
