"""`nodereach watch` as an operator runs it, on loopback: a real `serve`, the real CLI process, a real scrape,
a real hook command; SIGTERM ends it cleanly. (The lab tests change the world; this proves the wiring.)"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from reach_helpers import free_port
from test_serve_command import Serve


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return r.read().decode()
    except OSError:
        return ""


def wait_for(pred: object, within: float) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_watch_end_to_end_on_loopback(tmp_path: Path) -> None:
    serve = Serve("--address", "127.0.0.1")
    serve.wait_ready()
    node = socket.socket()
    node.bind(("127.0.0.1", 0))
    node.listen()
    node_port = node.getsockname()[1]
    metrics_port = free_port()
    hooked = tmp_path / "hooked"
    argv = [sys.executable, "-m", "nodereach.cli", "watch", "--server", f"127.0.0.1:{serve.stun}", "--port",
            f"{node_port}/tcp", "--interval", "1", "--metrics", f"127.0.0.1:{metrics_port}", "--grace", "0",
            "--on-change", f"cat >> {hooked}"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: "nodereach_check_duration_seconds_count 1.0" in scrape(metrics_port), 30), \
            proc.stderr.read1().decode() if proc.poll() else ""  # type: ignore[union-attr]
        text = scrape(metrics_port)
        assert 'nodereach_public_address_info{address="127.0.0.1",family="4"} 1.0' in text
        assert 'nodereach_watch_errors_total{kind="server-unanswered"} 0.0' in text
        node.close()  # the node's listener goes away: declared after 3 probes 1 s apart
        assert wait_for(lambda: b"listener-gone" in hooked.read_bytes() if hooked.exists() else False, 15)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        serve.stop()
        node.close()
    assert proc.returncode == 0, err.decode()
    events = [json.loads(line) for line in out.decode().splitlines()]
    assert events[0]["kind"] == "started" and events[-1]["kind"] == "stopped"
    gone = next(e for e in events if e["kind"] == "listener-gone")
    assert (gone["port"], gone["protocol"], gone["before"], gone["after"]) == (node_port, "tcp", True, False)
    assert all(e["schema"] == "nodereach.watch/1" for e in events)
    hook_lines = [json.loads(line) for line in hooked.read_text().splitlines()]
    assert [e["id"] for e in hook_lines] == [e["id"] for e in events]  # the same events, stopped included
    assert "metrics on http://127.0.0.1:" in err.decode()
    assert "Traceback" not in err.decode()


def test_usage_errors_are_one_line() -> None:
    for args, needle in ((["--metrics", "nonsense"], "bad --metrics"),
                         (["--keep-mapped"], "--keep-mapped needs the node's ports"),
                         (["--interval", "0"], "interval 0.0 is out of range"),
                         (["--node", "nonsense"], "unknown node kind")):
        ports = [] if args[0] == "--keep-mapped" else ["--port", "30303"]
        r = subprocess.run([sys.executable, "-m", "nodereach.cli", "watch", *ports, *args], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 2, (args, r.stderr)
        assert needle in r.stderr and "Traceback" not in r.stderr, r.stderr
