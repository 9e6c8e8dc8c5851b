"""Listeners on this host: /proc/net parsing, the kernel's answer on IPV6_V6ONLY, the pure judgement (table), and
real sockets (loopback only, v6 only, nothing, another interface) in the host and in lab namespaces."""

from __future__ import annotations

import socket
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodereach.net import PortSpec
from nodereach.node import listeners as L
from nodereach.node.listeners import ContainerView, Listener, ProcessInfo

T30303 = PortSpec(30303, "tcp")
U30303 = PortSpec(30303, "udp")


def lst(address: str, port: int = 30303, transport: str = "tcp", accepts4: bool | None = None,
        **kw: object) -> Listener:
    family = 6 if ":" in address else 4
    if accepts4 is None:
        accepts4 = family == 4 or None
    return Listener(transport, address, port, family, accepts4, **kw)  # type: ignore[arg-type]


ARRIVAL = "192.168.1.10"
ARRIVAL6 = "2001:db8:1::10"

# (listeners, port, family, arrival, expected code or None)
TABLE = [
    ([], T30303, 4, ARRIVAL, "nothing-listening"),
    ([lst("0.0.0.0", 30303, "udp")], T30303, 4, ARRIVAL, "nothing-listening"),  # UDP does not serve TCP
    ([lst("0.0.0.0", 30304)], T30303, 4, ARRIVAL, "nothing-listening"),
    ([lst("127.0.0.1")], T30303, 4, ARRIVAL, "loopback-only"),
    ([lst("127.0.0.1"), lst("::1", accepts4=False)], T30303, 4, ARRIVAL, "loopback-only"),
    ([lst("0.0.0.0")], T30303, 4, ARRIVAL, None),
    ([lst("0.0.0.0")], T30303, 4, None, None),
    ([lst(ARRIVAL)], T30303, 4, ARRIVAL, None),
    ([lst("10.0.0.5")], T30303, 4, ARRIVAL, "wrong-interface"),
    ([lst("10.0.0.5"), lst("127.0.0.1")], T30303, 4, ARRIVAL, "wrong-interface"),
    ([lst("10.0.0.5")], T30303, 4, None, None),  # arrival unknown: cannot call it wrong
    ([lst("::", accepts4=True)], T30303, 4, ARRIVAL, None),  # dual-stack [::] takes IPv4
    ([lst("::", accepts4=False)], T30303, 4, ARRIVAL, "ipv6-only"),  # IPV6_V6ONLY
    ([lst("::", accepts4=None)], T30303, 4, ARRIVAL, "ipv6-only"),  # unknown: not counted as taking IPv4
    ([lst(ARRIVAL6, accepts4=False)], T30303, 4, ARRIVAL, "ipv6-only"),
    ([lst("::", accepts4=False)], T30303, 6, ARRIVAL6, None),
    ([lst("0.0.0.0")], T30303, 6, ARRIVAL6, "ipv4-only"),
    ([lst("0.0.0.0"), lst("::", accepts4=False)], T30303, 6, ARRIVAL6, None),
    ([lst("2001:db8:1::99", accepts4=False)], T30303, 6, ARRIVAL6, "wrong-interface"),
    ([Listener("tcp", ARRIVAL, 30303, 6, True)], T30303, 4, ARRIVAL, None),  # v4-mapped in an AF_INET6 socket
    ([lst("0.0.0.0", 30303, "udp")], U30303, 4, ARRIVAL, None),
    ([lst("127.0.0.53", 30303, "udp")], U30303, 4, ARRIVAL, "loopback-only"),
]


@pytest.mark.parametrize(("listeners", "spec", "family", "arrival", "code"), TABLE)
def test_judge_table(listeners, spec, family, arrival, code):
    problem = L.judge(spec, family, arrival, listeners)
    assert (problem.code if problem else None) == code
    if problem is not None:
        assert str(spec) in problem.detail or problem.code != "nothing-listening"
        assert problem.port == spec and problem.family == family


def test_wrong_interface_names_both_addresses():
    p = L.judge(T30303, 4, ARRIVAL, [lst("10.0.0.5", pid=42, process="geth")])
    assert p is not None and "10.0.0.5" in p.detail and ARRIVAL in p.detail and "geth (pid 42)" in p.detail


def test_container_views():
    seen = ContainerView(programs_elsewhere=((77, "geth", frozenset({T30303, U30303})),), runtime="containerd-shim")
    p = L.judge(T30303, 4, ARRIVAL, [], seen)
    assert p is not None and p.code == "container-port-not-published" and "geth (pid 77)" in p.detail
    assert "-p 30303:30303/tcp" in p.detail
    # a node program in another namespace without any container runtime (a lab, a VPN namespace): not claimed
    no_runtime = L.judge(T30303, 4, ARRIVAL, [], ContainerView(programs_elsewhere=((77, "geth", frozenset({T30303})),)))
    assert no_runtime is not None and no_runtime.code == "nothing-listening"
    other_port = L.judge(PortSpec(8333, "tcp"), 4, ARRIVAL, [], seen)
    assert other_port is not None and other_port.code == "nothing-listening"
    runtime_only = L.judge(T30303, 4, ARRIVAL, [], ContainerView(runtime="conmon"))
    assert runtime_only is not None and runtime_only.code == "nothing-listening" and "conmon" in runtime_only.detail
    assert L.judge(T30303, 4, ARRIVAL, [], ContainerView(published=frozenset({T30303}))) is None


def test_container_view_from_processes():
    procs = [
        ProcessInfo(10, "docker-proxy", ("/usr/bin/docker-proxy", "-proto", "udp", "-host-ip", "0.0.0.0",
                                         "-host-port", "30303", "-container-ip", "172.17.0.2", "-container-port",
                                         "30303")),
        ProcessInfo(11, "docker-proxy", ("docker-proxy", "-proto=tcp", "-host-port=9000")),
        ProcessInfo(12, "docker-proxy", ("docker-proxy", "-proto", "sctp", "-host-port", "1")),
        ProcessInfo(20, "geth", ("geth",), other_netns=True),
        ProcessInfo(21, "geth", ("geth",), other_netns=False),
        ProcessInfo(22, "bash", ("bash",), other_netns=True),
    ]
    view = L.container_view(procs, {"geth": frozenset({T30303})})
    assert view.published == {U30303, PortSpec(9000, "tcp")}
    assert view.programs_elsewhere == ((20, "geth", frozenset({T30303})),)
    assert view.runtime == "docker-proxy"


def test_assess_says_nothing_listening_once_per_port():
    got = L.assess([T30303, U30303], [4, 6], {4: ARRIVAL, 6: ARRIVAL6}, [lst("0.0.0.0", 30303, "udp")])
    tcp, udp = got
    assert [p.code for p in tcp.problems] == ["nothing-listening"] and not tcp.listening
    assert [p.code for p in udp.problems] == ["ipv4-only"] and udp.listening


def _proc_line(local: str, remote: str, state: int, uid: int = 1000, inode: int = 4242) -> str:
    return (f"   0: {local} {remote} {state:02X} 00000000:00000000 00:00000000 00000000  {uid}        0 {inode} "
            "1 0000000000000000 100 0 0 10 0")


def _hex4(ip: str, port: int) -> str:
    raw = socket.inet_aton(ip)
    return (raw[::-1] if sys.byteorder == "little" else raw).hex().upper() + f":{port:04X}"


def _hex6(ip: str, port: int) -> str:
    raw = socket.inet_pton(socket.AF_INET6, ip)
    words = b"".join(raw[i:i + 4][::-1] if sys.byteorder == "little" else raw[i:i + 4] for i in range(0, 16, 4))
    return words.hex().upper() + f":{port:04X}"


def test_parse_proc_net_lines():
    header = "  sl  local_address rem_address   st ...\n"
    text = header + "\n".join([
        _proc_line(_hex4("0.0.0.0", 30303), _hex4("0.0.0.0", 0), 0x0A, uid=1000, inode=11),
        _proc_line(_hex4("192.168.1.10", 40000), _hex4("203.0.113.10", 443), 0x01),  # established: not a listener
        _proc_line(_hex4("127.0.0.1", 8545), _hex4("0.0.0.0", 0), 0x0A, uid=0, inode=12),
        "garbage line",
        _proc_line("ZZZZ:0001", _hex4("0.0.0.0", 0), 0x0A),
    ])
    got = L.parse_proc_net(text, "tcp", 4)
    assert [(x.address, x.port, x.uid, x.inode) for x in got] == [("0.0.0.0", 30303, 1000, 11),
                                                                  ("127.0.0.1", 8545, 0, 12)]
    text6 = header + "\n".join([
        _proc_line(_hex6("::", 30303), _hex6("::", 0), 0x07, inode=21),
        _proc_line(_hex6("2001:db8::5", 30303), _hex6("::", 0), 0x07, inode=22),
        _proc_line(_hex6("::ffff:192.168.1.10", 30303), _hex6("::", 0), 0x07, inode=23),
        _proc_line(_hex6("2001:db8::5", 30304), _hex6("2001:db8::9", 30303), 0x07, inode=24),  # connected UDP
    ])
    got6 = L.parse_proc_net(text6, "udp", 6)
    assert [(x.address, x.accepts_ipv4) for x in got6] == [("::", None), ("2001:db8::5", False), ("192.168.1.10", True)]
    assert all(x.family == 6 for x in got6)


@given(st.text(max_size=400))
def test_parse_proc_net_never_raises(text):
    for transport, family in (("tcp", 4), ("tcp", 6), ("udp", 4), ("udp", 6)):
        L.parse_proc_net("header\n" + text, transport, family)  # type: ignore[arg-type]


@given(st.lists(st.tuples(st.binary(min_size=16, max_size=16), st.integers(0, 65535), st.integers(0, 12)),
                max_size=20))
def test_parse_proc_net_v6_roundtrip(rows):
    lines = ["header"] + [_proc_line(raw_words(raw) + f":{port:04X}", _hex6("::", 0), state)
                          for raw, port, state in rows]
    got = L.parse_proc_net("\n".join(lines), "tcp", 6)
    assert len(got) == sum(1 for _, port, state in rows if state == 0x0A and port > 0)


def raw_words(raw: bytes) -> str:
    return b"".join(raw[i:i + 4][::-1] if sys.byteorder == "little" else raw[i:i + 4] for i in range(0, 16, 4)).hex()


# --- real sockets on this host's loopback ------------------------------------------------------------------

def _bound(family: int, kind: int, address: str, v6only: bool | None = None) -> socket.socket:
    s = socket.socket(family, kind)
    if v6only is not None:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
    s.bind((address, 0))
    if kind == socket.SOCK_STREAM:
        s.listen()
    return s


def _scan_one(port: int, transport: str) -> list[Listener]:
    return L.scan([PortSpec(port, transport)])  # type: ignore[arg-type]


def test_real_loopback_only_named_as_this_process():
    with _bound(socket.AF_INET, socket.SOCK_STREAM, "127.0.0.1") as s:
        port = s.getsockname()[1]
        found = _scan_one(port, "tcp")
        assert [(x.address, x.family) for x in found] == [("127.0.0.1", 4)]
        import os
        assert found[0].pid == os.getpid() and found[0].process  # our own socket: visible
        p = L.judge(PortSpec(port, "tcp"), 4, ARRIVAL, found)
        assert p is not None and p.code == "loopback-only"


@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM])
def test_real_v6only_and_dual_stack(kind):
    transport = "tcp" if kind == socket.SOCK_STREAM else "udp"
    try:
        v6only = _bound(socket.AF_INET6, kind, "::", v6only=True)
    except OSError as exc:
        pytest.skip(f"no IPv6 on this host: {exc}")
    with v6only:
        port = v6only.getsockname()[1]
        found = _scan_one(port, transport)
        assert [(x.address, x.accepts_ipv4) for x in found] == [("::", False)]
        p = L.judge(PortSpec(port, transport), 4, ARRIVAL, found)  # type: ignore[arg-type]
        assert p is not None and p.code == "ipv6-only"
        assert L.judge(PortSpec(port, transport), 6, ARRIVAL6, found) is None  # type: ignore[arg-type]
    with _bound(socket.AF_INET6, kind, "::", v6only=False) as dual:
        port = dual.getsockname()[1]
        found = _scan_one(port, transport)
        assert [(x.address, x.accepts_ipv4) for x in found] == [("::", True)]
        assert L.judge(PortSpec(port, transport), 4, ARRIVAL, found) is None  # type: ignore[arg-type]


def test_real_nothing_listening():
    with _bound(socket.AF_INET, socket.SOCK_STREAM, "127.0.0.1") as s:
        port = s.getsockname()[1]
    found = _scan_one(port, "tcp")
    assert found == []
    p = L.judge(PortSpec(port, "tcp"), 4, ARRIVAL, found)
    assert p is not None and p.code == "nothing-listening"


def test_real_ipv4_only():
    with _bound(socket.AF_INET, socket.SOCK_DGRAM, "0.0.0.0") as s:
        port = s.getsockname()[1]
        found = _scan_one(port, "udp")
        assert [(x.address, x.family) for x in found] == [("0.0.0.0", 4)]
        p = L.judge(PortSpec(port, "udp"), 6, ARRIVAL6, found)
        assert p is not None and p.code == "ipv4-only"


def test_list_processes_sees_ourselves():
    import os
    procs = {p.pid: p for p in L.list_processes()}
    me = procs[os.getpid()]
    assert me.name and me.argv and me.other_netns is False


# --- in a lab namespace: another interface, seen by the scan run inside it ---------------------------------

@pytest.mark.lab
def test_lab_wrong_interface_and_scan_sees_namespace(private_lab):
    net = private_lab("port-restricted")
    net.exec("client", ["ip", "addr", "add", "10.99.0.5/32", "dev", "lo"])
    with net.socket("client", socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("10.99.0.5", 0))
        s.listen()
        port = s.getsockname()[1]
        found = net.call_in("client", L.scan, [PortSpec(port, "tcp")])
        on_host = L.scan([PortSpec(port, "tcp")])
    assert [x.address for x in found] == ["10.99.0.5"]
    assert found[0].process  # this test's own socket: named
    assert on_host == []  # the scan reads the calling thread's namespace, not the host's
    p = L.judge(PortSpec(port, "tcp"), 4, net.addresses("client")[0], found)
    assert p is not None and p.code == "wrong-interface"
    assert "10.99.0.5" in p.detail and net.addresses("client")[0] in p.detail
