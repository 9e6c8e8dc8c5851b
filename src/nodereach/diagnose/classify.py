"""RFC 5780 / RFC 4787 NAT classification as pure functions of what the probes observed (no I/O).

The probes record observations (mapped addresses, which CHANGE-REQUEST replies arrived); these functions
turn them into the report's vocabulary. Keeping them pure lets every branch be tested from a table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from nodereach.diagnose.model import Behaviour, Mapping
from nodereach.net import SockAddr

Addr = SockAddr

EIM: Final = "endpoint-independent"
ADM: Final = "address-dependent"
APDM: Final = "address-and-port-dependent"

V = TypeVar("V", Mapping, Behaviour)


@dataclass(frozen=True)
class MappingObservation:
    """RFC 5780 §4.3 from one socket: test I to the primary address, II to (alt IP, primary port), III to
    (alt IP, alt port). `local_addresses` are the host's own addresses (a mapped address among them means
    no NAT)."""

    local_port: int | None
    local_addresses: frozenset[str]
    test1: Addr | None
    test2: Addr | None = None
    test3: Addr | None = None
    other_address: Addr | None = None


@dataclass(frozen=True)
class FilteringObservation:
    """RFC 5780 §4.4 from a socket of its own: did a plain binding get an answer, and did the replies to
    CHANGE-REQUEST (change IP and port / change port only) arrive? None = that request was not made or the
    server refused it (error 420)."""

    test1: bool
    change_ip_and_port: bool | None = None
    change_port: bool | None = None


@dataclass(frozen=True)
class Classification(Generic[V]):
    """A value of the report's vocabulary (mapping or filtering behaviour) and, for `unknown`, why."""

    value: V
    reason: str | None = None


def classify_mapping(obs: MappingObservation) -> Classification[Mapping]:
    """Mapping behaviour: no-nat when the server sees one of our own addresses, else compare tests I-III."""
    if obs.test1 is None:
        return Classification("unknown", "no reply to the binding request (test I)")
    if obs.test1[0] in obs.local_addresses and (obs.local_port is None or obs.test1[1] == obs.local_port):
        return Classification("no-nat")
    if obs.other_address is None:
        return Classification("unknown", "server did not announce an alternate address (not RFC 5780)")
    if obs.test2 is None:
        return Classification("unknown", "no reply from the alternate address (test II)")
    if obs.test2 == obs.test1:
        return Classification(EIM)
    if obs.test3 is None:
        return Classification("unknown", "no reply from the alternate address and port (test III)")
    if obs.test3 == obs.test2:
        return Classification(ADM)
    return Classification(APDM)


def classify_filtering(obs: FilteringObservation) -> Classification[Behaviour]:
    """Filtering behaviour from the CHANGE-REQUEST replies (works for a stateful firewall without NAT too)."""
    if not obs.test1:
        return Classification("unknown", "no reply to the binding request on the filtering socket")
    if obs.change_ip_and_port is None:
        return Classification("unknown", "server cannot answer from another address (no RFC 5780 server)")
    if obs.change_ip_and_port:
        return Classification(EIM)
    if obs.change_port is None:
        return Classification("unknown", "server cannot answer from another port")
    if obs.change_port:
        return Classification(ADM)
    return Classification(APDM)


@dataclass(frozen=True)
class ServerMapping:
    """The mapped address one plain STUN server reported for the same local socket."""

    server: Addr
    mapped: Addr | None


def mapping_from_servers(local_port: int | None, local_addresses: frozenset[str],
                         results: list[ServerMapping]) -> Classification[Mapping]:
    """Mapping behaviour from several plain STUN servers queried from one socket (no RFC 5780 server).

    Equal mappings towards different IPs mean endpoint-independent. Different ones mean a dependent mapping;
    two servers on one IP but different ports separate address- from address-and-port-dependent.
    """
    answered = [r for r in results if r.mapped is not None]
    if not answered:
        return Classification("unknown", "no STUN server answered")
    first = answered[0].mapped
    assert first is not None
    if first[0] in local_addresses and (local_port is None or first[1] == local_port):
        return Classification("no-nat")
    distinct_ips = {r.server[0] for r in answered}
    if len(distinct_ips) < 2:
        return Classification("unknown", "only one STUN server (address) answered; need two to compare")
    by_ip: dict[str, set[Addr]] = {}
    for r in answered:
        assert r.mapped is not None
        by_ip.setdefault(r.server[0], set()).add(r.mapped)
    mapped_all = {r.mapped for r in answered}
    if len(mapped_all) == 1:
        return Classification(EIM)
    for ip, mapped in by_ip.items():
        ports = {r.server[1] for r in answered if r.server[0] == ip}
        if len(ports) >= 2:
            if len(mapped) > 1:
                return Classification(APDM)
            return Classification(ADM)
    return Classification(APDM, "mapping differs per server address; address- vs address-and-port-dependent "
                                "not separated (no two servers on one address)")


def port_preservation(local_port: int | None, mapped: Addr | None, nat_present: bool | None) -> bool | None:
    """Whether the NAT kept the local port. Without NAT the question does not arise (None)."""
    if mapped is None or local_port is None or nat_present is not True:
        return None
    return mapped[1] == local_port


def classify_hairpinning(sent: bool, received: bool, nat_present: bool | None,
                         reason: str | None = None) -> tuple[bool | None, str | None]:
    """RFC 5780 §4.5: a request to our own public endpoint came back in through the NAT (or not)."""
    if nat_present is False:
        return None, "no NAT: hairpinning does not apply"
    if not sent:
        return None, reason or "public endpoint unknown"
    return received, None
