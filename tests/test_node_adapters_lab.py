"""Node adapters against the real software, started in lab namespaces (tests/node_fixtures.py): monerod,
transmission-daemon and Syncthing. The adapters run inside the node's namespace, as the check does on the
node's host, and read what the daemons really answer."""

from __future__ import annotations

import time

import pytest

from nodereach.lab import addresses as A
from nodereach.node.reader import NodeSpec, Secrets, read_node

pytestmark = pytest.mark.lab


NO_SECRETS = Secrets()


def read_in(net, host: str, spec: str, budget_s: float = 2.0, secrets: Secrets = NO_SECRETS):
    return net.call_in(host, _run, spec, budget_s, secrets)


def _run(spec: str, budget_s: float, secrets: Secrets):
    import asyncio

    return asyncio.run(read_node(NodeSpec.parse(spec), budget_s=budget_s, secrets=secrets))


def test_monero_inbound_goes_from_zero_to_one_through_the_forward(lab, node_daemons):
    net = lab("port-restricted")
    node = node_daemons.monerod(net, "client")
    first = read_in(net, "client", "monero")
    assert first.error is None, first.error
    assert first.status.software == "monerod" and first.status.version.startswith("0.18")
    assert (first.status.inbound, first.status.outbound) == (0, 0)
    assert first.endpoint == "http://127.0.0.1:18081"
    net.forward(18080, "tcp")
    node_daemons.monerod(net, "peer", p2p_address=A.PEER_IP, connect_to=f"{A.ROUTER_WAN_IP}:18080")
    node.wait_for(lambda i: i["incoming_connections_count"] >= 1, timeout=45)
    after = read_in(net, "client", "monero")
    assert after.status is not None and after.status.inbound >= 1 and after.status.outbound == 0
    assert any("nodereach's own test connection" in n for n in after.status.notes)


def test_monero_restricted_port_says_counts_are_hidden(lab, node_daemons):
    net = lab("open")
    node_daemons.monerod(net, "client", rpc_port=18089, restricted=True)
    got = read_in(net, "client", "monero=http://127.0.0.1:18089")
    assert got.error is None and got.status is not None
    assert got.status.inbound is None and any("restricted" in n for n in got.status.notes)


def test_monero_not_running_is_one_clear_reason(lab):
    net = lab("open")
    started = time.monotonic()
    got = read_in(net, "client", "monero", budget_s=1.0)
    assert got.status is None and "nothing answers on http://127.0.0.1:18081" in got.error
    assert time.monotonic() - started < 2.0


def test_transmission_session_peers_mapping_and_infohash(lab, node_daemons):
    net = lab("open")
    node = node_daemons.transmission(net, "client", port_forwarding=True)
    infohash = node.add_seed()
    got = read_in(net, "client", "transmission")
    assert got.error is None, got.error
    st = got.status
    assert st.software == "Transmission" and st.version.startswith("3.00")
    assert {str(p) for p in st.p2p_ports} == {"51413/tcp", "51413/udp"}
    assert st.mapping is not None and st.mapping.enabled is True and st.mapping.setting == "port-forwarding-enabled"
    assert (st.inbound, st.outbound) == (0, 0)
    assert f"infohash:{infohash}" in st.peer_ids


def test_transmission_credentials_from_the_url_and_refusal_without(lab, node_daemons):
    net = lab("open")
    node_daemons.transmission(net, "client", username="op", password="s3cret p@ss")
    ok = read_in(net, "client", "transmission=http://op:s3cret%20p%40ss@127.0.0.1:9091")
    assert ok.error is None and ok.status.mapping.enabled is False
    assert "s3cret" not in ok.endpoint
    refused = read_in(net, "client", "transmission=http://op:wrong@127.0.0.1:9091")
    assert refused.status is None and "needs credentials (HTTP 401)" in refused.error
    assert "wrong" not in refused.error and "op:" not in refused.error


def test_syncthing_status_connections_and_api_key(lab, node_daemons):
    net = lab("port-restricted")
    inside = node_daemons.syncthing(net, "client")
    no_key = read_in(net, "client", "syncthing")
    assert no_key.status is None and "needs credentials" in no_key.error
    net.forward(22000, "tcp")
    # Each side learns the other before the outside dials: started knowing the inside, the outside could dial
    # before the inside knew it, be dropped as an unknown device, and (once in a full run) not get in within
    # the 30 s below.
    outside = node_daemons.syncthing(net, "peer")
    inside.add_device(outside.device_id)
    outside.add_device(inside.device_id, f"tcp://{A.ROUTER_WAN_IP}:22000")
    key = Secrets(api_key=inside.api_key)
    deadline = time.monotonic() + 30
    got = read_in(net, "client", "syncthing", secrets=key)
    while got.status is not None and not got.status.inbound and time.monotonic() < deadline:
        time.sleep(0.2)
        got = read_in(net, "client", "syncthing", secrets=key)
    assert got.error is None, got.error
    st = got.status
    assert st.software == "Syncthing" and st.version.startswith("v1.")
    assert (st.inbound, st.outbound) == (1, 0)
    assert {str(p) for p in st.p2p_ports} == {"22000/tcp", "22000/udp"}
    assert st.mapping is not None and st.mapping.enabled is False
    assert f"device:{inside.device_id}" in st.peer_ids


def test_open_refuses_a_port_the_node_maps_itself(lab, node_daemons):
    """Transmission with port-forwarding-enabled maps its peer port itself: `open` must not map it again."""
    import sys
    from pathlib import Path

    net = lab("port-restricted", home_router=True)  # miniupnpd: Transmission really maps its port there
    node = node_daemons.transmission(net, "client", port_forwarding=True)
    # With port forwarding on, Transmission runs UPnP discovery in its session thread: its RPC stalls for
    # seconds while no router answers (measured: up to 3 s, repeatedly). Wait until it answers promptly.
    deadline = time.monotonic() + 30
    while True:
        started = time.monotonic()
        node.rpc("session-get", timeout=10)
        if time.monotonic() - started < 0.3 or time.monotonic() > deadline:
            break
    nodereach = str(Path(sys.executable).parent / "nodereach")
    r = net.exec("client", [nodereach, "open", "51413/tcp", "--once", "--timeout", "3"], check=False, timeout=30)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Transmission maps 51413/tcp on the router itself (port-forwarding-enabled)" in r.stderr
    assert "Keep one" in r.stderr and "Traceback" not in r.stderr
