"""Load on `nodereach serve` (loopback): STUN binding rate next to coturn, dial-back probes/s, memory at 10k clients.

    .venv/bin/python benchmarks/serve_load.py [--seconds 5] [--clients 10000]

Both STUN servers run as real processes in RFC 5780 mode (127.0.0.1 + 127.0.0.2) and get the same load from
one Python generator (a window of outstanding requests); nodereach's per-source STUN rate limit is disabled
for the run, dial-back limits are loosened (one source address would otherwise be rate limited, as it should).
Memory: the serve process's RSS before and after 10k distinct client addresses (127.1.x.y on lo) each made
one STUN request and one dial-back probe. Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

WINDOW = 64
POOL = 4096


def free_port(kind: socket.SocketKind = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(samples: list[float], p: float) -> float:
    if not samples:
        return float("nan")
    s = sorted(samples)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] * 1000


def wait_stun(port: int, deadline: float) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.1)
        while time.monotonic() < deadline:
            s.sendto(b"\x00\x01\x00\x00\x21\x12\xa4\x42" + os.urandom(12), ("127.0.0.1", port))
            try:
                if s.recv(2048)[:2] == b"\x01\x01":
                    return True
            except OSError:
                pass
    return False


def stun_load(port: int, seconds: float) -> dict[str, float]:
    """Keep WINDOW binding requests outstanding for `seconds`; replies/s and latency percentiles."""
    reqs = [b"\x00\x01\x00\x00\x21\x12\xa4\x42" + i.to_bytes(4, "big") + os.urandom(8) for i in range(POOL)]
    sent_at = [0.0] * POOL
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    dst = ("127.0.0.1", port)
    seq = sent = replies = outstanding = 0
    lat: list[float] = []
    start = time.perf_counter()
    end = start + seconds
    now = start
    while now < end:
        while outstanding < WINDOW:
            i = seq % POOL
            sent_at[i] = time.perf_counter()
            try:
                s.sendto(reqs[i], dst)
            except BlockingIOError:
                break
            seq += 1
            sent += 1
            outstanding += 1
        ready, _, _ = select.select([s], [], [], 0.2)
        if not ready:
            outstanding = 0  # the window was lost (dropped or rate limited): refill
        now = time.perf_counter()
        while True:
            try:
                data = s.recv(2048)
            except BlockingIOError:
                break
            if len(data) >= 20:
                i = int.from_bytes(data[8:12], "big") % POOL
                replies += 1
                outstanding = max(0, outstanding - 1)
                if replies % 8 == 0:
                    lat.append(now - sent_at[i])
        now = time.perf_counter()
    s.close()
    took = now - start
    return {"sent": sent, "replies": replies, "replies_per_s": replies / took, "loss_pct": 100 * (1 - replies / sent),
            "p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90), "p99_ms": pct(lat, 99)}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Serve:
    def __init__(self, tmp: Path) -> None:
        self.stun, self.alt, self.http = free_port(), free_port(), free_port(socket.SOCK_STREAM)
        cfg = tmp / "serve.toml"
        cfg.write_text("""
log_level = "warning"
[stun]
rate_per_s = 0.0
[dialback]
address_burst = 1000000
address_rate = 1000000
network_burst = 1000000
network_rate = 1000000
max_ports_per_window = 100000
max_in_flight = 256
max_in_flight_per_address = 256
max_connections_per_address = 4096
max_connections = 8192
""")
        self.log = (tmp / "serve.log").open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "nodereach.cli", "serve", "--address", "127.0.0.1",
                                      "--alt-address", "127.0.0.2", "--stun-port", str(self.stun), "--alt-port",
                                      str(self.alt), "--http-port", str(self.http), "--config", str(cfg)],
                                     stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/healthz", timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("nodereach serve did not start")

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/metrics", timeout=5) as r:
            text = r.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def start_coturn(tmp: Path) -> tuple[subprocess.Popen[bytes], int] | None:
    if shutil.which("turnserver") is None:
        return None
    port, alt = free_port(), free_port()
    argv = ["turnserver", "-n", "--stun-only", "--no-cli", "--no-tls", "--no-dtls", "--log-file", "stdout",
            "--simple-log", "--listening-port", str(port), "--alt-listening-port", str(alt),
            "--pidfile", str(tmp / "turnserver.pid"), "-L", "127.0.0.1", "-L", "127.0.0.2"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    if not wait_stun(port, time.monotonic() + 10):
        proc.kill()
        proc.wait()
        return None
    return proc, port


async def http_probe(port: int, body: bytes, local: str | None = None) -> tuple[int, float]:
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(local, 0) if local else None)
    writer.write(b"POST /v1/probe HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nConnection: close\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    data = await reader.read()
    writer.close()
    return int(data[9:12] or b"0"), time.perf_counter() - start


async def probe_load(port: int, target: int, protocol: str, seconds: float, concurrency: int = 32) -> dict[str, Any]:
    body = json.dumps({"port": target, "protocol": protocol}).encode()
    lat: list[float] = []
    codes: dict[int, int] = {}
    end = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < end:
            code, took = await http_probe(port, body)
            codes[code] = codes.get(code, 0) + 1
            lat.append(took)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    took = time.perf_counter() - start
    return {"probes": len(lat), "probes_per_s": len(lat) / took, "codes": codes,
            "p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90), "p99_ms": pct(lat, 99)}


async def many_clients(serve: Serve, n: int, deadline: float) -> dict[str, Any]:
    """n distinct source addresses: one STUN request and one dial-back probe each."""
    addrs = [f"127.1.{i // 250}.{i % 250 + 1}" for i in range(n)]
    sem = asyncio.Semaphore(64)
    ok = {"stun": 0, "probe": 0}
    body = json.dumps({"port": 40999, "protocol": "udp"}).encode()

    def stun_from(addr: str) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((addr, 0))
            s.settimeout(0.5)
            s.sendto(b"\x00\x01\x00\x00\x21\x12\xa4\x42" + os.urandom(12), ("127.0.0.1", serve.stun))
            try:
                if s.recv(2048)[:2] == b"\x01\x01":
                    ok["stun"] += 1
            except OSError:
                pass

    async def one(addr: str) -> None:
        async with sem:
            if time.monotonic() > deadline:
                return
            await asyncio.to_thread(stun_from, addr)
            try:
                code, _ = await http_probe(serve.http, body, local=addr)
                ok["probe"] += code == 200
            except OSError:
                pass

    await asyncio.gather(*(one(a) for a in addrs))
    return ok


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=10_000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nodereach-bench-"))
    serve = Serve(tmp)
    coturn = start_coturn(tmp)
    results: dict[str, Any] = {}
    try:
        stun_load(serve.stun, 0.5)  # warm up
        results["stun_nodereach"] = stun_load(serve.stun, args.seconds)
        if coturn is not None:
            stun_load(coturn[1], 0.5)
            results["stun_coturn"] = stun_load(coturn[1], args.seconds)

        # Dial-back: a closed TCP port (refused), a listening TCP port (handshake), a closed UDP port (ICMP).
        lst = socket.socket()
        lst.bind(("127.0.0.1", 0))
        lst.listen(4096)
        stop = threading.Event()

        def accept_loop() -> None:
            lst.settimeout(0.2)
            while not stop.is_set():
                try:
                    c, _ = lst.accept()
                    c.close()
                except OSError:
                    pass

        t = threading.Thread(target=accept_loop, daemon=True)
        t.start()
        results["dialback_tcp_open"] = asyncio.run(probe_load(serve.http, lst.getsockname()[1], "tcp",
                                                              args.seconds))
        results["dialback_tcp_refused"] = asyncio.run(probe_load(serve.http, free_port(socket.SOCK_STREAM), "tcp",
                                                                 args.seconds))
        results["dialback_udp_refused"] = asyncio.run(probe_load(serve.http, free_port(), "udp", args.seconds))
        stop.set()
        t.join()
        lst.close()

        before = rss_kb(serve.proc.pid)
        start = time.monotonic()
        ok = asyncio.run(many_clients(serve, args.clients, time.monotonic() + 120))
        after = rss_kb(serve.proc.pid)
        results["memory"] = {"clients": args.clients, "seconds": round(time.monotonic() - start, 1),
                             "stun_answered": ok["stun"], "probes_answered": ok["probe"],
                             "rss_before_kb": before, "rss_after_kb": after,
                             "tracked_addresses": serve.metric('nodereach_limiter_tracked{kind="address"}'),
                             "per_client_bytes": round((after - before) * 1024 / max(1, args.clients))}
    finally:
        serve.stop()
        if coturn is not None:
            coturn[0].terminate()
            coturn[0].wait(10)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nSTUN binding (loopback, RFC 5780 mode, window {WINDOW}, {args.seconds:.0f} s each, one Python client)")
    print(f"{'server':<12} {'replies/s':>10} {'loss %':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7}")
    for name in ("stun_nodereach", "stun_coturn"):
        r = results.get(name)
        if r:
            print(f"{name[5:]:<12} {r['replies_per_s']:>10.0f} {r['loss_pct']:>7.2f} {r['p50_ms']:>7.2f} "
                  f"{r['p90_ms']:>7.2f} {r['p99_ms']:>7.2f}")
    if "stun_coturn" in results:
        ratio = results["stun_nodereach"]["replies_per_s"] / results["stun_coturn"]["replies_per_s"]
        print(f"nodereach / coturn: {ratio:.2f}")
    print("\nDial-back probes (HTTP POST /v1/probe, 32 concurrent, new connection each)")
    print(f"{'case':<14} {'probes/s':>9} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7}  codes")
    for name in ("dialback_tcp_open", "dialback_tcp_refused", "dialback_udp_refused"):
        r = results[name]
        print(f"{name[9:]:<14} {r['probes_per_s']:>9.0f} {r['p50_ms']:>7.2f} {r['p90_ms']:>7.2f} "
              f"{r['p99_ms']:>7.2f}  {r['codes']}")
    m = results["memory"]
    print(f"\nMemory: {m['clients']} distinct clients (1 STUN + 1 probe each, {m['seconds']} s): RSS "
          f"{m['rss_before_kb'] / 1024:.1f} -> {m['rss_after_kb'] / 1024:.1f} MiB "
          f"(~{m['per_client_bytes']} B/client); limiter tracks {m['tracked_addresses']:.0f} addresses; "
          f"answered STUN {m['stun_answered']}, probes {m['probes_answered']}")
    print("\n" + json.dumps(results, default=lambda x: round(x, 3) if isinstance(x, float) else str(x)))


if __name__ == "__main__":
    main()
