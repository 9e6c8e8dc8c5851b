"""What the check's probes see in each lab scenario, built from the scenario's ground truth without a lab.

A small model of the lab's network (tests/test_check_lab.py runs the real one): NAT mapping and filtering per
RFC 4787 as the truth names them, the lab's addresses and routers, the provider's filters; over IPv6 the
scenario's `Ipv6Truth` (translation, the router's firewall). `observations()` returns the `Observations` a
clean run of `nodereach check --server 203.0.113.10 --server 2001:db8:203::10 --port 30303/udp --port
30303/tcp` produces there (in a scenario without IPv6 the client has no IPv6 route); the table tests then vary
them (loss, odd replies, time running out) and check `conclude()`'s report against the same judge the lab
tests use.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from nodereach.diagnose.model import PortmapProtocol, PortResult
from nodereach.diagnose.netinfo import NetInfo, RouteInfo
from nodereach.diagnose.observations import (
    FamilyObservations,
    FilteringTests,
    Hairpin,
    LocalView,
    MappingTests,
    Observations,
    PathTrace,
    PortmapObservation,
    PortPaths,
    PortProbe,
    ServerAnswer,
    TcpTest,
)
from nodereach.diagnose.options import CheckOptions, ResolvedServer, ServerSpec
from nodereach.diagnose.portfilter import CONTROL_PORT, WELL_KNOWN_TCP, PortPath
from nodereach.lab import addresses as A
from nodereach.lab.scenarios import GroundTruth, Ipv6Truth, get_scenario
from nodereach.net import PortSpec, SockAddr
from nodereach.stun.transaction import BindingReply

T = TypeVar("T")


def replace(obj: T, **changes: Any) -> T:
    """A copy with some fields changed (observations are msgspec Structs, a STUN reply is a dataclass)."""
    if isinstance(obj, msgspec.Struct):
        return msgspec.structs.replace(obj, **changes)
    return dataclasses.replace(obj, **changes)  # type: ignore[type-var]


PRIMARY: SockAddr = (A.SERVER_IP, 3478)
ALT_IP: SockAddr = (A.SERVER_ALT_IP, 3478)
ALT_BOTH: SockAddr = (A.SERVER_ALT_IP, 3479)
ALT_PORT: SockAddr = (A.SERVER_IP, 3479)
M_PORT, F_PORT = 40000, 40001
"""Local ports of the mapping and the filtering socket."""
PORTS = (PortSpec(30303, "udp"), PortSpec(30303, "tcp"))
SERVER = ResolvedServer(ServerSpec(A.SERVER_IP), (A.SERVER_IP,))
PRIMARY6: SockAddr = (A.SERVER_IP6, 3478)
ALT_IP6: SockAddr = (A.SERVER_ALT_IP6, 3478)
ALT_BOTH6: SockAddr = (A.SERVER_ALT_IP6, 3479)
ALT_PORT6: SockAddr = (A.SERVER_IP6, 3479)
SERVER6 = ResolvedServer(ServerSpec(A.SERVER_IP6), (A.SERVER_IP6,))
M6_PORT, F6_PORT = 40010, 40011
NO_IPV6 = f"no IPv6 connectivity on this host (no route to {A.SERVER_IP6}: Network is unreachable)"
"""What the engine says when the client has no IPv6 (the lab disables it outside the IPv6 scenarios)."""
RTT = 0.1


@dataclass(frozen=True)
class Net:
    """The lab's network as seen from `client`, from a scenario's ground truth."""

    truth: GroundTruth
    forwarded: bool = False
    home_router: bool = False
    listener: str = "nodereach"
    """Who takes the dial-back on the client: `nodereach` (nothing of the node listens, as in the lab tests)
    or `node` (the node listens: check/2 then calls an open path reachable)."""

    @property
    def local_ip(self) -> str:
        return A.CLIENT_IP if self.truth.nat_present else A.OPEN_CLIENT_IP

    @property
    def gateway(self) -> str:
        return A.HOME_LAN_GW if self.truth.nat_present else A.INET_SUBSCRIBER_GW

    def mapped(self, local_port: int, dest: SockAddr) -> SockAddr:
        """The public endpoint a packet from `local_port` to `dest` leaves with (RFC 4787 mapping)."""
        t = self.truth
        if not t.nat_present:
            return (self.local_ip, local_port)
        if t.mapping == "endpoint-independent":
            return (t.client_public_ip, local_port)  # masquerade keeps the port when free
        key = dest[0] if t.mapping == "address-dependent" else f"{dest[0]}:{dest[1]}"
        return (t.client_public_ip, 50000 + sum(map(ord, key)) % 10000)

    def passes(self, source: SockAddr, asked: SockAddr) -> bool:
        """Does a reply from `source` reach a socket that sent only to `asked` (RFC 4787 filtering)?"""
        f = self.truth.filtering
        if f in ("endpoint-independent", "no-nat"):
            return True
        if f == "address-dependent":
            return source[0] == asked[0]
        return source == asked

    def reply(self, local_port: int, sent_to: SockAddr, source: SockAddr | None = None, *,
              other: bool = True) -> BindingReply | None:
        """The server's answer as the socket sees it, or None where UDP or a filter drops it."""
        src = source or sent_to
        if self.truth.udp_blocked or not self.passes(src, sent_to):
            return None
        return BindingReply(source=src, mapped=self.mapped(local_port, sent_to),
                            other_address=ALT_BOTH if other else None, response_origin=src, rtt=RTT)

    def hops(self, transport: str) -> tuple[str | None, ...]:
        path = (*self.truth.private_hops, A.INET_SUBSCRIBER_GW, A.SERVER_IP)
        if transport == "udp" and self.truth.udp_blocked:
            # The provider's filter sits behind its router: that router still answers a TTL that expires there.
            return path[:-1]
        return path

    def port_state(self, port: int, transport: str) -> str:
        if port in self.truth.filtered_ports or (transport == "udp" and self.truth.udp_blocked):
            return "silent"
        return "refused"  # the server closes ports it does not serve: RST / ICMP port unreachable

    def dialback(self, spec: PortSpec) -> PortProbe:
        t = self.truth
        blocked = spec.port in t.filtered_ports or (spec.transport == "udp" and t.udp_blocked)
        ok = (t.unsolicited_inbound or self.forwarded) and not blocked
        result = PortResult(port=spec.port, protocol=spec.transport, reachable=ok,
                            reason="ok" if ok else "no-mapping-or-filtered", listener=self.listener,  # type: ignore[arg-type]
                            rtt_ms=RTT * 1000 if ok else None)
        endpoint = None
        if spec.transport == "udp" and not t.udp_blocked:
            public = self.mapped(spec.port, PRIMARY)
            endpoint = f"{public[0]}:{public[1]}"
        return PortProbe(spec, result, endpoint)

    def portmap(self) -> PortmapObservation:
        if not self.home_router:
            missing = PortmapProtocol(available=False, reason="port-unreachable")
            return PortmapObservation(missing, missing, PortmapProtocol(reason="no complete answer within 0.5 s"))
        # miniupnpd learns its external address by STUN: behind CGNAT the outer, public one.
        wan = A.ROUTER_WAN_IP if self.truth.layers == 1 else self.truth.client_public_ip
        offered = PortmapProtocol(available=True, external_address=wan, reason="ok")
        return PortmapObservation(offered, offered, offered)


@dataclass(frozen=True)
class Net6:
    """The lab's IPv6 as seen from `client`: no translation or NPTv6 (prefix swapped, ports kept), the home
    router's stateful firewall (address-and-port-dependent) or none."""

    truth: Ipv6Truth
    pinholes: bool = False
    """The firewall lets the node's ports in (static pinholes, `lab.open_pinhole`)."""
    listener: str = "nodereach"

    def mapped(self, local_port: int) -> SockAddr:
        return (self.truth.public_address, local_port)  # both translations here keep the port (1:1)

    def passes(self, source: SockAddr, asked: SockAddr) -> bool:
        f = self.truth.filtering
        if f in ("endpoint-independent", "no-nat"):
            return True
        if f == "address-dependent":
            return source[0] == asked[0]
        return source == asked

    def reply(self, local_port: int, sent_to: SockAddr, source: SockAddr | None = None) -> BindingReply | None:
        src = source or sent_to
        if not self.passes(src, sent_to):
            return None
        return BindingReply(source=src, mapped=self.mapped(local_port), other_address=ALT_BOTH6,
                            response_origin=src, rtt=RTT)

    def dialback(self, spec: PortSpec) -> PortProbe:
        ok = self.truth.unsolicited_inbound or self.pinholes
        result = PortResult(port=spec.port, protocol=spec.transport, family=6, reachable=ok,
                            reason="ok" if ok else "no-mapping-or-filtered", listener=self.listener,  # type: ignore[arg-type]
                            rtt_ms=RTT * 1000 if ok else None, second_address=True if ok else None)
        endpoint = f"[{self.truth.public_address}]:{spec.port}" if spec.transport == "udp" else None
        return PortProbe(spec, result, endpoint)

    def family(self, ports: tuple[PortSpec, ...]) -> FamilyObservations:
        t1 = self.reply(M6_PORT, PRIMARY6)
        r2, r3 = self.reply(M6_PORT, ALT_IP6), self.reply(M6_PORT, ALT_BOTH6)
        tcp = BindingReply(PRIMARY6, mapped=(self.truth.public_address, 45010), other_address=ALT_BOTH6,
                           response_origin=PRIMARY6, rtt=RTT)
        return FamilyObservations(
            6, (SERVER6,), source=self.truth.client_address, local_port=M6_PORT,
            binding=(ServerAnswer(SERVER6, t1),),
            mapping=MappingTests(ALT_BOTH6, r2.mapped if r2 else None, r3.mapped if r3 else None),
            filtering=FilteringTests(self.reply(F6_PORT, PRIMARY6), self.reply(F6_PORT, PRIMARY6, ALT_BOTH6),
                                     self.reply(F6_PORT, PRIMARY6, ALT_PORT6)),
            tcp=TcpTest(tcp, None), ports=tuple(self.dialback(p) for p in ports))


def observations(scenario: str, *, ports: tuple[PortSpec, ...] = PORTS, forwarded: bool = False,
                 home_router: bool = False, listener: str = "nodereach", pinholes: bool = False,
                 listener6: str | None = None) -> Observations:
    """A clean run of check in `scenario` (nothing lost, every probe finished). `forwarded`: the IPv4 ports
    are forwarded on the home router; `pinholes`: the IPv6 firewall lets them in; `listener6`: who takes the
    dial-back over IPv6 (default: as over IPv4)."""
    truth = get_scenario(scenario).truth(home_router=home_router)
    net = Net(truth, forwarded, home_router, listener)
    t1 = net.reply(M_PORT, PRIMARY)
    r2, r3 = net.reply(M_PORT, ALT_IP), net.reply(M_PORT, ALT_BOTH)
    tcp_ports = sorted({*WELL_KNOWN_TCP, *(p.port for p in ports if p.transport == "tcp"), CONTROL_PORT})
    udp_ports = sorted({*(p.port for p in ports if p.transport == "udp"), CONTROL_PORT}) \
        if any(p.transport == "udp" for p in ports) else []
    paths = tuple([PortPath(p, "tcp", net.port_state(p, "tcp")) for p in tcp_ports]
                  + [PortPath(p, "udp", net.port_state(p, "udp")) for p in udp_ports])
    tcp_mapped = (truth.client_public_ip if truth.nat_present else net.local_ip, 45000)
    tcp_reply = BindingReply(PRIMARY, mapped=tcp_mapped, other_address=ALT_BOTH, response_origin=PRIMARY, rtt=RTT)
    plain = net.reply(F_PORT, PRIMARY)
    v4 = FamilyObservations(
        4, (SERVER,), local_port=M_PORT, binding=(ServerAnswer(SERVER, t1),),
        mapping=MappingTests(ALT_BOTH, r2.mapped if r2 else None, r3.mapped if r3 else None) if t1 else None,
        filtering=FilteringTests(plain, net.reply(F_PORT, PRIMARY, ALT_BOTH), net.reply(F_PORT, PRIMARY, ALT_PORT)),
        tcp=TcpTest(tcp_reply, None), path=PathTrace(udp=net.hops("udp"), tcp=net.hops("tcp")),
        port_paths=PortPaths(paths), ports=tuple(net.dialback(p) for p in ports),
        hairpin=Hairpin(True, bool(truth.hairpinning)) if t1 and plain else
        Hairpin(False, False, "no public endpoint to aim at"))
    v4 = replace(v4, source=net.local_ip)
    addresses = {net.local_ip, "127.0.0.1"}
    if truth.ipv6 is not None:
        v6 = Net6(truth.ipv6, pinholes, listener6 or listener).family(ports)
        addresses |= {truth.ipv6.client_address, "::1", "fe80::10"}
    else:
        v6 = FamilyObservations(6, (SERVER6,), unavailable=NO_IPV6, route_error=True)
    local = LocalView(source=net.local_ip, primary=A.SERVER_IP, net=NetInfo(
        addresses=frozenset(addresses),
        routes={A.SERVER_IP: RouteInfo(source=net.local_ip, gateway=net.gateway, interface="eth0", index=2)}))
    return Observations(options=CheckOptions(servers=(SERVER.spec, SERVER6.spec), ports=ports),
                        servers=(SERVER, SERVER6), families={4: v4, 6: v6}, local=local, portmap=net.portmap())


def v4(obs: Observations) -> FamilyObservations:
    family = obs.family(4)
    assert family is not None
    return family


def with_v4(obs: Observations, **changes: object) -> Observations:
    """The same run with some IPv4 observations replaced."""
    return replace(obs, families={**obs.families, 4: replace(v4(obs), **changes)})


def v6(obs: Observations) -> FamilyObservations:
    family = obs.family(6)
    assert family is not None
    return family


def with_v6(obs: Observations, **changes: object) -> Observations:
    """The same run with some IPv6 observations replaced."""
    return replace(obs, families={**obs.families, 6: replace(v6(obs), **changes)})
