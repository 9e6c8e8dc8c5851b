"""The node-software catalog and the choice of ports when the operator names none."""

from __future__ import annotations

from nodereach.net import PortSpec
from nodereach.node import catalog as C
from nodereach.node.listeners import Listener, ProcessInfo


def test_identify_by_name_and_runtime_argv():
    assert C.identify("geth").name == "geth"  # type: ignore[union-attr]
    assert C.identify("transmission-da").kind == "transmission"  # type: ignore[union-attr]  (comm is cut to 15)
    assert C.identify("nimbus_beacon_n").name == "Nimbus"  # type: ignore[union-attr]
    assert C.identify("java", ("java", "-cp", "/opt/besu/lib/*", "org.hyperledger.besu.Besu")).name == "Besu"  # type: ignore[union-attr]
    assert C.identify("java", ("java", "-jar", "teku.jar")).name == "Teku"  # type: ignore[union-attr]
    assert C.identify("node", ("node", "/usr/bin/lodestar", "beacon")).name == "Lodestar"  # type: ignore[union-attr]
    assert C.identify("java", ("java", "-jar", "minecraft.jar")) is None
    assert C.identify("bash") is None


def test_every_kind_has_a_program_and_defaults():
    assert {p.kind for p in C.PROGRAMS} == set(C.ADAPTER_KINDS)
    assert C.identify("bitcoind").ports == (PortSpec(8333, "tcp"),)  # type: ignore[union-attr]
    assert set(C.identify("lighthouse").ports) == {PortSpec(9000, "tcp"), PortSpec(9000, "udp"),  # type: ignore[union-attr]
                                                   PortSpec(9001, "udp")}
    for p in C.PROGRAMS:
        assert p.doc.startswith("https://") and p.rpc.startswith("http")
        assert not {q.port for q in p.ports} & set(p.other_ports)


def L(port: int, transport: str, address: str = "0.0.0.0", pid: int | None = None) -> Listener:
    return Listener(transport, address, port, 6 if ":" in address else 4, True, pid=pid)  # type: ignore[arg-type]


def test_pick_from_listening_program_with_custom_port():
    procs = [ProcessInfo(100, "geth", ("geth", "--port", "30304")), ProcessInfo(5, "sshd", ("sshd",))]
    listeners = [L(30304, "tcp", pid=100), L(30304, "udp", pid=100), L(8545, "tcp", "127.0.0.1", pid=100),
                 L(8551, "tcp", pid=100), L(22, "tcp", pid=5)]
    pick = C.pick_ports(procs, listeners)
    assert pick.ports == (PortSpec(30304, "tcp"), PortSpec(30304, "udp"))
    assert "geth (pid 100) listens on 30304/tcp+udp" in pick.reason and "defaults: 30303/tcp+udp" in pick.reason


def test_pick_adds_the_missing_half_of_a_pair():
    pick = C.pick_ports([ProcessInfo(7, "lighthouse")], [L(9000, "tcp", pid=7)])
    assert PortSpec(9000, "udp") in pick.ports and PortSpec(9000, "tcp") in pick.ports
    assert PortSpec(9000, "tcp") not in C.pick_ports([ProcessInfo(8, "monerod")], [L(18080, "tcp", pid=8)]).ports[1:]


def test_pick_defaults_when_sockets_are_hidden():
    pick = C.pick_ports([ProcessInfo(9, "monerod")], [L(18080, "tcp")])  # socket of another user: no pid
    assert pick.ports == (PortSpec(18080, "tcp"),)
    assert "not visible to this user" in pick.reason


def test_pick_from_default_ports_with_no_known_program():
    pick = C.pick_ports([ProcessInfo(1, "init")], [L(30303, "tcp"), L(30303, "udp"), L(22, "tcp")])
    assert set(pick.ports) == {PortSpec(30303, "tcp"), PortSpec(30303, "udp")}
    assert "geth" in pick.reason and "Nethermind" in pick.reason


def test_pick_nothing():
    pick = C.pick_ports([ProcessInfo(1, "init")], [L(22, "tcp"), L(30303, "tcp", "127.0.0.1")])
    assert pick.ports == () and "--port" in pick.reason


def test_program_in_another_namespace_is_not_picked():
    pick = C.pick_ports([ProcessInfo(3, "geth", other_netns=True)], [])
    assert pick.ports == () and pick.found == ()
