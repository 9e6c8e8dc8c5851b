"""Protocol proofs against real node software in the lab: monerod (Levin ping), transmission-daemon
(BitTorrent handshake) and js-libp2p (multistream-select), each behind the lab's home router or on the lab
internet, with `nodereach serve` on the lab internet speaking first. Bitcoin and Ethereum nodes cannot be
installed here; their codecs are tested against the specs' vectors in tests/test_p2p_protocols.py.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from nodereach.lab import Lab
from nodereach.lab import addresses as A
from nodereach.p2p.multiaddr import parse_multiaddr
from nodereach.reach.client import DialBackResult, ProofRequest, prove
from serve_lab_helpers import SERVER, serving

pytestmark = pytest.mark.lab


async def prove_from(net: Lab, host: str, port: int, proof: ProofRequest) -> DialBackResult:
    return await net.run_async(host, functools.partial(prove, SERVER, port, proof, timeout=8.0))


async def test_monerod_answers_the_levin_ping_once_forwarded(lab, node_daemons, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    net: Lab = lab("port-restricted")
    node_daemons.monerod(net, "client")
    with serving(net, tmp_path):
        closed = await prove_from(net, "client", 18080, ProofRequest("monero"))
        assert closed.observed_address == A.ROUTER_WAN_IP
        assert closed.reachable is False and closed.protocol_check is not None
        assert not closed.protocol_check.ok and "no TCP connection" in closed.protocol_check.detail

        net.forward(18080, "tcp")
        r = await prove_from(net, "client", 18080, ProofRequest("monero"))
        assert (r.reachable, r.reason) == (True, "ok")
        assert r.protocol_check is not None and r.protocol_check.ok, r.protocol_check
        assert "ping OK, peer_id" in r.protocol_check.detail and r.protocol_check.rtt_ms is not None

        # The same open port does not pass for another node's protocol: monerod closes on foreign bytes.
        for other in (ProofRequest("bitcoin", network="regtest"), ProofRequest("libp2p")):
            wrong = await prove_from(net, "client", 18080, other)
            assert wrong.reachable is True
            assert wrong.protocol_check is not None and not wrong.protocol_check.ok, wrong.protocol_check


async def test_transmission_answers_only_for_a_torrent_it_serves(lab, node_daemons, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    net: Lab = lab("open")
    node = node_daemons.transmission(net, "client")
    infohash = bytes.fromhex(node.add_seed())
    with serving(net, tmp_path):
        r = await prove_from(net, "client", 51413, ProofRequest("bittorrent", infohash=infohash))
        assert (r.reachable, r.reason, r.observed_address) == (True, "ok", A.OPEN_CLIENT_IP)
        assert r.protocol_check is not None and r.protocol_check.ok, r.protocol_check
        assert "-TR" in r.protocol_check.detail  # Transmission's Azureus-style peer id

        unknown = await prove_from(net, "client", 51413, ProofRequest("bittorrent", infohash=bytes(20)))
        assert unknown.reachable is True
        assert unknown.protocol_check is not None and not unknown.protocol_check.ok
        assert "closed without a handshake" in unknown.protocol_check.detail


async def test_js_libp2p_echoes_multistream_once_forwarded(lab, js_libp2p, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    net: Lab = lab("port-restricted")
    node = js_libp2p(net, "client", port=4001)
    # What js-libp2p itself prints decodes with nodereach's multiaddr reader.
    endpoints = [parse_multiaddr(a).endpoint() for a in node.addrs]
    assert any(e is not None and (e.port, e.protocol, e.address) == (4001, "tcp", A.CLIENT_IP) for e in endpoints)
    assert all(parse_multiaddr(a).peer_id == node.peer_id for a in node.addrs)
    with serving(net, tmp_path):
        before = await prove_from(net, "client", 4001, ProofRequest("libp2p"))
        assert before.reachable is False and before.protocol_check is not None and not before.protocol_check.ok

        net.forward(4001, "tcp")
        r = await prove_from(net, "client", 4001, ProofRequest("libp2p"))
        assert (r.reachable, r.reason) == (True, "ok")
        assert r.protocol_check is not None and r.protocol_check.ok, r.protocol_check

        levin = await prove_from(net, "client", 4001, ProofRequest("monero"))
        assert levin.protocol_check is not None and not levin.protocol_check.ok
