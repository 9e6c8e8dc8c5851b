"""`nodereach serve` as a real process on loopback: STUN + dial-back + metrics, combinations, SIGTERM drain."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from nodereach.stun.message import StunMessage, parse_message
from reach_helpers import free_port, full_backlog_listener


def stun_binding(host: str, port: int, timeout: float = 1.0) -> StunMessage | None:
    """One raw RFC 5389 Binding request; the parsed answer or None. The socket is connected: an answer from
    any other address than the one asked is dropped, as a NAT or firewall on a real client's path would."""
    txid = os.urandom(12)
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        s.send(b"\x00\x01\x00\x00\x21\x12\xa4\x42" + txid)
        try:
            data = s.recv(2048)
        except (TimeoutError, ConnectionRefusedError):
            return None
    msg = parse_message(data)
    assert msg.transaction_id == txid
    return msg


def http(url: str, data: bytes | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Serve:
    def __init__(self, *args: str) -> None:
        self.args = args
        self._start()

    def _start(self) -> None:
        self.stun, self.alt, self.http = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM), free_port()
        self.argv = [sys.executable, "-m", "nodereach.cli", "serve", "--stun-port", str(self.stun),
                     "--alt-port", str(self.alt), "--http-port", str(self.http), "--log-json", *self.args]
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{self.http}"

    def wait_ready(self, deadline: float = 15.0, retries: int = 2) -> None:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode()
                # A free port was taken meanwhile (ephemeral range): again. HTTP says "cannot listen", STUN
                # "cannot bind STUN on ... Address already in use" (seen once with other suites on the machine).
                if retries and ("cannot listen" in err or "cannot bind" in err):
                    self._start()
                    return self.wait_ready(deadline, retries - 1)
                raise AssertionError(f"serve exited {self.proc.returncode}: {err}")
            try:
                if http(self.url + "/healthz", timeout=0.5)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("serve did not become ready")

    def stop(self, signal_it: bool = True) -> tuple[int, list[dict]]:
        if signal_it and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        err = self.proc.stderr.read().decode()
        return self.proc.returncode, [json.loads(line) for line in err.splitlines() if line.startswith("{")]


@pytest.fixture
def serve_full() -> Iterator[Serve]:
    s = Serve("--address", "127.0.0.1", "--alt-address", "127.0.0.2")
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


def test_full_stack_stun_dialback_metrics(serve_full: Serve) -> None:
    s = serve_full
    msg = stun_binding("127.0.0.1", s.stun)
    assert msg is not None and msg.other_address == ("127.0.0.2", s.alt)  # RFC 5780 mode
    assert stun_binding("127.0.0.2", s.alt) is not None
    status, body = http(s.url + "/v1/info")
    info = json.loads(body)
    assert status == 200 and info["stun"]["rfc5780"] is True and info["dialback"]["alt_address"] is True
    with socket.socket() as node:
        node.bind(("127.0.0.1", 0))
        node.listen(4)
        status, body = http(s.url + "/v1/probe", json.dumps({"port": node.getsockname()[1], "protocol": "tcp"})
                            .encode())
    doc = json.loads(body)
    assert status == 200 and doc["reachable"] is True and doc["source"] == "127.0.0.2"
    assert doc["second_address"] is True
    status, body = http(s.url + "/metrics")
    text = body.decode()
    assert 'nodereach_probes_total{outcome="ok",protocol="tcp"} 1.0' in text
    assert "nodereach_stun_requests_total 2.0" in text and "nodereach_stun_replies_total 2.0" in text
    code, logs = s.stop()
    assert code == 0
    events = [line.get("event") for line in logs]
    assert events[0] == "start" and "probe" in events and events[-2:] == ["drain", "stop"]


def test_sigterm_answers_probe_in_flight() -> None:
    s = Serve("--address", "127.0.0.1", "--no-stun")
    try:
        s.wait_ready()
        with full_backlog_listener() as port:
            sock = socket.create_connection(("127.0.0.1", s.http))
            body = json.dumps({"port": port, "protocol": "tcp", "timeout_ms": 1500}).encode()
            sock.sendall(b"POST /v1/probe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            time.sleep(0.3)  # the probe is now waiting for its SYN-ACK
            t0 = time.monotonic()
            s.proc.send_signal(signal.SIGTERM)
            time.sleep(0.1)
            s.proc.send_signal(signal.SIGTERM)  # an impatient supervisor: the second one must not kill it
            sock.settimeout(5)
            answer = b""
            while b"}" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
            sock.close()
        code, logs = s.stop(signal_it=False)
        took = time.monotonic() - t0
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["reason"] == "timeout"
    assert code == 0 and took < 5
    drain = next(line for line in logs if line.get("event") == "drain")
    assert drain["probes_in_flight"] == 1


def test_no_dialback_keeps_stun_and_metrics() -> None:
    s = Serve("--address", "127.0.0.1", "--no-dialback")
    try:
        s.wait_ready()
        assert stun_binding("127.0.0.1", s.stun) is not None
        assert http(s.url + "/v1/probe", b'{"port":30303,"protocol":"tcp"}')[0] in (404, 405)
        assert http(s.url + "/")[0] == 404
        info = json.loads(http(s.url + "/v1/info")[1])
        assert info["dialback"] is None and info["stun"]["rfc5780"] is False
        assert b"nodereach_stun_requests_total 1.0" in http(s.url + "/metrics")[1]
    finally:
        assert s.stop()[0] == 0


def test_no_stun_serves_only_http() -> None:
    s = Serve("--address", "127.0.0.1", "--no-stun")
    try:
        s.wait_ready()
        assert stun_binding("127.0.0.1", s.stun, timeout=0.3) is None
        assert json.loads(http(s.url + "/v1/info")[1])["stun"] is None
        assert http(s.url + "/")[0] == 200
    finally:
        assert s.stop()[0] == 0


def test_port_in_use_is_one_clear_line() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "nodereach.cli", "serve", "--address", "127.0.0.1",
                               "--no-stun", "--http-port", str(port)], capture_output=True, timeout=20)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "cannot listen" in err and "Traceback" not in err


def test_config_file_and_dual_stack(tmp_path) -> None:  # type: ignore[no-untyped-def]
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s6:
            s6.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 on this host")
    cfg = tmp_path / "serve.toml"
    cfg.write_text('addresses = ["127.0.0.1", "::1"]\nalt_address = "127.0.0.2"\n'
                   '[dialback]\nrefused_ports = "40000-40100"\n')
    s = Serve("--config", str(cfg))
    try:
        s.wait_ready()
        assert stun_binding("127.0.0.1", s.stun) is not None
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as c6:  # STUN on the IPv6 address too
            c6.settimeout(1.0)
            c6.sendto(b"\x00\x01\x00\x00\x21\x12\xa4\x42" + os.urandom(12), ("::1", s.stun))
            assert parse_message(c6.recv(2048)).xor_mapped_address[0] == "::1"  # type: ignore[index]
        status, body = http(s.url + "/v1/probe", b'{"port": 40050, "protocol": "tcp"}')
        assert status == 403 and json.loads(body)["error"] == "refused-port"
        status, body = http(f"http://[::1]:{s.http}/v1/address")
        assert status == 200 and json.loads(body)["address"] == "::1"
        info = json.loads(http(s.url + "/v1/info")[1])
        assert [e["rfc5780"] for e in info["stun"]["endpoints"]] == [True, False]  # alt pairs with IPv4 only
    finally:
        assert s.stop()[0] == 0


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s6:
            s6.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_dual_stack_by_default() -> None:
    """`nodereach serve` with no address: STUN and HTTP on both families, every address of the host; each
    STUN answer leaves from the address it was sent to (127.0.0.2 is not the route's source for 127.0.0.1)."""
    if not _has_ipv6_loopback():
        pytest.skip("no ::1 on this host")
    s = Serve()
    try:
        s.wait_ready()
        for host in ("127.0.0.1", "127.0.0.2", "::1"):
            msg = stun_binding(host, s.stun)
            assert msg is not None, f"no STUN answer from {host}"
            assert msg.xor_mapped_address is not None  # the client's source: the route's, 127.0.0.1 on lo
            assert msg.xor_mapped_address[0] == ("::1" if ":" in host else "127.0.0.1")
        for url, seen in ((s.url, "127.0.0.1"), (f"http://[::1]:{s.http}", "::1")):
            status, body = http(url + "/v1/address")
            assert status == 200 and json.loads(body)["address"] == seen
        info = json.loads(http(s.url + "/v1/info")[1])
        assert info["families"] == [4, 6]
        assert [(e["family"], e["address"], e["port"], e["rfc5780"]) for e in info["stun"]["endpoints"]] == \
            [(4, "0.0.0.0", s.stun, False), (6, "::", s.stun, False)]
        assert {(e["family"], e["address"]) for e in info["http"]} == {(4, "0.0.0.0"), (6, "::")}
        assert info["dialback"]["families"] == [{"family": 4, "second_address": None},
                                                {"family": 6, "second_address": None}]
    finally:
        assert s.stop()[0] == 0


def test_alt_address_not_on_this_host_is_one_clear_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "nodereach.cli", "serve", "--address", "127.0.0.1",
                           "--alt-address", "198.51.100.77", "--no-stun", "--http-port", "0"],
                          capture_output=True, timeout=20)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "--alt-address 198.51.100.77" in err and "Traceback" not in err
