"""What `nodereach watch` costs, measured in a lab with the real parts, next to a peer tool in the same run.

    .venv/bin/python benchmarks/watch_cost.py [--minutes 10] [--check-seconds 90] [--peer-minutes 3]

A lab (`port-restricted`): `nodereach serve` on the simulated internet, the node's TCP port forwarded and a
listener on it, the watcher in the node's namespace with the shipped defaults (60 s probes, a full check every
900 s +-10%), scraped every 15 s as Prometheus would. Measured:

  * resident memory (VmRSS sampled every 10 s, and the peak VmHWM);
  * CPU when nothing changes: the watcher's utime+stime (and its reaped children's) over `--minutes`;
  * a full check's CPU and bytes: a second run with a check every 10 s, minus the idle rate;
  * bytes toward the servers (IP lengths, nftables counters in the node's namespace), per hour at the
    defaults: the idle rate plus 4 checks;
  * the load one `serve` takes from N watchers (default 10,000) at the defaults: the request rates that
    follows, replayed against the lab's `serve` (limits loosened: the whole fleet comes from one generator
    address) while its CPU and memory are measured.

`--memory-only`: only the resident memory, at the defaults and with `--keep-mapped` on a PCP router, on a
UPnP-only router (NAT-PMP/PCP off: the keeper's UPnP drivers), on a router without any port mapping (the
keeper retries) and, in a dual-stack lab, with a keeper per family (IPv4 mappings and IPv6 pinholes), each for
`--keep-mapped-minutes`; the idle window at the defaults is `--minutes`.

Every `--keep-mapped` case also reads /proc/PID/maps: the run fails (exit status 1, after the report) when
aiohttp or its C extensions are mapped in a keeper, or when the UPnP-only case did not map through UPnP.

Peer tool: Prometheus' blackbox_exporter (Debian `prometheus-blackbox-exporter`), the usual way to watch that
an endpoint is reachable, probing the dial-back port with `tcp_connect` once a minute, measured the same way.
Needs root. Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from nodereach.lab import Lab, netns
from nodereach.lab import addresses as A
from nodereach.watch.policy import DEFAULT_CHECK_PERIOD_S, DEFAULT_INTERVAL_S
from serve_lab_helpers import IPV6_PAIR, serving

PORT = 30303
TICK = os.sysconf("SC_CLK_TCK")
SCRAPE_EVERY_S = 15.0
SERVERS = (A.SERVER_IP, A.SERVER_ALT_IP)
COUNTERS = f"""
table inet wcost {{
  counter tx {{}}
  counter rx {{}}
  counter tx_stun {{}}
  counter tx_http {{}}
  chain out {{ type filter hook output priority 0; policy accept;
    ip daddr {{ {", ".join(SERVERS)} }} counter name tx
    ip daddr {{ {", ".join(SERVERS)} }} udp dport {{ 3478, 3479 }} counter name tx_stun
    ip daddr {{ {", ".join(SERVERS)} }} tcp dport 3480 counter name tx_http
  }}
  chain in {{ type filter hook input priority 0; policy accept;
    ip saddr {{ {", ".join(SERVERS)} }} counter name rx
  }}
}}
"""
WATCH_SRC = ""
"""--watch-src: the watcher runs from this source tree (a `git archive` of an older commit: before/after)."""
BLACKBOX_CONFIG = "modules:\n  tcp_connect:\n    prober: tcp\n    timeout: 5s\n"


def cpu_s(pid: int) -> float:
    """utime + stime of the process and of its children it has waited for (the check's helpers)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICK


def mem_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def counters(lab: Lab) -> dict[str, tuple[int, int]]:
    out = netns.run(["ip", "netns", "exec", lab.ns("client"), "nft", "-j", "list", "table", "inet", "wcost"]).stdout
    res: dict[str, tuple[int, int]] = {}
    for item in json.loads(out)["nftables"]:
        c = item.get("counter")
        if c and "name" in c:
            res[c["name"]] = (c["packets"], c["bytes"])
    return res


def get(lab: Lab, url: str, timeout: float = 5.0) -> str:
    def go() -> str:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return str(r.read().decode())

    return lab.call_in("client", go)


def metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


class Watcher:
    def __init__(self, lab: Lab, tmp: Path, *extra: str, server: str = A.SERVER_IP) -> None:
        self.lab = lab
        self.out = (tmp / f"watch-{time.monotonic_ns()}.out").open("wb")
        self.name = self.out.name
        argv = [sys.executable, "-m", "nodereach.cli", "watch", "--server", server, "--port", f"{PORT}/tcp",
                *extra]
        env = {**os.environ, "PYTHONPATH": WATCH_SRC} if WATCH_SRC else None
        self.proc = lab.spawn("client", argv, stdout=self.out, stderr=subprocess.STDOUT, env=env)
        self.pid = self.proc.pid  # `ip netns exec` execs the command: the same process

    def scrape(self) -> str:
        return get(self.lab, "http://127.0.0.1:3481/metrics")

    def checks(self) -> float:
        return metric(self.scrape(), "nodereach_check_duration_seconds_count") or 0.0

    def wait_checks(self, n: float, within: float) -> None:
        end = time.monotonic() + within
        while time.monotonic() < end:
            try:
                if self.checks() >= n:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"the watcher did not finish {n:.0f} checks in {within:.0f} s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.out.close()


def measure(lab: Lab, pid: int, seconds: float, scrape: Any) -> dict[str, float]:
    """CPU, memory and bytes of `pid` over `seconds`, scraping every SCRAPE_EVERY_S (bounded loop)."""
    c0, n0, t0 = cpu_s(pid), counters(lab), time.monotonic()
    rss: list[int] = []
    next_scrape = t0
    for _ in range(int(seconds / 1.0) + 2):
        now = time.monotonic()
        if now - t0 >= seconds:
            break
        if now >= next_scrape:
            scrape()
            next_scrape += SCRAPE_EVERY_S
        if not rss or int(now - t0) % 10 == 0:
            rss.append(mem_kb(pid, "VmRSS"))
        time.sleep(1.0)
    took = time.monotonic() - t0
    c1, n1 = cpu_s(pid), counters(lab)
    return {"seconds": took, "cpu_s": c1 - c0, "cpu_pct": 100 * (c1 - c0) / took,
            "rss_kb": max(rss), "rss_median_kb": sorted(rss)[len(rss) // 2], "hwm_kb": mem_kb(pid, "VmHWM"),
            "tx_bytes": n1["tx"][1] - n0["tx"][1], "tx_packets": n1["tx"][0] - n0["tx"][0],
            "rx_bytes": n1["rx"][1] - n0["rx"][1], "tx_stun_packets": n1["tx_stun"][0] - n0["tx_stun"][0],
            "tx_http_bytes": n1["tx_http"][1] - n0["tx_http"][1]}


def keep_mapped(lab: Lab, tmp: Path, minutes: float, *extra: str) -> dict[str, Any]:
    """A watcher with --keep-mapped and a second (UDP) port, measured over `minutes`; the method it mapped by."""
    w = Watcher(lab, tmp, "--keep-mapped", "--port", f"{PORT + 1}/udp", *extra)
    try:
        w.wait_checks(1, 60)
        res: dict[str, Any] = measure(lab, w.pid, minutes * 60, w.scrape)
        text = w.scrape()
        res["methods"] = sorted({(_label(line, "method", "") or "none") + "/IPv" + _label(line, "family", "4")
                                 for line in text.splitlines() if line.startswith("nodereach_mapping_lease")})
        res["method"] = ",".join(res["methods"]) or "none"
        res["http_stack"] = http_stack(modules(w.pid))
        return res
    finally:
        w.stop()


def dual_stack_keep_mapped(tmp: Path, minutes: float) -> dict[str, Any]:
    """--keep-mapped with servers of both families on the IPv6 home router: an IPv4 mapping and an IPv6
    pinhole, each kept by its own keeper (PCP for both)."""
    with Lab("ipv6-firewalled", home_router=True) as lab:
        node = lab.socket("client", socket.AF_INET6, socket.SOCK_STREAM)
        node.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        node.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        node.bind(("::", PORT))
        node.listen(1024)
        netns.nft(lab.ns("client"), COUNTERS)
        dual = tmp / "dual"
        dual.mkdir()
        try:
            with serving(lab, dual, *IPV6_PAIR):
                return keep_mapped(lab, dual, minutes, "--server", A.SERVER_IP6)
        finally:
            node.close()


def _label(line: str, name: str, default: str) -> str:
    return line.split(f'{name}="')[1].split('"')[0] if f'{name}="' in line else default


HTTP_STACK = ("aiohttp", "yarl", "multidict", "propcache", "frozenlist")
"""aiohttp and the C extensions it brings (async-upnp-client, pure Python, imports aiohttp unconditionally, so
its absence shows as theirs): none of them belongs in a watcher's process, whatever the router speaks."""


def http_stack(maps: str) -> list[str]:
    """Which of HTTP_STACK have shared objects mapped (/proc/PID/maps: pure Python modules never show)."""
    return [name for name in HTTP_STACK if f"/{name}/" in maps]


def check_lean(res: dict[str, Any]) -> list[str]:
    """What is wrong with the keepers' imports: every --keep-mapped case, the UPnP-only one included (which must
    have mapped through UPnP, or the check proves nothing), runs without aiohttp's stack."""
    wrong = []
    for key in ("keep_mapped", "keep_mapped_upnp", "keep_mapped_none", "keep_mapped_dual"):
        km = res.get(key)
        if km is not None and km["http_stack"]:
            wrong.append(f"{key}: {', '.join(km['http_stack'])} mapped in the watcher")
    upnp = res.get("keep_mapped_upnp")
    if upnp is not None and "upnp/IPv4" not in upnp["methods"]:
        wrong.append(f"keep_mapped_upnp: mapped by {upnp['method']}, not UPnP")
    return wrong


def modules(pid: int) -> str:
    """The shared objects and Python packages the process has mapped (what it imported, roughly)."""
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


def blackbox(lab: Lab, tmp: Path, minutes: float) -> dict[str, float] | None:
    binary = shutil.which("prometheus-blackbox-exporter")
    if binary is None:
        return None
    cfg = tmp / "blackbox.yml"
    cfg.write_text(BLACKBOX_CONFIG)
    log = (tmp / "blackbox.log").open("wb")
    proc = lab.spawn("client", [binary, f"--config.file={cfg}", "--web.listen-address=127.0.0.1:9115"],
                     stdout=log, stderr=log)
    url = f"http://127.0.0.1:9115/probe?module=tcp_connect&target={A.SERVER_IP}:3480"
    try:
        for _ in range(100):
            try:
                get(lab, url)
                break
            except OSError:
                time.sleep(0.1)
        last = [0.0]

        def probe_every_interval() -> None:  # what Prometheus does with a 60 s scrape of /probe
            if time.monotonic() - last[0] >= DEFAULT_INTERVAL_S:
                last[0] = time.monotonic()
                get(lab, url)

        return measure(lab, proc.pid, minutes * 60, probe_every_interval)
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def replay_fleet(lab: Lab, pid: int, stun_per_s: float, probes_per_s: float, seconds: float) -> dict[str, float]:
    """The fleet's request rates from the `peer` host: STUN Binding requests and dial-back probes (to a
    listening port of the peer), paced; serve's CPU and memory over the window."""
    stop = threading.Event()
    sent = {"stun": 0, "stun_ok": 0, "probe": 0, "probe_ok": 0}
    listener = lab.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((A.PEER_IP, 0))
    listener.listen(4096)
    target = listener.getsockname()[1]

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = listener.accept()
                c.close()
            except OSError:
                pass

    def stun() -> None:
        s = lab.socket("peer", socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.0)
        start = time.monotonic()
        while not stop.is_set():
            due = start + sent["stun"] / stun_per_s
            if time.monotonic() < due:
                time.sleep(min(0.01, due - time.monotonic()))
            else:
                s.sendto(b"\x00\x01\x00\x00\x21\x12\xa4\x42" + os.urandom(12), (A.SERVER_IP, 3478))
                sent["stun"] += 1
            try:
                while True:
                    s.recv(2048)
                    sent["stun_ok"] += 1
            except OSError:
                pass
        s.close()

    def probes() -> None:
        body = json.dumps({"port": target, "protocol": "tcp"}).encode()
        start = time.monotonic()

        def one() -> None:
            def go() -> int:
                req = urllib.request.Request(f"http://{A.SERVER_IP}:3480/v1/probe", data=body,
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=5) as r:
                    return int(r.status)

            with contextlib.suppress(OSError):
                sent["probe_ok"] += lab.call_in("peer", go) == 200

        while not stop.is_set():
            due = start + sent["probe"] / probes_per_s
            if time.monotonic() < due:
                time.sleep(min(0.05, due - time.monotonic()))
                continue
            sent["probe"] += 1
            threading.Thread(target=one, daemon=True).start()

    threads = [threading.Thread(target=f, daemon=True) for f in (accept, stun, probes)]
    for t in threads:
        t.start()
    time.sleep(2.0)  # warm up
    c0, t0 = cpu_s(pid), time.monotonic()
    time.sleep(seconds)
    c1, took = cpu_s(pid), time.monotonic() - t0
    rss = mem_kb(pid, "VmRSS")
    stop.set()
    for t in threads:
        t.join(5)
    listener.close()
    return {"cpu_pct": 100 * (c1 - c0) / took, "rss_kb": rss, **{k: float(v) for k, v in sent.items()}}


def run_the_rest(lab: Lab, tmp: Path, args: argparse.Namespace, res: dict[str, Any], serve_pid: int) -> None:
    """A full check's cost, the fleet on one serve, the peer tool."""
    # 2. a check every 10 s: the cost of one check
    w = Watcher(lab, tmp, "--check-interval", "10")
    try:
        w.wait_checks(1, 60)
        before = w.checks()
        m = measure(lab, w.pid, args.check_seconds, w.scrape)
        n = w.checks() - before
    finally:
        w.stop()
    idle = res["idle"]
    rate = idle["seconds"]
    res["per_check"] = {"checks": n,
                        "cpu_s": (m["cpu_s"] - idle["cpu_s"] / rate * m["seconds"]) / max(n, 1),
                        "tx_bytes": (m["tx_bytes"] - idle["tx_bytes"] / rate * m["seconds"]) / max(n, 1),
                        "rx_bytes": (m["rx_bytes"] - idle["rx_bytes"] / rate * m["seconds"]) / max(n, 1),
                        "stun_packets": (m["tx_stun_packets"] - idle["tx_stun_packets"] / rate
                                         * m["seconds"]) / max(n, 1),
                        "hwm_kb": m["hwm_kb"]}
    # 3. the fleet on one serve
    checks_per_h = 3600 / DEFAULT_CHECK_PERIOD_S
    stun_per_watcher_h = idle["tx_stun_packets"] / idle["seconds"] * 3600 \
        + checks_per_h * res["per_check"]["stun_packets"]
    fleet_stun = args.watchers * stun_per_watcher_h / 3600
    fleet_probes = args.watchers * checks_per_h / 3600  # one dial-back per tested port per check
    res["fleet"] = {"watchers": args.watchers, "stun_per_s": fleet_stun, "probes_per_s": fleet_probes,
                    **replay_fleet(lab, serve_pid, fleet_stun, fleet_probes, args.replay_seconds)}
    # 4. the peer tool
    res["blackbox"] = blackbox(lab, tmp, args.peer_minutes)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0, help="idle window at the defaults")
    ap.add_argument("--check-seconds", type=float, default=90.0, help="window with a check every 10 s")
    ap.add_argument("--peer-minutes", type=float, default=3.0)
    ap.add_argument("--keep-mapped-minutes", type=float, default=3.0, help="window with --keep-mapped (PCP router)")
    ap.add_argument("--watchers", type=int, default=10_000)
    ap.add_argument("--replay-seconds", type=float, default=30.0)
    ap.add_argument("--memory-only", action="store_true", help="only resident memory: defaults and --keep-mapped")
    ap.add_argument("--watch-src", default="", help="run the watcher from this src/ tree (before/after)")
    args = ap.parse_args()
    global WATCH_SRC
    WATCH_SRC = args.watch_src
    tmp = Path(tempfile.mkdtemp(prefix="nodereach-watch-cost-"))
    loose = tmp / "serve.toml"
    loose.write_text("[stun]\nrate_per_s = 0.0\n[dialback]\naddress_burst = 1000000\n"
                     "address_rate = 1000000\nnetwork_burst = 1000000\nnetwork_rate = 1000000\n"
                     "max_ports_per_window = 100000\nmax_in_flight = 256\nmax_in_flight_per_address = 256\n"
                     "max_connections_per_address = 4096\nmax_connections = 8192\n")
    res: dict[str, Any] = {}
    try:
        with Lab("port-restricted", home_router=True) as lab:
            lab.forward(PORT, "tcp")
            node = lab.socket("client", socket.AF_INET, socket.SOCK_STREAM)
            node.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            node.bind(("0.0.0.0", PORT))
            node.listen(1024)
            netns.nft(lab.ns("client"), COUNTERS)
            with serving(lab, tmp, "--config", str(loose)) as serve_proc:
                # 1. the defaults, nothing changing
                w = Watcher(lab, tmp)
                try:
                    w.wait_checks(1, 60)
                    time.sleep(2.0)
                    res["start_hwm_kb"] = mem_kb(w.pid, "VmHWM")
                    res["idle"] = measure(lab, w.pid, args.minutes * 60, w.scrape)
                    res["idle"]["checks"] = w.checks() - 1
                    res["idle_events"] = sum(1 for line in Path(w.name).read_bytes().splitlines()
                                             if line.startswith(b'{"schema"'))
                finally:
                    w.stop()
                # 1b. --keep-mapped through the home router's PCP (the keeper renews at half the lease, polls the
                # gateway every 30 s): a second mapped port, so the forward above is not what makes it reachable
                res["keep_mapped"] = keep_mapped(lab, tmp, args.keep_mapped_minutes)
                # 1c. the same on a router that offers UPnP IGD only: the keeper loads its UPnP drivers
                lab.start_miniupnpd(upnp=True, natpmp=False)
                try:
                    res["keep_mapped_upnp"] = keep_mapped(lab, tmp, args.keep_mapped_minutes)
                finally:
                    lab.start_miniupnpd(upnp=True, natpmp=True)
                # 1e. a router that offers no port mapping at all: the keeper retries with backoff (no IGD
                # answers its SSDP search, so the UPnP drivers are never loaded)
                lab.stop_miniupnpd()
                try:
                    res["keep_mapped_none"] = keep_mapped(lab, tmp, args.keep_mapped_minutes)
                finally:
                    lab.start_miniupnpd(upnp=True, natpmp=True)
                if not args.memory_only:
                    run_the_rest(lab, tmp, args, res, serve_proc.pid)
            node.close()
        # 1d. a dual-stack line (the IPv6 home router: PCP for both families): a keeper per family
        res["keep_mapped_dual"] = dual_stack_keep_mapped(tmp, args.keep_mapped_minutes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.memory_only:
        memory_report(res)
    else:
        report(res, args)
    wrong = check_lean(res)
    if wrong:
        raise SystemExit("FAIL: " + "; ".join(wrong))


def print_keep_mapped(res: dict[str, Any]) -> None:
    for key, router in (("keep_mapped", "PCP router"), ("keep_mapped_upnp", "UPnP-only router"),
                        ("keep_mapped_none", "router without port mapping"),
                        ("keep_mapped_dual", "dual-stack PCP router")):
        km = res.get(key)
        if km is None:
            continue
        print(f"  with --keep-mapped, {router} ({km['method']}, {km['seconds'] / 60:.1f} min): RSS "
              f"{km['rss_median_kb'] / 1024:.1f} MiB steady (max {km['rss_kb'] / 1024:.1f}, peak "
              f"{km['hwm_kb'] / 1024:.1f}), CPU {km['cpu_pct']:.3f}% of a core"
              f"{'; mapped: ' + ', '.join(km['http_stack']) if km['http_stack'] else '; no aiohttp stack mapped'}")


def memory_report(res: dict[str, Any]) -> None:
    idle = res["idle"]
    print(f"\nnodereach watch, resident memory (target < 40 MiB), one server, one port, scraped every "
          f"{SCRAPE_EVERY_S:.0f} s")
    print(f"  defaults ({idle['seconds'] / 60:.1f} min): RSS {idle['rss_median_kb'] / 1024:.1f} MiB steady (max "
          f"{idle['rss_kb'] / 1024:.1f}), peak {idle['hwm_kb'] / 1024:.1f} MiB")
    print_keep_mapped(res)
    print("\n" + json.dumps(res, default=lambda x: round(x, 4) if isinstance(x, float) else str(x)))


def report(res: dict[str, Any], args: argparse.Namespace) -> None:
    idle, per, fleet, bb = res["idle"], res["per_check"], res["fleet"], res["blackbox"]
    checks_h = 3600 / DEFAULT_CHECK_PERIOD_S
    cpu_h = idle["cpu_s"] / idle["seconds"] * 3600 + checks_h * per["cpu_s"]
    tx_h = idle["tx_bytes"] / idle["seconds"] * 3600 + checks_h * per["tx_bytes"]
    rx_h = idle["rx_bytes"] / idle["seconds"] * 3600 + checks_h * per["rx_bytes"]
    print(f"\nnodereach watch at the defaults ({DEFAULT_INTERVAL_S:.0f} s probes, a full check every "
          f"{DEFAULT_CHECK_PERIOD_S:.0f} s), one server, one port, scraped every {SCRAPE_EVERY_S:.0f} s")
    print(f"  memory: RSS {idle['rss_median_kb'] / 1024:.1f} MiB steady (max {idle['rss_kb'] / 1024:.1f}), "
          f"peak {max(idle['hwm_kb'], per['hwm_kb']) / 1024:.1f} MiB (target < 40 MiB)")
    print(f"  CPU, nothing changing, measured over {idle['seconds'] / 60:.1f} min ({idle['checks']:.0f} full checks "
          f"in it): {idle['cpu_pct']:.3f}% of a core")
    print(f"  one full check: {per['cpu_s'] * 1000:.0f} ms CPU (its helper processes included), "
          f"{per['tx_bytes']:.0f} B sent, {per['rx_bytes']:.0f} B received (from {per['checks']:.0f} checks)")
    print(f"  per hour at the defaults (measured idle rate + {checks_h:.0f} checks): CPU {cpu_h:.2f} s = "
          f"{100 * cpu_h / 3600:.3f}% of a core (target < 0.5%); toward the servers {tx_h / 1024:.1f} KiB sent, "
          f"{rx_h / 1024:.1f} KiB received")
    print(f"  events while nothing changed: {res['idle_events']} (started only)")
    print_keep_mapped(res)
    print(f"\nOne `serve` and {fleet['watchers']:,} watchers at the defaults: {fleet['stun_per_s']:.0f} STUN requests/s"
          f" + {fleet['probes_per_s']:.1f} dial-back probes/s per tested port")
    print(f"  replayed for {args.replay_seconds:.0f} s: serve used {fleet['cpu_pct']:.1f}% of a core, RSS "
          f"{fleet['rss_kb'] / 1024:.1f} MiB; answered {fleet['stun_ok']:.0f}/{fleet['stun']:.0f} STUN, "
          f"{fleet['probe_ok']:.0f}/{fleet['probe']:.0f} probes")
    if bb is None:
        print("\npeer tool: prometheus-blackbox-exporter not installed (apt-get install prometheus-blackbox-exporter)")
    else:
        print(f"\npeer tool, blackbox_exporter tcp_connect once a minute ({bb['seconds'] / 60:.1f} min): RSS "
              f"{bb['rss_median_kb'] / 1024:.1f} MiB, CPU {bb['cpu_pct']:.3f}% of a core, "
              f"{bb['tx_bytes'] / bb['seconds'] * 3600 / 1024:.1f} KiB/h sent")
        cpu_ratio = f"{cpu_h / 36 / bb['cpu_pct']:.1f}" if bb["cpu_pct"] > 0 else "n/a (blackbox below the clock tick)"
        print(f"  ratio watch / blackbox: RSS {idle['rss_median_kb'] / max(bb['rss_median_kb'], 1):.2f}, CPU "
              f"{cpu_ratio} (watch: STUN, listeners, full checks with dial-back; blackbox: one TCP connect)")
    print("\n" + json.dumps(res, default=lambda x: round(x, 4) if isinstance(x, float) else str(x)))


if __name__ == "__main__":
    main()
