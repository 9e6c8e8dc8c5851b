"""Running `nodereach serve` inside a lab's `server` host, and asking it things from other lab hosts."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nodereach.lab import Lab, netns
from nodereach.lab import addresses as A
from nodereach.reach.client import DialBackResult, probe_port

SERVER = A.SERVER_IP
URL = f"http://{A.SERVER_IP}:3480"
URL6 = f"http://[{A.SERVER_IP6}]:3480"
IPV6_PAIR = ("--address", A.SERVER_IP6, "--alt-address", A.SERVER_ALT_IP6)
"""Add to serving(): RFC 5780 and dial-back over IPv6 too, from the server's second IPv6 address."""


def http(url: str, data: bytes | None = None, timeout: float = 5.0,
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    hdrs = {"Content-Type": "application/json"} if data is not None else {}
    hdrs.update(headers or {})
    req = urllib.request.Request(url, data=data, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_in(lab: Lab, host: str, path: str, body: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None, timeout: float = 5.0, url: str = URL,
            ) -> tuple[int, dict[str, Any] | str]:
    data = None if body is None else json.dumps(body).encode()
    status, raw = lab.call_in(host, http, url + path, data, timeout, headers)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_ready(lab: Lab, proc: subprocess.Popen[Any], log: Path, deadline: float = 20.0) -> None:
    """Ready when THIS serve logged its start (it bound every socket) and answers /healthz: a /healthz answer
    alone could come from another server still running in a shared lab."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if '"event":"start"' in log.read_text(errors="replace") \
                    and lab.call_in("peer", http, URL + "/healthz", None, 0.5)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"serve not ready: {log.read_text()[-2000:]}")


@contextmanager
def serving(lab: Lab, tmp: Path, *extra: str, ipv4_pair: bool = True) -> Iterator[subprocess.Popen[Any]]:
    """`nodereach serve --address 203.0.113.10 --alt-address 203.0.113.11` (default ports) in `server`;
    `ipv4_pair=False` leaves those out (with no `--address` in `extra`: serve's dual-stack default)."""
    log = tmp / "serve.log"
    lab.stop_spawned("server")  # e.g. the dual-stack serve the check tests keep running in a shared lab
    pair = ["--address", A.SERVER_IP, "--alt-address", A.SERVER_ALT_IP] if ipv4_pair else []
    argv = [sys.executable, "-m", "nodereach.cli", "serve", *pair, "--log-json", *extra]
    with log.open("wb") as fh:
        proc = lab.spawn("server", argv, stdout=fh, stderr=fh)
    try:
        wait_ready(lab, proc, log)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def probe_from(lab: Lab, host: str, port: int, protocol: str, *, timeout: float = 3.0,  # noqa: ASYNC109
                     listen: bool = True) -> DialBackResult:
    fn = functools.partial(probe_port, SERVER, port, protocol, timeout=timeout, listen=listen)
    return await lab.run_async(host, fn)


def nft_counters(lab: Lab, host: str, table: str) -> dict[str, tuple[int, int]]:
    """Named counters of an nft table in `host`: name -> (packets, bytes)."""
    out = netns.run(["ip", "netns", "exec", lab.ns(host), "nft", "-j", "list", "table", "inet", table]).stdout
    doc = json.loads(out)
    res: dict[str, tuple[int, int]] = {}
    for item in doc["nftables"]:
        c = item.get("counter")
        if c and "name" in c:
            res[c["name"]] = (c["packets"], c["bytes"])
    return res
