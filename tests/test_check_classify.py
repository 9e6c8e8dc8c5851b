"""RFC 5780 classification from observations: every branch from a table."""

from __future__ import annotations

import pytest

from nodereach.diagnose.classify import (
    FilteringObservation,
    MappingObservation,
    ServerMapping,
    classify_filtering,
    classify_hairpinning,
    classify_mapping,
    mapping_from_servers,
    port_preservation,
)

LOCAL = frozenset({"192.168.1.10"})
OTHER = ("203.0.113.11", 3479)
X = ("198.51.100.2", 40000)
Y = ("198.51.100.2", 40001)
Z = ("198.51.100.2", 40002)


@pytest.mark.parametrize(("obs", "expected"), [
    (MappingObservation(40000, LOCAL, None), "unknown"),
    (MappingObservation(40000, frozenset({"198.51.100.50"}), ("198.51.100.50", 40000), None, None, OTHER), "no-nat"),
    (MappingObservation(40000, LOCAL, X, None, None, None), "unknown"),
    (MappingObservation(40000, LOCAL, X, None, None, OTHER), "unknown"),
    (MappingObservation(40000, LOCAL, X, X, None, OTHER), "endpoint-independent"),
    (MappingObservation(40000, LOCAL, X, Y, None, OTHER), "unknown"),
    (MappingObservation(40000, LOCAL, X, Y, Y, OTHER), "address-dependent"),
    (MappingObservation(40000, LOCAL, X, Y, Z, OTHER), "address-and-port-dependent"),
    # A public local address but another port: a NAT (port translation) is in the way.
    (MappingObservation(1234, frozenset({"198.51.100.2"}), X, X, X, OTHER), "endpoint-independent"),
])
def test_mapping(obs: MappingObservation, expected: str) -> None:
    result = classify_mapping(obs)
    assert result.value == expected
    assert (result.reason is None) == (expected not in ("unknown",))


@pytest.mark.parametrize(("obs", "expected"), [
    (FilteringObservation(False), "unknown"),
    (FilteringObservation(True, None, None), "unknown"),
    (FilteringObservation(True, True, None), "endpoint-independent"),
    (FilteringObservation(True, True, False), "endpoint-independent"),
    (FilteringObservation(True, False, True), "address-dependent"),
    (FilteringObservation(True, False, False), "address-and-port-dependent"),
    (FilteringObservation(True, False, None), "unknown"),
])
def test_filtering(obs: FilteringObservation, expected: str) -> None:
    assert classify_filtering(obs).value == expected


A, B, C = ("203.0.113.30", 3478), ("203.0.113.31", 3478), ("203.0.113.30", 3479)


@pytest.mark.parametrize(("results", "expected"), [
    ([], "unknown"),
    ([ServerMapping(A, None), ServerMapping(B, None)], "unknown"),
    ([ServerMapping(A, X)], "unknown"),
    ([ServerMapping(A, X), ServerMapping(B, None)], "unknown"),
    ([ServerMapping(A, X), ServerMapping(B, X)], "endpoint-independent"),
    ([ServerMapping(A, X), ServerMapping(B, Y)], "address-and-port-dependent"),
    ([ServerMapping(A, X), ServerMapping(C, X), ServerMapping(B, Y)], "address-dependent"),
    ([ServerMapping(A, X), ServerMapping(C, Z), ServerMapping(B, Y)], "address-and-port-dependent"),
    ([ServerMapping(A, ("192.168.1.10", 5000)), ServerMapping(B, ("192.168.1.10", 5000))], "no-nat"),
])
def test_mapping_from_plain_servers(results: list[ServerMapping], expected: str) -> None:
    assert mapping_from_servers(5000, LOCAL, results).value == expected


def test_mapping_from_plain_servers_says_when_adm_apdm_unseparated() -> None:
    result = mapping_from_servers(5000, LOCAL, [ServerMapping(A, X), ServerMapping(B, Y)])
    assert result.reason and "not separated" in result.reason


@pytest.mark.parametrize(("local_port", "mapped", "nat", "expected"), [
    (40000, X, True, True),
    (40001, X, True, False),
    (40000, X, False, None),
    (40000, None, True, None),
    (None, X, True, None),
])
def test_port_preservation(local_port: int | None, mapped: tuple[str, int] | None, nat: bool,
                           expected: bool | None) -> None:
    assert port_preservation(local_port, mapped, nat) is expected


@pytest.mark.parametrize(("sent", "received", "nat", "expected"), [
    (True, True, True, True), (True, False, True, False), (False, False, True, None), (True, True, False, None),
])
def test_hairpinning(sent: bool, received: bool, nat: bool, expected: bool | None) -> None:
    value, reason = classify_hairpinning(sent, received, nat, "x")
    assert value is expected
    assert (reason is None) == (expected is not None)
