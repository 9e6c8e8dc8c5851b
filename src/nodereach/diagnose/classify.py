"""RFC 5780 / RFC 4787 NAT classification as pure functions of what the probes observed (no I/O).

The probes record observations (mapped addresses, which CHANGE-REQUEST replies arrived); these functions
turn them into the report's vocabulary. Keeping them pure lets every branch be tested from a table.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

import msgspec

from nodereach.diagnose.model import Behaviour, Mapping, Translation6
from nodereach.net import SockAddr

Addr = SockAddr

EIM: Final = "endpoint-independent"
ADM: Final = "address-dependent"
APDM: Final = "address-and-port-dependent"

V = TypeVar("V", Mapping, Behaviour, Translation6)


class MappingObservation(msgspec.Struct, frozen=True):
    """RFC 5780 §4.3 from one socket: test I to the primary address, II to (alt IP, primary port), III to
    (alt IP, alt port). `local_addresses` are the host's own addresses (a mapped address among them means
    no NAT)."""

    local_port: int | None
    local_addresses: frozenset[str]
    test1: Addr | None
    test2: Addr | None = None
    test3: Addr | None = None
    other_address: Addr | None = None


class FilteringObservation(msgspec.Struct, frozen=True):
    """RFC 5780 §4.4 from a socket of its own: did a plain binding get an answer, and did the replies to
    CHANGE-REQUEST (change IP and port / change port only) arrive? None = that request was not made or the
    server refused it (error 420)."""

    test1: bool
    change_ip_and_port: bool | None = None
    change_port: bool | None = None


class Classification(msgspec.Struct, Generic[V], frozen=True):
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


class ServerMapping(msgspec.Struct, frozen=True):
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


@dataclass(frozen=True)
class TranslationObservation:
    """What tells whether this host's IPv6 address is translated on the way out: the source address the
    kernel picks toward the server, the host's own addresses, the mapping socket's port, the address test I
    saw, and the RFC 5780 mapping behaviour over IPv6."""

    source: str | None
    local_addresses: frozenset[str]
    local_port: int | None
    mapped: Addr | None
    mapping: Mapping = "unknown"


def _words(address: str) -> tuple[int, ...]:
    raw = ipaddress.IPv6Address(address).packed
    return tuple(int.from_bytes(raw[i:i + 2], "big") for i in range(0, 16, 2))


def _ones_sum(words: tuple[int, ...]) -> int:
    """One's complement sum of 16-bit words, 0xffff folded to 0 (the two zeros of one's complement)."""
    total = sum(words)
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return 0 if total == 0xFFFF else total


def prefix_translated(inside: str, outside: str) -> bool:
    """Is `outside` `inside` with its prefix swapped as NPTv6 does? Either the interface identifier (low 64
    bits) is kept (Linux's `snat ip6 prefix to` keeps it and fixes the checksums up), or the rewrite is RFC
    6296's checksum-neutral one (§3.2: the prefix swap and one adjusted 16-bit word leave the one's complement
    sum of the address unchanged, so transport checksums stay valid)."""
    try:
        a, b = _words(inside), _words(outside)
    except ValueError:
        return False
    if a == b:
        return False
    return a[4:] == b[4:] or _ones_sum(a) == _ones_sum(b)


def classify_translation(obs: TranslationObservation) -> Classification[Translation6]:
    """`none` when the server saw the host's own address and port; `nptv6` when only the prefix changed
    (interface identifier or RFC 6296 checksum neutrality kept, ports kept, one mapping for every
    destination); `nat66` for any other rewrite; `unknown` without the facts to tell."""
    if obs.mapped is None:
        return Classification("unknown", "no IPv6 mapping observed (no STUN answer over IPv6)")
    address, port = obs.mapped
    port_kept = obs.local_port is None or port == obs.local_port
    if address == obs.source or address in obs.local_addresses:
        if port_kept:
            return Classification("none")
        return Classification("nat66", f"the address is kept but the port changed ({obs.local_port} -> {port}): "
                                       "a port-translating NAT66")
    if obs.source is None:
        return Classification("unknown", f"the servers see {address}, but this host's own IPv6 source address "
                                         "is unknown")
    if not port_kept:
        return Classification("nat66", f"{obs.source} is seen as {address} and the port changed "
                                       f"({obs.local_port} -> {port}): a stateful NAT66")
    if obs.mapping in (ADM, APDM):
        return Classification("nat66", f"{obs.source} is seen as {address} with a new mapping per destination "
                                       f"({obs.mapping}): a stateful NAT66")
    if prefix_translated(obs.source, address):
        return Classification("nptv6")
    return Classification("nat66", f"{obs.source} is seen as {address}: more than the prefix was rewritten")
