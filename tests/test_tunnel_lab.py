"""The generated tunnel, brought up for real: a node behind CGNAT becomes reachable at a rented public host.

Lab `cgnat`: `client` (the node, 192.168.1.10) sits behind the home NAT and the provider's CGNAT; `peer`
(203.0.113.20) plays the rented public host; `server` (203.0.113.10) plays a peer on the internet. Both ends run
the files `tunnel-config` writes, through wg-quick with Debian's wireguard-go (this kernel has no WireGuard
module; a stock Debian kernel has one, and wg-quick then uses it: WG_QUICK_USERSPACE_IMPLEMENTATION forces the
userspace implementation here).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nodereach.lab import Lab
from nodereach.lab import addresses as A
from nodereach.net import PortSpec
from nodereach.tunnel import keys
from nodereach.tunnel.wireguard import TunnelPlan, plan, render

pytestmark = pytest.mark.lab

PORT = 30303
WG_ENV = {"WG_QUICK_USERSPACE_IMPLEMENTATION": "wireguard-go",
          # wireguard-go refuses to run on Linux without it (it prefers the kernel module)
          "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}


def _need_wireguard() -> None:
    import os

    missing = [b for b in ("wg", "wg-quick", "wireguard-go") if shutil.which(b) is None]
    if missing:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must run every lab test, but {', '.join(missing)} is missing (wireguard-tools, "
                        "wireguard-go)")
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install wireguard-go wireguard-tools)")


def _wg(net: Lab, host: str, argv: list[str], timeout: float = 20) -> None:
    import os

    r = net.exec(host, ["env", *(f"{k}={v}" for k, v in WG_ENV.items()), *argv], timeout=timeout, check=False,
                 env={**os.environ, **WG_ENV})
    assert r.returncode == 0, f"{' '.join(argv)} on {host}: {r.stderr}"


def _wait_handshake(net: Lab, host: str, iface: str, bound_s: float = 10.0) -> None:
    end = time.monotonic() + bound_s
    while time.monotonic() < end:
        out = net.exec(host, ["wg", "show", iface, "latest-handshakes"], check=False).stdout.split()
        if len(out) >= 2 and out[1] != "0":
            return
        time.sleep(0.05)
    pytest.fail(f"no WireGuard handshake on {host}/{iface} within {bound_s} s")


@pytest.fixture
def tunnel(private_lab: Callable[..., Lab], tmp_path: Path) -> Iterator[tuple[Lab, TunnelPlan]]:
    _need_wireguard()
    net = private_lab("cgnat")
    tag = net.id[:6]
    p = plan(A.PEER_IP, A.CLIENT_IP, [PortSpec(PORT, "tcp"), PortSpec(PORT, "udp")], keys.generate(),
             keys.generate(), node_interface=f"nrn{tag}", host_interface=f"nrh{tag}",
             node_rules_path=str(tmp_path / "node.nft"), host_rules_path=str(tmp_path / "host.nft"))
    files = render(p)
    for name, text in ((f"nrn{tag}.conf", files.node_conf), (f"nrh{tag}.conf", files.host_conf),
                       ("node.nft", files.node_rules), ("host.nft", files.host_rules)):
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o600)
    up: list[tuple[str, Path]] = []
    try:
        for host, conf in (("peer", tmp_path / f"nrh{tag}.conf"), ("client", tmp_path / f"nrn{tag}.conf")):
            _wg(net, host, ["wg-quick", "up", str(conf)])
            up.append((host, conf))
        _wait_handshake(net, "peer", p.host_interface)
        yield net, p
    finally:
        for host, conf in reversed(up):
            with contextlib.suppress(Exception):
                _wg(net, host, ["wg-quick", "down", str(conf)])


def _listen(net: Lab, kind: int) -> socket.socket:
    s = net.socket("client", socket.AF_INET, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", PORT))  # the usual node: every address, not the tunnel's
    if kind == socket.SOCK_STREAM:
        s.listen(4)
    s.settimeout(5.0)
    return s


def test_peers_reach_the_node_through_the_public_host_with_their_own_address(tunnel: tuple[Lab, TunnelPlan],
                                                                             ) -> None:
    net, _p = tunnel
    listener = _listen(net, socket.SOCK_STREAM)
    with listener, net.socket("server", socket.AF_INET, socket.SOCK_STREAM) as dialer:
        dialer.settimeout(5.0)
        dialer.connect((A.PEER_IP, PORT))  # the handshake's SYN-ACK came back through the tunnel
        conn, seen = listener.accept()
        with conn:
            assert seen[0] == A.SERVER_IP  # the peer's own address: no masquerade on the way
            conn.sendall(b"pong")
            assert dialer.recv(4) == b"pong"


def test_udp_replies_from_a_wildcard_socket_leave_through_the_tunnel(tunnel: tuple[Lab, TunnelPlan]) -> None:
    """A UDP socket bound to 0.0.0.0 answers from the LAN address: the connection mark, not the source
    address, must route the answer back into the tunnel (else it leaves through the CGNAT and is lost)."""
    net, _p = tunnel
    node = _listen(net, socket.SOCK_DGRAM)
    with node, net.socket("server", socket.AF_INET, socket.SOCK_DGRAM) as remote:
        remote.settimeout(5.0)
        remote.sendto(b"ping", (A.PEER_IP, PORT))
        data, seen = node.recvfrom(64)
        assert data == b"ping" and seen[0] == A.SERVER_IP
        node.sendto(b"pong", seen)
        reply, source = remote.recvfrom(64)
        assert reply == b"pong" and source == (A.PEER_IP, PORT)  # from the public host's address


def test_the_nodes_own_traffic_keeps_its_route(tunnel: tuple[Lab, TunnelPlan]) -> None:
    """Table = off: only the tunnel's connections use it; the node's outbound traffic still leaves through
    the CGNAT (seen as the provider's public address), so nothing else on the host changes."""
    net, _p = tunnel
    with net.socket("server", socket.AF_INET, socket.SOCK_DGRAM) as remote, \
            net.socket("client", socket.AF_INET, socket.SOCK_DGRAM) as node:
        remote.bind((A.SERVER_IP, 0))
        remote.settimeout(5.0)
        node.sendto(b"hello", remote.getsockname())
        _data, seen = remote.recvfrom(64)
        assert seen[0] == A.ISP_WAN_IP


def test_without_the_tunnel_the_public_host_does_not_reach_the_node(private_lab: Callable[..., Lab]) -> None:
    """Control: the same dial to the public host fails while no tunnel runs (the test above proves the tunnel)."""
    net = private_lab("cgnat")
    listener = _listen(net, socket.SOCK_STREAM)
    with listener, net.socket("server", socket.AF_INET, socket.SOCK_STREAM) as dialer:
        dialer.settimeout(2.0)
        with pytest.raises(OSError):  # the public host answers RST: nothing forwards the port
            dialer.connect((A.PEER_IP, PORT))
