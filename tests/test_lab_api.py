"""The Python API other packages' tests stand on: sockets, threads and coroutines inside namespaces,
spawned processes, coturn."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from collections.abc import Callable

import pytest

from nodereach.errors import UsageError
from nodereach.lab import Lab, netns
from nodereach.lab import addresses as A
from nodereach.lab import probe as P

pytestmark = pytest.mark.lab


def test_call_in_runs_inside_and_propagates_errors(lab: Callable[..., Lab]) -> None:
    net = lab("port-restricted")

    def local_address() -> str:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((A.SERVER_IP, 9))
            return str(s.getsockname()[0])

    assert net.call_in("client", local_address) == A.CLIENT_IP
    assert net.call_in("router", local_address) == A.ROUTER_WAN_IP
    with pytest.raises(ZeroDivisionError):
        net.call_in("client", lambda: 1 / 0)
    assert local_address() not in (A.CLIENT_IP, A.ROUTER_WAN_IP)  # the caller never moved


def test_socket_lives_in_its_namespace(lab: Callable[..., Lab]) -> None:
    net = lab("port-restricted")
    with net.socket("client") as sock:
        sock.connect((A.SERVER_IP, 9))
        assert sock.getsockname()[0] == A.CLIENT_IP
    with net.socket("server", socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind((A.SERVER_ALT_IP, 0))  # only exists inside `server`
        assert tcp.getsockname()[0] == A.SERVER_ALT_IP


async def test_run_async_with_asyncio_udp(lab: Callable[..., Lab]) -> None:
    net = lab("full-cone")

    async def echo_server() -> int:
        loop = asyncio.get_running_loop()
        got: asyncio.Future[tuple[bytes, tuple[str, int]]] = loop.create_future()

        class Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                if not got.done():
                    got.set_result((data, addr))

        transport, _ = await loop.create_datagram_endpoint(Proto, local_addr=(A.SERVER_IP, 0))
        port = transport.get_extra_info("sockname")[1]
        transport.close()
        return int(port)

    port = await net.run_async("server", echo_server)
    assert 0 < port < 65536

    async def public_view() -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.connect((A.SERVER_IP, 9))
        await loop.sock_sendall(sock, b"x")
        name = sock.getsockname()
        sock.close()
        return name

    assert (await net.run_async("client", public_view))[0] == A.CLIENT_IP
    with pytest.raises(ValueError):
        await net.run_async("client", _raise_value_error)


async def _raise_value_error() -> None:
    raise ValueError("inside")


def test_exec_and_spawn(lab: Callable[..., Lab]) -> None:
    net = lab("open")
    assert net.exec("client", ["sh", "-c", "exit 3"], check=False).returncode == 3
    with pytest.raises(subprocess.CalledProcessError):
        net.exec("client", ["false"])
    proc = net.spawn("peer", ["sleep", "30"])
    assert netns.namespace_pids(net.ns("peer")).count(proc.pid) == 1
    proc.terminate()
    proc.wait(timeout=5)


def test_unknown_host_is_a_usage_error(lab: Callable[..., Lab]) -> None:
    net = lab("open")
    with pytest.raises(UsageError, match="no host 'router'"):
        net.ns("router")
    assert "router" not in net.hosts and "client" in net.hosts


def test_coturn_rfc5780_answers_on_both_addresses(lab: Callable[..., Lab]) -> None:
    net = lab("open")
    net.start_coturn(rfc5780=True)  # left running: the lab is shared, coturn is cheap
    with P.udp(net, "client") as sock:
        for addr, port in ((A.COTURN_IP, 3478), (A.COTURN_ALT_IP, 3478), (A.COTURN_IP, 3479)):
            txid = os.urandom(12)
            sock.sendto(b"\x00\x01\x00\x00\x21\x12\xa4\x42" + txid, (addr, port))
            got = P.recv(sock, 2.0)
            assert got is not None and got[0][:2] == b"\x01\x01" and got[0][8:20] == txid, (addr, port)
            assert got[1] == (addr, port)
    assert net.start_coturn(rfc5780=True) is net.daemons.coturn  # already running: reused


@pytest.mark.parametrize("name", ["open", "port-restricted", "cgnat"])
def test_addresses_match_the_interfaces(lab: Callable[..., Lab], name: str) -> None:
    net = lab(name)
    for host in net.hosts:
        out = net.exec(host, ["ip", "-4", "-o", "addr", "show", "scope", "global"]).stdout
        configured = {line.split()[3].split("/")[0] for line in out.splitlines()}
        assert set(net.addresses(host)) == configured, host


def test_entering_a_missing_namespace_fails_and_creates_nothing() -> None:
    """Unlike pyroute2's setns defaults (O_CREAT), entering a torn-down lab never recreates its namespace."""
    from conftest import require_lab

    require_lab()
    name = "nrl-000000-missing"
    with pytest.raises(FileNotFoundError):
        netns.call_in(name, lambda: None)
    assert not netns.exists(name)
