"""NAT layers / CGNAT inference from path evidence, table-driven."""

from __future__ import annotations

import pytest

from nodereach.diagnose.layers import PathEvidence, hop_kind, infer_layers, make_hops


@pytest.mark.parametrize(("addr", "kind"), [
    ("192.168.1.10", "private"), ("10.1.2.3", "private"), ("172.20.0.1", "private"), ("172.32.0.1", "public"),
    ("100.64.0.1", "shared"), ("100.127.255.254", "shared"), ("100.128.0.1", "public"),
    ("198.51.100.2", "public"), ("203.0.113.10", "public"), ("8.8.8.8", "public"), ("127.0.0.1", "special"),
    ("169.254.1.1", "special"), ("192.0.0.2", "special"), ("fd00::1", "private"), ("fe80::1", "special"),
    ("2001:db8::1", "public"), ("::ffff:10.0.0.1", "private"),
])
def test_address_kind(addr: str, kind: str) -> None:
    assert hop_kind(addr) == kind


def hops(*addrs: str | None) -> tuple:
    return tuple(make_hops(list(addrs)))


CASES = [
    # name, evidence, present, layers, cgnat
    ("open", PathEvidence("198.51.100.50", "198.51.100.50", "198.51.100.1", (), hops("198.51.100.1")),
     False, 0, False),
    ("single nat", PathEvidence("192.168.1.10", "198.51.100.2", "192.168.1.1", (),
                                hops("192.168.1.1", "198.51.100.1", "203.0.113.10")), True, 1, False),
    ("double nat", PathEvidence("192.168.1.10", "198.51.100.3", "192.168.1.1", (),
                                hops("192.168.1.1", "10.0.0.1", "198.51.100.1")), True, 2, False),
    ("cgnat", PathEvidence("192.168.1.10", "198.51.100.3", "192.168.1.1", (),
                           hops("192.168.1.1", "100.64.0.1", "198.51.100.1")), True, 2, True),
    ("cgnat seen through the gateway only (no ICMP)",
     PathEvidence("192.168.1.10", "198.51.100.3", "192.168.1.1", ("100.64.0.2",), hops(None, None)),
     True, 2, True),
    ("cgnat with silent hops in between",
     PathEvidence("192.168.1.10", "198.51.100.3", "192.168.1.1", (), hops("192.168.1.1", None, "100.64.0.1",
                                                                          None, "198.51.100.1")), True, 2, True),
    ("single nat, gateway reports the public address, no ICMP",
     PathEvidence("192.168.1.10", "198.51.100.2", "192.168.1.1", ("198.51.100.2",), hops(None)), True, 1, False),
    ("single nat, nothing else known", PathEvidence("192.168.1.10", "198.51.100.2", "192.168.1.1"), True, 1, None),
    ("gateway public but another public address outside",
     PathEvidence("192.168.1.10", "198.51.100.3", "192.168.1.1", ("198.51.100.9",), ()), True, 2, None),
    ("no answer at all, private local", PathEvidence("192.168.1.10", None, "192.168.1.1"), True, 1, None),
    ("no answer at all, public local", PathEvidence("198.51.100.50", None, "198.51.100.1"), None, None, None),
    ("mobile: local address already in CGNAT space", PathEvidence("100.70.1.2", "198.51.100.3", "100.70.0.1", (),
                                                                  hops("100.70.0.1", "198.51.100.1")),
     True, 1, True),
]


@pytest.mark.parametrize(("name", "ev", "present", "layers", "cgnat"), CASES, ids=[c[0] for c in CASES])
def test_infer_layers(name: str, ev: PathEvidence, present: bool | None, layers: int | None,
                      cgnat: bool | None) -> None:
    result = infer_layers(ev)
    assert (result.present, result.layers, result.cgnat) == (present, layers, cgnat)
    if cgnat is None and present:
        assert "cgnat" in result.reasons


def test_layer_owners() -> None:
    result = infer_layers(PathEvidence("192.168.1.10", "198.51.100.3", "192.168.1.1", (),
                                       hops("192.168.1.1", "100.64.0.1", "198.51.100.1")))
    assert [(d.owner, d.inside_network, d.router) for d in result.details] == [
        ("operator", "192.168.0.0/16", "192.168.1.1"), ("provider", "100.64.0.0/10", "100.64.0.1")]
    assert result.details[-1].external_address == "198.51.100.3"
    double = infer_layers(PathEvidence("192.168.1.10", "198.51.100.3", "192.168.1.1", (),
                                       hops("192.168.1.1", "10.0.0.1", "198.51.100.1")))
    assert [d.owner for d in double.details] == ["operator", "unknown"]
