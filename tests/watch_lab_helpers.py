"""Running `nodereach watch` and a real Prometheus inside a lab host, and reading what they say."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nodereach.lab import Lab

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "nodereach-rules.yml"
PROMETHEUS_PORT = 9090
WATCH_METRICS = "127.0.0.1:3481"

FAST = {"interval": 1, "confirm-interval": 0.5, "hysteresis": 3, "check-interval": 20, "grace": 0,
        "check-timeout": 3}
"""The lab's watcher: the shipped logic at test speed (1 s probes, confirmations 0.5 s apart, 3 in a row)."""


def detection_bound(cfg: dict[str, Any]) -> float:
    """The documented bound for a cheap change: interval + (hysteresis - 1) * confirm-interval."""
    return float(cfg["interval"]) + (int(cfg["hysteresis"]) - 1) * float(cfg["confirm-interval"])


def _get(url: str, timeout: float = 3.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return bytes(r.read())


class Prometheus:
    """A real Prometheus (Debian's) in `host`, scraping the watcher every second and evaluating the shipped
    alert rules every second."""

    def __init__(self, lab: Lab, host: str, tmp: Path) -> None:
        self.lab, self.host = lab, host
        self.dir = tmp / "prometheus"
        self.dir.mkdir()
        (self.dir / "prometheus.yml").write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "nodereach-watch", "static_configs": [{"targets": [WATCH_METRICS]}]}],
        }))
        self.log = self.dir / "prometheus.log"
        with self.log.open("wb") as fh:
            self.proc = lab.spawn(host, ["prometheus", f"--config.file={self.dir / 'prometheus.yml'}",
                                         f"--storage.tsdb.path={self.dir / 'data'}",
                                         f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}", "--log.level=warn"],
                                  stdout=fh, stderr=fh)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.log.read_text()[-2000:]}")
            try:
                if lab.call_in(host, _get, f"http://127.0.0.1:{PROMETHEUS_PORT}/-/ready", 1.0):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"prometheus not ready: {self.log.read_text()[-2000:]}")

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        url = f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        doc = json.loads(self.lab.call_in(self.host, _get, url))
        assert doc["status"] == "success", doc
        return [(r["metric"], float(r["value"][1])) for r in doc["data"]["result"]]

    def wait(self, expr: str, within: float, pred: Callable[[list[tuple[dict[str, str], float]]], bool] = bool,
             ) -> float:
        """Seconds until `pred(query(expr))` holds; AssertionError with the last answer after `within`."""
        start = time.monotonic()
        last: list[tuple[dict[str, str], float]] = []
        while time.monotonic() - start < within:
            last = self.query(expr)
            if pred(last):
                return time.monotonic() - start
            time.sleep(0.2)
        raise AssertionError(f"{expr}: {last} after {within:.1f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Watching:
    """`nodereach watch` in `host` with a config file; events read from its stdout as they come."""

    def __init__(self, lab: Lab, host: str, tmp: Path, cfg: dict[str, Any]) -> None:
        self.lab, self.cfg = lab, cfg
        path = tmp / "watch.toml"
        path.write_text("[watch]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in cfg.items()))
        self.out = tmp / "watch.out"
        self.err = tmp / "watch.err"
        self.started = time.time()
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = lab.spawn(host, [sys.executable, "-m", "nodereach.cli", "watch", "--config", str(path)],
                                  stdout=out, stderr=err)

    def events(self) -> list[dict[str, Any]]:
        lines = self.out.read_bytes().splitlines()
        return [json.loads(line) for line in lines if line.startswith(b"{")]

    def wait_event(self, kind: str, within: float, after: float = 0.0,
                   pred: Callable[[dict[str, Any]], bool] = lambda e: True) -> dict[str, Any]:
        end = time.monotonic() + within
        while time.monotonic() < end:
            for e in self.events():
                if e["kind"] == kind and e["time"] >= after and pred(e):
                    return e
            if self.proc.poll() is not None:
                raise AssertionError(f"watch exited {self.proc.returncode}: {self.err.read_text()[-2000:]}")
            time.sleep(0.1)
        raise AssertionError(f"no {kind} event within {within:.1f} s: {[e['kind'] for e in self.events()]}\n"
                             f"{self.err.read_text()[-2000:]}")

    def kinds(self, after: float = 0.0) -> list[str]:
        return [e["kind"] for e in self.events() if e["time"] >= after]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("watch did not stop within 20 s of SIGTERM") from None


class TcpNode:
    """The node's TCP listener in `host` (what `watch` keeps reachable); close() and open() again."""

    def __init__(self, lab: Lab, host: str, port: int, *, dual_stack: bool = False) -> None:
        self.lab, self.host, self.port = lab, host, port
        self.dual_stack = dual_stack
        """True: one `[::]` socket that takes IPv4 too (IPV6_V6ONLY off), as node software listens on `::`."""
        self.sock: socket.socket | None = None
        self.open()

    def open(self) -> None:
        s = self.lab.socket(self.host, socket.AF_INET6 if self.dual_stack else socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.dual_stack:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::" if self.dual_stack else "0.0.0.0", self.port))
        s.listen(128)  # never accepted: each dial-back leaves one entry, a test makes a few dozen
        self.sock = s

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
