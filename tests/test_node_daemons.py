"""The node-software fixtures start real daemons in the lab and their own RPC answers (tests/node_fixtures.py).

These prove the fixtures others build on (node adapters, the Levin and BitTorrent proofs): each daemon starts
in its namespace with port mapping off, answers its RPC, and inbound peers really arrive through a lab NAT
once the port is forwarded (and not before).
"""

from __future__ import annotations

import time

import pytest

from nodereach.lab import addresses as A

pytestmark = pytest.mark.lab


def test_monerod_inbound_count_follows_the_forward(lab, node_daemons):
    net = lab("port-restricted")
    node = node_daemons.monerod(net, "client")
    info = node.get_info()
    assert info["nettype"] == "fakechain"
    assert info["restricted"] is False
    assert info["incoming_connections_count"] == 0
    # A peer on the lab internet dials the router's public address: dropped while nothing is forwarded.
    outside = node_daemons.monerod(net, "peer", p2p_address=A.PEER_IP, connect_to=f"{A.ROUTER_WAN_IP}:18080")
    time.sleep(3.0)  # monerod dials its exclusive node about every second: give it a few tries to fail
    assert node.get_info()["incoming_connections_count"] == 0
    net.forward(18080, "tcp")
    info = node.wait_for(lambda i: i["incoming_connections_count"] >= 1, timeout=45)
    assert info["incoming_connections_count"] >= 1
    conns = node.rpc("get_connections")["connections"]
    assert any(c["incoming"] and c["host"] == A.PEER_IP for c in conns)
    assert outside.get_info()["outgoing_connections_count"] >= 1


def test_monerod_restricted_rpc_hides_counts(lab, node_daemons):
    net = lab("open")
    node = node_daemons.monerod(net, "client", restricted=True)
    info = node.get_info()
    assert info["restricted"] is True


def test_transmission_session_and_seed(lab, node_daemons):
    net = lab("open")
    node = node_daemons.transmission(net, "client")
    session = node.rpc("session-get")
    assert session["peer-port"] == 51413
    assert session["port-forwarding-enabled"] is False
    infohash = node.add_seed()
    assert len(infohash) == 40
    got = node.rpc("torrent-get", {"fields": ["hashString", "peers"], "ids": [infohash]})["torrents"]
    assert got[0]["hashString"] == infohash and got[0]["peers"] == []


def test_transmission_auth_and_portmap_setting(lab, node_daemons):
    net = lab("open")
    node = node_daemons.transmission(net, "client", username="op", password="s3cret", port_forwarding=True)
    assert node.rpc("session-get")["port-forwarding-enabled"] is True
    node.password = "wrong"
    with pytest.raises(ValueError, match="401"):
        node.rpc("session-get")


def test_syncthing_inbound_connection_through_forward(lab, node_daemons):
    net = lab("port-restricted")
    inside = node_daemons.syncthing(net, "client")
    status = inside.rest("/rest/system/status")
    assert status["myID"] == inside.device_id
    net.forward(22000, "tcp")
    # Each side learns the other before the outside dials (a first dial to a device that does not know it yet is
    # dropped, and the retry can come late: test_node_adapters_lab's twin failed so once).
    outside = node_daemons.syncthing(net, "peer")
    inside.add_device(outside.device_id)
    outside.add_device(inside.device_id, f"tcp://{A.ROUTER_WAN_IP}:22000")
    deadline = time.monotonic() + 30
    conn: dict[str, object] = {}
    while time.monotonic() < deadline:
        conn = inside.rest("/rest/system/connections")["connections"].get(outside.device_id, {})
        if conn.get("connected"):
            break
        time.sleep(0.2)
    assert conn.get("connected") is True, conn
    assert conn.get("type") == "tcp-server"  # it came in
    assert str(conn.get("address", "")).startswith(A.PEER_IP)
