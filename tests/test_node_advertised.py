"""Advertised versus observed (pure): private, missing, stale or wrong addresses and ports, with the node's own
setting filled in with the measured values."""

from __future__ import annotations

import pytest

from nodereach.net import Endpoint, PortSpec
from nodereach.node.advertised import Observed, compare, settings_for
from nodereach.p2p.addrs import bitcoin_local_address, parse_lnd_uri
from nodereach.p2p.advertised import Advertised
from nodereach.p2p.multiaddr import parse_multiaddr

PUBLIC = "198.51.100.7"
OBS = Observed(public={4: PUBLIC}, listening=(PortSpec(30303, "tcp"), PortSpec(30303, "udp")))


def enr(address: str | None, port: int = 30303, protocol: str = "udp", field: str = "udp") -> Advertised:
    return Advertised(address, port, protocol, "enr", "ip" if address else "none",  # type: ignore[arg-type]
                      (6 if address and ":" in address else 4) if address else None, False, field)


def codes(problems) -> list[str]:
    return [p.code for p in problems]


def test_matching_advertisement_has_no_problem():
    assert compare("geth", [enr(PUBLIC), enr(PUBLIC, protocol="tcp", field="tcp")], OBS) == []


@pytest.mark.parametrize("address", ["192.168.1.10", "100.64.0.2", "127.0.0.1", "0.0.0.0", "169.254.1.1"])
def test_private_address_in_enr(address):
    (p,) = compare("Lighthouse", [enr(address)], OBS)
    assert p.code == "advertises-private-address" and address in p.detail and PUBLIC in p.detail
    assert p.settings[0] == f"--enr-address {PUBLIC}" and "--enr-udp-port 30303" in p.settings


def test_private_v6_is_judged_per_family():
    ads = [enr(PUBLIC), enr("fd00::5", field="udp6")]
    (p,) = compare("Lighthouse", ads, Observed(public={4: PUBLIC, 6: "2001:db8::5"}))
    assert p.code == "advertises-private-address" and "unique-local" in p.detail and "2001:db8::5" in p.detail


def test_multiaddr_list_with_a_public_one_is_fine_but_only_private_is_not():
    addrs = [parse_multiaddr(t).endpoint() for t in ("/ip4/127.0.0.1/tcp/4001", "/ip4/192.168.1.10/tcp/4001",
                                                     f"/ip4/{PUBLIC}/tcp/4001")]
    obs = Observed(public={4: PUBLIC}, listening=(PortSpec(4001, "tcp"),))
    assert compare("kubo", addrs, obs) == []
    (p,) = compare("kubo", addrs[:2], obs)
    assert p.code == "advertises-private-address"
    assert p.settings == (f"ipfs config --json Addresses.AppendAnnounce '[\"/ip4/{PUBLIC}/tcp/4001\", "
                          f"\"/ip4/{PUBLIC}/udp/4001/quic-v1\"]'",)


def test_stale_address_after_provider_change():
    obs = Observed(public={4: "198.51.100.9"}, previous=(PUBLIC,))
    (p,) = compare("geth", [enr(PUBLIC)], obs)
    assert p.code == "advertised-address-mismatch" and "stale" in p.detail
    assert p.settings == ("--nat extip:198.51.100.9",)
    (q,) = compare("geth", [enr("203.0.113.99")], obs)
    assert q.code == "advertised-address-mismatch" and "stale" not in q.detail


def test_port_changed_by_the_nat():
    obs = Observed(public={4: PUBLIC}, endpoints={PortSpec(9000, "udp"): Endpoint(PUBLIC, 61234)},
                   listening=(PortSpec(9000, "udp"),))
    (p,) = compare("Lighthouse", [enr(PUBLIC, 9000)], obs)
    assert p.code == "advertised-port-mismatch" and "61234" in p.detail
    assert "--enr-udp-port 61234" in p.settings


def test_the_routers_external_port_of_a_listened_port_is_right():
    """A forward or kept mapping 61234 -> 9000: advertising 61234 is what peers must dial."""
    obs = Observed(public={4: PUBLIC}, endpoints={PortSpec(9000, "tcp"): Endpoint(PUBLIC, 61234)},
                   listening=(PortSpec(9000, "tcp"),))
    assert compare("Teku", [enr(PUBLIC, 61234, "tcp", "tcp")], obs) == []
    (p,) = compare("Teku", [enr(PUBLIC, 9000, "tcp", "tcp")], obs)  # the internal one is not
    assert p.code == "advertised-port-mismatch" and "61234" in p.detail


def test_port_not_listened_on():
    (p,) = compare("Teku", [enr(PUBLIC, 9001, "tcp", "tcp")], Observed(public={4: PUBLIC},
                                                                       listening=(PortSpec(9000, "tcp"),)))
    assert p.code == "advertised-port-mismatch" and "listens on 9000/tcp" in p.detail
    assert p.settings == (f"--p2p-advertised-ip={PUBLIC}", "--p2p-advertised-port=9000")


def test_no_address():
    (p,) = compare("Lighthouse", [enr(None, 9000)], OBS)
    assert p.code == "advertises-no-address" and "NAT keeps the port" in p.detail
    (q,) = compare("lnd", [], Observed(public={4: PUBLIC}, listening=(PortSpec(9735, "tcp"),)), expects_address=True)
    assert q.code == "advertises-no-address" and q.settings == (f"externalip={PUBLIC}:9735  (lnd.conf)",)
    assert compare("Bitcoin Core", [], OBS) == []  # an empty localaddresses is normal


def test_sources_from_the_p2p_decoders():
    ln = parse_lnd_uri("02" + "ab" * 32 + "@192.168.1.10:9735").endpoint()
    (p,) = compare("lnd", [ln], Observed(public={4: PUBLIC}))
    assert p.code == "advertises-private-address" and p.settings == (f"externalip={PUBLIC}:9735  (lnd.conf)",)
    btc = bitcoin_local_address("203.0.113.5", 8333)
    (q,) = compare("Bitcoin Core", [btc], Observed(public={4: PUBLIC}))
    assert q.code == "advertised-address-mismatch" and q.settings[0] == f"externalip={PUBLIC}  (bitcoin.conf)"


def test_dns_names_are_not_compared():
    dns = parse_multiaddr("/dns4/node.example/tcp/4001").endpoint()
    assert compare("kubo", [dns], OBS) == []


@pytest.mark.parametrize(("software", "expected"), [
    ("geth", "--nat extip:203.0.113.1"), ("Nethermind", "--Network.ExternalIp 203.0.113.1"),
    ("Besu", "--p2p-host=203.0.113.1"), ("Prysm", "--p2p-host-ip=203.0.113.1"),
    ("Nimbus", "--nat:extip:203.0.113.1"), ("Lodestar", "--enr.ip 203.0.113.1"),
    ("monerod", "--p2p-external-port 18080"), ("Syncthing", "Listen Addresses: default, tcp://203.0.113.1:18080"),
])
def test_settings_table(software, expected):
    assert settings_for(software, ip="203.0.113.1", port=18080, protocol="tcp")[0] == expected
    assert settings_for("Unknown thing", ip="203.0.113.1", port=1) == ()
