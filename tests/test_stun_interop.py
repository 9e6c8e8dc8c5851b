"""Interop with real third-party STUN peers on loopback (127.0.0.1 + 127.0.0.2 are two addresses on lo):
nodereach's client against coturn (RFC 5780 mode), and coturn's turnutils_stunclient /
turnutils_natdiscovery, pystun3 and aioice's STUN codec against nodereach's server.

Every process a test starts is killed in teardown; every port is picked free at run time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest

from nodereach.stun.client import StunClient, tcp_binding
from nodereach.stun.errors import StunTimeout
from nodereach.stun.message import binding_request, encode_message

needs_coturn = pytest.mark.skipif(shutil.which("turnserver") is None and os.environ.get("CI") is None,
                                  reason="coturn (turnserver, turnutils_*) not installed")


def free_port_pair(hosts: tuple[str, ...] = ("127.0.0.1", "127.0.0.2")) -> tuple[int, int]:
    """Two ports free for UDP and TCP on every host (checked by binding, then released)."""
    for _ in range(50):
        ports: list[int] = []
        with contextlib.ExitStack() as stack:
            try:
                for _ in range(2):
                    s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                    s.bind((hosts[0], 0))
                    port = s.getsockname()[1]
                    for host in hosts:
                        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                            if host == hosts[0] and kind == socket.SOCK_DGRAM:
                                continue
                            t = stack.enter_context(socket.socket(socket.AF_INET, kind))
                            t.bind((host, port))
                    ports.append(port)
            except OSError:
                continue
            return ports[0], ports[1]
    raise RuntimeError("no free port pair")


def wait_stun(addr: tuple[str, int], deadline_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll with Binding requests until the server answers (no blind sleep)."""
    deadline = time.monotonic() + deadline_s
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.05)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            req = binding_request()
            s.sendto(encode_message(req), addr)
            with contextlib.suppress(OSError):
                data, _ = s.recvfrom(2048)
                if data[8:20] == req.transaction_id:
                    return
    raise RuntimeError(f"no STUN answer from {addr} within {deadline_s}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(3)


@pytest.fixture
def coturn() -> Iterator[dict[str, tuple[str, int]]]:
    """coturn in RFC 5780 mode on 127.0.0.1 + 127.0.0.2, free ports; killed at teardown."""
    if shutil.which("turnserver") is None:
        pytest.fail("coturn is not installed (apt-get install coturn)")
    port, alt = free_port_pair()
    tmp = tempfile.mkdtemp(prefix="nr-coturn-")
    argv = ["turnserver", "-n", "--stun-only", "--no-cli", "--no-tls", "--no-dtls", "--simple-log",
            "--log-file", "stdout", "--pidfile", f"{tmp}/pid", "-L", "127.0.0.1", "-L", "127.0.0.2",
            "--listening-port", str(port), "--alt-listening-port", str(alt)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_stun(("127.0.0.1", port), 10, proc)
        yield {"primary": ("127.0.0.1", port), "alt_port": ("127.0.0.1", alt), "alt_ip": ("127.0.0.2", port),
               "alt_both": ("127.0.0.2", alt)}
    finally:
        stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def nodereach_server() -> Iterator[dict[str, tuple[str, int]]]:
    """nodereach's server as its own process (`python -m nodereach.stun`), RFC 5780 mode."""
    proc = subprocess.Popen([sys.executable, "-m", "nodereach.stun", "--address", "127.0.0.1",
                             "--alt-address", "127.0.0.2", "--port", "0", "--alt-port", "0"],
                            stdout=subprocess.PIPE, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        assert ready, "server did not report its addresses"
        addresses = {k: tuple(v) for k, v in json.loads(proc.stdout.readline())["addresses"].items()}
        yield addresses  # type: ignore[misc]
    finally:
        stop(proc)


def run(argv: list[str], timeout: float = 30) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return out.stdout + out.stderr


# --- nodereach client -> coturn -------------------------------------------------------------------------
@needs_coturn
async def test_client_against_coturn_rfc5780(coturn: dict[str, tuple[str, int]]) -> None:
    async with StunClient(local=("127.0.0.1", 0)) as c:
        r = await c.binding(coturn["primary"], timeout=2)
        assert r.mapped == c.local_address and not r.legacy
        assert r.other_address == coturn["alt_both"]
        assert r.response_origin == coturn["primary"]
        for ci, cp, role in ((True, True, "alt_both"), (False, True, "alt_port"), (True, False, "alt_ip")):
            changed = await c.binding(coturn["primary"], change_ip=ci, change_port=cp, timeout=2)
            assert changed.source == coturn[role] and changed.mapped == c.local_address
        concurrent = await asyncio.gather(*(c.binding(coturn["primary"], timeout=2) for _ in range(50)))
        assert all(x.mapped == c.local_address for x in concurrent)
    r = await tcp_binding(coturn["primary"], timeout=2)
    assert r.mapped is not None and r.mapped[0] == "127.0.0.1"


@needs_coturn
async def test_client_and_turnutils_stunclient_agree_on_coturn(coturn: dict[str, tuple[str, int]]) -> None:
    out = await asyncio.to_thread(run, ["turnutils_stunclient", "-p", str(coturn["primary"][1]), "127.0.0.1"])
    other = re.search(r"Other addr: : ([\d.]+):(\d+)", out)
    assert other is not None, out
    async with StunClient(local=("127.0.0.1", 0)) as c:
        r = await c.binding(coturn["primary"], timeout=2)
    assert r.other_address == (other.group(1), int(other.group(2)))


# --- third-party clients -> nodereach server ---------------------------------------------------------------
@needs_coturn
def test_turnutils_stunclient_against_nodereach(nodereach_server: dict[str, tuple[str, int]]) -> None:
    host, port = nodereach_server["primary"]
    out = run(["turnutils_stunclient", "-p", str(port), host])
    alt_ip, alt_port = nodereach_server["alt_both"]
    assert f"Other addr: : {alt_ip}:{alt_port}" in out, out
    assert f"Response origin: : {host}:{port}" in out
    assert f"Response origin: : {alt_ip}:{alt_port}" in out  # the CHANGE-REQUEST reply came from the alt socket
    assert re.search(r"UDP reflexive addr: 127\.0\.0\.1:\d+", out)


@needs_coturn
def test_turnutils_natdiscovery_against_nodereach(nodereach_server: dict[str, tuple[str, int]]) -> None:
    host, port = nodereach_server["primary"]
    out = run(["turnutils_natdiscovery", "-m", "-f", "-H", "-p", str(port), host])
    # loopback: no NAT, so independent mapping and filtering, and the hairpinned request comes back
    assert "NAT with Endpoint Independent Mapping!" in out, out
    assert "NAT with Endpoint Independent Filtering!" in out, out
    assert "successful hairpinning" in out, out
    out = run(["turnutils_natdiscovery", "-m", "-f", "-P", "-p", str(port), host])  # with 1500-byte PADDING
    assert "NAT with Endpoint Independent Mapping!" in out and "Endpoint Independent Filtering!" in out, out


def test_pystun3_against_nodereach(nodereach_server: dict[str, tuple[str, int]]) -> None:
    host, port = nodereach_server["primary"]
    code = ("import stun, json, sys; print(json.dumps(stun.get_ip_info('127.0.0.1', int(sys.argv[1]), "
            "stun_host=sys.argv[2], stun_port=int(sys.argv[3]))))")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        src = s.getsockname()[1]
    out = subprocess.run([sys.executable, "-c", code, str(src), host, str(port)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    nat_type, ip, mapped_port = json.loads(out)
    assert (nat_type, ip, mapped_port) == ("Open Internet", "127.0.0.1", src)  # RFC 3489 legacy replies parsed


def test_aioice_codec_against_nodereach(nodereach_server: dict[str, tuple[str, int]]) -> None:
    from aioice import stun as aio

    request = aio.Message(message_method=aio.Method.BINDING, message_class=aio.Class.REQUEST)
    request.add_fingerprint()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(2)
        s.sendto(bytes(request), nodereach_server["primary"])
        data, _ = s.recvfrom(2048)
        reply = aio.parse_message(data)  # aioice checks our FINGERPRINT
        assert reply.transaction_id == request.transaction_id
        assert reply.message_class == aio.Class.RESPONSE
        assert reply.attributes["XOR-MAPPED-ADDRESS"] == s.getsockname()
        assert reply.attributes["OTHER-ADDRESS"] == nodereach_server["alt_both"]
        assert reply.attributes["RESPONSE-ORIGIN"] == nodereach_server["primary"]


async def test_nodereach_client_sees_filtered_change_request_as_timeout(
        nodereach_server: dict[str, tuple[str, int]]) -> None:
    """A change-request reply from an unexpected address must not count (stray), so the test times out."""
    async with StunClient(local=("127.0.0.1", 0)) as c:
        await c.binding(nodereach_server["primary"])
        with pytest.raises(StunTimeout):
            # claim the other address is somewhere else: the genuine reply must be rejected as stray
            await c.binding(nodereach_server["primary"], change_ip=True, other=("127.0.0.9", 1), timeout=0.3)
        assert c.stats.stray >= 1
