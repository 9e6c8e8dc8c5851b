"""Bad input never gives a traceback or a hang: a clear one-line message (exit 2) or `unknown` with a reason.

Network tests here use loopback only (fake servers on 127.0.0.1), and lab namespaces for the rest.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nodereach.cli import app
from nodereach.diagnose.command import build_options, parse_port, parse_server
from nodereach.diagnose.rules import PortSpec
from nodereach.errors import UsageError
from nodereach.lab import Lab
from nodereach.lab import addresses as A
from nodereach.stun import attributes as SA
from nodereach.stun import message as M

BIN = str(Path(sys.executable).parent / "nodereach")


@pytest.mark.parametrize("text", ["abc", "30303/sctp", "0/tcp", "70000", "", "30303/tcp/udp", "-1/udp"])
def test_bad_port_syntax_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError):
        parse_port(text)


def test_port_forms() -> None:
    assert parse_port("30303/tcp") == [PortSpec(30303, "tcp")]
    assert parse_port("30303") == [PortSpec(30303, "tcp"), PortSpec(30303, "udp")]
    assert parse_port(" 9000/UDP ") == [PortSpec(9000, "udp")]


@pytest.mark.parametrize("text", ["", "host:port", "host:0", "host:99999", "[::1", "http://x/", "a b"])
def test_bad_server_syntax_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError):
        parse_server(text)


def test_server_forms() -> None:
    s = parse_server("203.0.113.10")
    assert (s.host, s.stun_port, s.http_port) == ("203.0.113.10", 3478, 3480)
    s = parse_server("[2001:db8::1]:5000")
    assert (s.host, s.stun_port) == ("2001:db8::1", 5000)
    assert parse_server("2001:db8::1").host == "2001:db8::1"
    assert parse_server("stun.example:19302", dialback=False).http_port is None


def test_cli_bad_port_one_line_exit_2() -> None:
    result = CliRunner().invoke(app, ["check", "--port", "30303/sctp", "--server", "127.0.0.1"])
    assert result.exit_code == 2
    assert "bad protocol" in result.output and "Traceback" not in result.output


def test_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "check.toml"
    cfg.write_text('[check]\nservers = ["203.0.113.10"]\nports = ["30303/udp"]\ntimeout = 3\n')
    opts = build_options([], [], 5.0, False, 120.0, cfg)
    assert [s.host for s in opts.servers] == ["203.0.113.10"] and opts.ports == (PortSpec(30303, "udp"),)
    assert opts.timeout == 3.0 and not opts.builtin_servers
    assert build_options([], [], 5.0, False, 120.0, None).builtin_servers
    for text in ("servers = 5", "not toml ][", 'ports = ["x/y"]', 'timeout = "soon"'):
        cfg.write_text(text)
        with pytest.raises(UsageError):
            build_options([], [], 5.0, False, 120.0, cfg)
    with pytest.raises(UsageError):
        build_options([], [], 5.0, False, 120.0, tmp_path / "missing.toml")
    with pytest.raises(UsageError):
        build_options(["127.0.0.1"], [], 0.0, False, 120.0, None)


# --- fake servers on loopback ----------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return port


class FakeUdp:
    """Answers every datagram on 127.0.0.1:port with `reply(data, addr)`, sent from `answer_from`'s socket."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.other.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = False
        self.seen = 0
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self) -> None:
        while not self.stop:
            try:
                data, addr = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            self.seen += 1
            if self.mode == "garbage":
                self.sock.sendto(os.urandom(60), addr)
                self.sock.sendto(b"\x01\x01\x00\x08" + data[4:20] + b"\x00\x20\x00\x08\x00", addr)  # truncated
            elif self.mode == "wrong-source":
                try:
                    req = M.parse_message(data)
                except Exception:
                    continue
                resp = M.StunMessage(M.BINDING, M.SUCCESS, req.transaction_id)
                resp.add(SA.XOR_MAPPED_ADDRESS, SA.encode_xor_address((addr[0], addr[1]), req.key))
                self.other.sendto(M.encode_message(resp), addr)

    def close(self) -> None:
        self.stop = True
        self.thread.join(1)
        self.sock.close()
        self.other.close()


@pytest.fixture
def fake_server(request: pytest.FixtureRequest) -> Iterator[FakeUdp]:
    server = FakeUdp(request.param)
    try:
        yield server
    finally:
        server.close()


def run_loopback(*args: str, timeout: float = 15) -> tuple[int, dict, float]:  # type: ignore[type-arg]
    start = time.monotonic()
    r = subprocess.run([BIN, "check", "--json", *args], capture_output=True, text=True, timeout=timeout)
    took = time.monotonic() - start
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, json.loads(r.stdout), took


def test_nothing_listening_is_bounded_and_explained() -> None:
    code, doc, took = run_loopback("--server", f"127.0.0.1:{_free_port()}", "--timeout", "2")
    assert took < 4.0 and doc["duration_s"] <= 2.0
    assert doc["udp"]["outbound"] is None and "not STUN servers" in doc["udp"]["reason"]
    assert doc["nat"]["mapping"] == "unknown" and doc["nat"]["unknown_reasons"]["mapping"]
    assert doc["servers"][0]["answered"] is False
    assert code == {"reachable": 0, "unreachable": 1, "no-connectivity": 3}[doc["verdict"]]


@pytest.mark.parametrize("fake_server", ["garbage"], indirect=True)
def test_garbage_replies_are_reported(fake_server: FakeUdp) -> None:
    _code, doc, took = run_loopback("--server", f"127.0.0.1:{fake_server.port}", "--timeout", "2")
    assert took < 4.0 and fake_server.seen >= 1
    assert "garbage" in doc["servers"][0]["reason"]
    assert doc["nat"]["mapping"] == "unknown"


@pytest.mark.parametrize("fake_server", ["wrong-source"], indirect=True)
def test_reply_from_wrong_address_is_not_trusted(fake_server: FakeUdp) -> None:
    _code, doc, _took = run_loopback("--server", f"127.0.0.1:{fake_server.port}", "--timeout", "2")
    assert doc["nat"]["mapping"] == "unknown"
    assert "not the server address" in doc["nat"]["unknown_reasons"]["mapping"]


# --- in the lab ------------------------------------------------------------------------------------------
@pytest.mark.lab
def test_no_default_route_is_no_connectivity(private_lab) -> None:  # type: ignore[no-untyped-def]
    net: Lab = private_lab("open")
    net.exec("client", ["ip", "route", "del", "default"])
    r = net.exec("client", [BIN, "check", "--json", "--server", A.SERVER_IP, "--timeout", "2"], check=False)
    doc = json.loads(r.stdout)
    assert r.returncode == 3 and doc["verdict"] == "no-connectivity"
    assert {"no-connectivity", "no-default-route"} <= set(doc["causes"])
    assert doc["advice"][0]["code"] == "fix-network"
    assert "Traceback" not in r.stderr


@pytest.mark.lab
def test_server_without_nodereach_is_bounded(lab) -> None:  # type: ignore[no-untyped-def]
    net: Lab = lab("port-restricted")
    start = time.monotonic()
    r = net.exec("client", [BIN, "check", "--json", "--server", A.PEER_IP, "--port", "30303/udp", "--timeout", "2"],
                 check=False, timeout=10)
    assert time.monotonic() - start < 4.5
    doc = json.loads(r.stdout)
    assert doc["udp"]["outbound"] is None and doc["servers"][0]["answered"] is False
    # check/2: nothing listens on 30303/udp, so it is not reachable whatever the (untested) path would say
    assert doc["ports"][0]["reachable"] is False and doc["ports"][0]["reason"] == "nothing-listening"
    assert doc["ports"][0]["path_open"] is None
    assert "Traceback" not in r.stderr


@pytest.mark.lab
def test_builtin_servers_without_dns_say_what_is_missing(lab) -> None:  # type: ignore[no-untyped-def]
    """No --server: the built-in public list. The lab has no DNS and no route out, so nothing resolves;
    check must say so plainly (and, by the lab's design, no packet leaves the lab)."""
    net: Lab = lab("port-restricted")
    r = net.exec("client", [BIN, "check", "--json", "--timeout", "3"], check=False, timeout=15)
    doc = json.loads(r.stdout)
    assert r.returncode == 3 and doc["verdict"] == "no-connectivity"
    assert all(s["answered"] is False and s["reason"] for s in doc["servers"])
    assert any("nodereach server" in n for n in doc["notes"] + doc["untested"])


def test_ipv6_only_server_on_loopback_is_bounded() -> None:
    code, doc, took = run_loopback("--server", f"[::1]:{_free_port()}", "--timeout", "1.5")
    assert took < 4.0
    assert doc["udp"]["ipv6"] is None and doc["tcp"]["ipv6"] is True  # RST came back: the path works
    assert any("IPv6 only" in n for n in doc["notes"])
    assert code == {"reachable": 0, "unreachable": 1, "no-connectivity": 3}[doc["verdict"]]
