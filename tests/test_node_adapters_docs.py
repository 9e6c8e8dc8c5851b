"""Adapters of software that cannot be installed here (Bitcoin Core, geth, beacon nodes, kubo, lnd), tested on
the response shapes their docs publish (tests/node_docs/, each file's doc linked in its README), first through
the pure parsers, then through the adapters' own I/O against a loopback server replaying those answers. And
what a hostile or broken RPC costs: a bounded time and one clear reason, never a credential in it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import h11
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodereach.net import PortSpec
from nodereach.node.adapters import beacon, bitcoin, ethereum, kubo, lnd
from nodereach.node.adapters.base import NodeError
from nodereach.node.adapters.rpcio import Conn, Target, http_request
from nodereach.node.reader import NodeSpec, Secrets, read_node

DOCS = Path(__file__).parent / "node_docs"


def doc(name: str) -> bytes:
    return (DOCS / name).read_bytes()


def typed(name: str, typ):
    return msgspec.json.decode(doc(name), type=typ)


# --- pure parsers on the documented shapes -------------------------------------------------------------

def test_bitcoin_shapes():
    st_ = bitcoin.status_from(typed("bitcoin-getnetworkinfo.json", bitcoin.NetworkInfo),
                              typed("bitcoin-getpeerinfo.json", list[bitcoin.PeerInfo]))
    assert (st_.software, st_.version, st_.inbound, st_.outbound) == ("Bitcoin Core", "27.0.0", 2, 10)
    assert [(a.address, a.port, a.source) for a in st_.advertised] == [("198.51.100.7", 8333, "bitcoin")]
    assert st_.p2p_ports == (PortSpec(8333, "tcp"),)
    assert st_.mapping is not None and st_.mapping.enabled is False  # v27: no NAT-PMP by default


def test_bitcoin_chain_shape_names_the_proofs_network():
    chain = typed("bitcoin-getblockchaininfo.json", bitcoin.ChainInfo)
    st_ = bitcoin.status_from(typed("bitcoin-getnetworkinfo.json", bitcoin.NetworkInfo), None, chain)
    assert st_.peer_ids == ("network:signet",)  # the global signet's challenge: its well-known magic
    custom = msgspec.structs.replace(chain, signet_challenge="5121" + "02" * 33 + "51ae")
    assert bitcoin.status_from(typed("bitcoin-getnetworkinfo.json", bitcoin.NetworkInfo), None,
                               custom).peer_ids[0].startswith("magic:")


def test_bitcoin_empty_localaddresses_is_normal_and_addrlocal_is_used():
    net = typed("bitcoin-getnetworkinfo.json", bitcoin.NetworkInfo)
    net.localaddresses = []
    net.version, net.subversion = 290000, "/Satoshi:29.0.0/"
    st_ = bitcoin.status_from(net, typed("bitcoin-getpeerinfo.json", list[bitcoin.PeerInfo]))
    assert [(a.address, a.source, a.port, a.field) for a in st_.advertised] == [
        ("198.51.100.7", "bitcoin", None, "addrlocal (2 peers)")]
    assert any("normal" in n for n in st_.notes)
    assert st_.mapping is not None and st_.mapping.enabled is None and "natpmp=0" in st_.mapping.detail


def test_geth_shapes():
    st_ = ethereum.status_from(typed("geth-admin_nodeInfo.json", ethereum.NodeInfo),
                               typed("geth-admin_peers.json", list[ethereum.Peer]), None, "")
    assert (st_.software, st_.version, st_.inbound, st_.outbound) == ("geth", "1.14.8-stable-a9523b64", 1, 1)
    assert {(a.address, a.port, a.protocol, a.source) for a in st_.advertised} == {
        ("192.168.1.10", 30303, "tcp", "enode"), ("192.168.1.10", 30303, "udp", "enode"),
        ("192.168.1.10", 30303, "tcp", "enr"), ("192.168.1.10", 30303, "udp", "enr")}
    assert set(st_.p2p_ports) == {PortSpec(30303, "tcp"), PortSpec(30303, "udp")}
    assert st_.listen == ("[::]:30303",)
    assert st_.mapping is not None and st_.mapping.setting == "--nat"
    assert any(i.startswith("enode:") and len(i) == 6 + 128 for i in st_.peer_ids)
    assert any(i.startswith("enr:-") for i in st_.peer_ids)


def test_geth_without_admin_keeps_the_peer_count():
    st_ = ethereum.status_from(None, None, 25, "Geth/v1.14.8-stable/linux-amd64/go1.22.6",
                               "the method admin_nodeInfo does not exist/is not available")
    assert (st_.software, st_.version, st_.inbound) == ("geth", "1.14.8-stable", None)
    assert any("25 peers" in n for n in st_.notes) and any("geth.ipc" in n for n in st_.notes)


def test_beacon_shapes():
    ident = typed("beacon-identity.json", beacon.IdentityDoc).data
    peers = typed("beacon-peers-inbound.json", beacon.PeersDoc)
    count = typed("beacon-peer_count.json", beacon.PeerCountDoc)
    st_ = beacon.status_from(ident, int(count.data.connected), int(peers.meta.count),
                             "Lighthouse/v5.3.0-d6ba8c3/x86_64-linux")
    assert (st_.software, st_.version, st_.inbound, st_.outbound) == ("Lighthouse", "5.3.0-d6ba8c3", 2, 54)
    # Advertised: the ENR (tcp, udp and quic from one record); the p2p_addresses are listen addresses.
    assert {(a.address, a.port, a.protocol, a.source, a.quic) for a in st_.advertised} == {
        ("10.0.0.7", 9000, "tcp", "enr", False), ("10.0.0.7", 9000, "udp", "enr", False),
        ("10.0.0.7", 9001, "udp", "enr", True)}
    assert st_.listen == ("/ip4/10.0.0.7/tcp/9000/p2p/16Uiu2HAmLyPv7Kdx7tqAnYbj6nEgnmwUbSEoJQzDXuCVqzNVQGtG",
                          "/ip4/10.0.0.7/udp/9001/quic-v1/p2p/16Uiu2HAmLyPv7Kdx7tqAnYbj6nEgnmwUbSEoJQzDXuCVqzNVQGtG")


def test_kubo_shapes():
    st_ = kubo.status_from(typed("kubo-id.json", kubo.Id), typed("kubo-swarm-peers.json", kubo.SwarmPeers),
                           typed("kubo-autonat.json", kubo.AutoNat), False)
    assert (st_.software, st_.version, st_.inbound, st_.outbound) == ("kubo", "0.29.0", 1, 2)
    assert st_.reachability == "private" and any("198.51.100.7/tcp/4001" in n for n in st_.notes)
    assert ("198.51.100.7", 4001, "tcp") in {(a.address, a.port, a.protocol) for a in st_.advertised}
    assert not any(a.address == "203.0.113.99" for a in st_.advertised)  # a relay address is not ours
    assert st_.mapping is not None and st_.mapping.enabled is True


def test_lnd_shapes():
    st_ = lnd.status_from(typed("lnd-getinfo.json", lnd.GetInfo), typed("lnd-peers.json", lnd.Peers))
    assert (st_.software, st_.version, st_.inbound, st_.outbound) == ("lnd", "0.18.3-beta", 1, 3)
    assert [(a.address, a.port, a.source) for a in st_.advertised] == [("198.51.100.8", 9735, "lnd")]
    empty = lnd.status_from(lnd.GetInfo(version="0.18.0-beta", uris=[]), None)
    assert empty.advertised == () and any("externalip" in n for n in empty.notes)


# --- the adapters' own I/O against a loopback server replaying the documented answers ------------------

Handler = Callable[[str, str, dict[str, str], bytes], Awaitable[tuple[int, dict[str, str], bytes] | None]]


async def serve(handler: Handler) -> tuple[asyncio.base_events.Server, int]:
    """A loopback HTTP/1.1 server (h11) that asks `handler` for each request; None: never answer (hang)."""
    async def conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        h = h11.Connection(h11.SERVER)
        req = None
        body = b""
        try:
            while True:
                ev = h.next_event()
                if ev is h11.NEED_DATA:
                    h.receive_data(await reader.read(65536))
                    continue
                if isinstance(ev, h11.Request):
                    req = ev
                elif isinstance(ev, h11.Data):
                    body += ev.data
                elif isinstance(ev, h11.EndOfMessage):
                    break
                elif isinstance(ev, h11.ConnectionClosed):
                    return
            assert req is not None
            headers = {k.decode().lower(): v.decode() for k, v in req.headers}
            answer = await handler(req.method.decode(), req.target.decode(), headers, body)
            if answer is None:
                await asyncio.sleep(30)
                return
            status, extra, out = answer
            writer.write(h.send(h11.Response(status_code=status, headers=[("Content-Length", str(len(out))),
                                                                          *extra.items()])))
            writer.write(h.send(h11.Data(data=out)) + h.send(h11.EndOfMessage()))
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(conn, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def rpc_result(data: bytes) -> bytes:
    return b'{"jsonrpc":"2.0","id":1,"result":' + data + b"}"


async def test_bitcoin_read_sends_the_cookie(tmp_path):
    cookie = tmp_path / ".cookie"
    cookie.write_text("__cookie__:0123abcd")
    seen: list[str] = []

    async def handler(method, path, headers, body):
        seen.append(headers.get("authorization", ""))
        if headers.get("authorization") != "Basic X19jb29raWVfXzowMTIzYWJjZA==":
            return 401, {}, b""
        call = json.loads(body)
        answer = {"getnetworkinfo": doc("bitcoin-getnetworkinfo.json"),
                  "getpeerinfo": doc("bitcoin-getpeerinfo.json"),
                  "getblockchaininfo": doc("bitcoin-getblockchaininfo.json")}[call["method"]]
        return 200, {"Content-Type": "application/json"}, rpc_result(answer)

    server, port = await serve(handler)
    async with server:
        got = await read_node(NodeSpec.parse(f"bitcoin=http://127.0.0.1:{port}"),
                              secrets=Secrets(cookie_file=str(cookie)))
        bad = await read_node(NodeSpec.parse(f"bitcoin=http://127.0.0.1:{port}"),
                              secrets=Secrets(cookie_file=str(tmp_path / "missing")))
    assert got.error is None, got.error
    assert got.status is not None and got.status.inbound == 2
    assert got.status.peer_ids == ("network:signet",)  # the chain, for the protocol proof's magic
    assert bad.status is None and "needs credentials (HTTP 401)" in bad.error
    assert "0123abcd" not in (bad.error or "") and "__cookie__" not in (bad.error or "")


async def test_geth_over_ipc(tmp_path):
    path = tmp_path / "geth.ipc"
    answers = {"web3_clientVersion": b'"Geth/v1.14.8-stable-a9523b64/linux-amd64/go1.22.6"',
               "admin_nodeInfo": doc("geth-admin_nodeInfo.json"), "admin_peers": doc("geth-admin_peers.json")}

    async def conn(reader, writer):
        while data := await reader.read(65536):
            call = json.loads(data)
            writer.write(rpc_result(answers[call["method"]]) + b"\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(conn, str(path))
    async with server:
        got = await read_node(NodeSpec.parse(f"ethereum={path}"))
    assert got.error is None, got.error
    assert got.endpoint == str(path) and got.status.software == "geth" and got.status.inbound == 1


async def test_geth_over_http_without_admin():
    async def handler(method, path, headers, body):
        call = json.loads(body)
        if call["method"] == "web3_clientVersion":
            return 200, {}, rpc_result(b'"Geth/v1.14.8-stable/linux-amd64/go1.22.6"')
        if call["method"] == "net_peerCount":
            return 200, {}, rpc_result(b'"0x19"')
        return 200, {}, json.dumps({"jsonrpc": "2.0", "id": call["id"], "error": {
            "code": -32601, "message": f"the method {call['method']} does not exist/is not available"}}).encode()

    server, port = await serve(handler)
    async with server:
        got = await read_node(NodeSpec.parse(f"geth=http://127.0.0.1:{port}"))
    assert got.error is None and got.status.inbound is None
    assert any("25 peers" in n for n in got.status.notes)


async def test_beacon_kubo_lnd_reads():
    routes = {("GET", "/eth/v1/node/identity"): doc("beacon-identity.json"),
              ("GET", "/eth/v1/node/version"): doc("beacon-version.json"),
              ("GET", "/eth/v1/node/peer_count"): doc("beacon-peer_count.json"),
              ("GET", "/eth/v1/node/peers?state=connected&direction=inbound"): doc("beacon-peers-inbound.json"),
              ("POST", "/api/v0/id"): doc("kubo-id.json"),
              ("POST", "/api/v0/swarm/peers?direction=true"): doc("kubo-swarm-peers.json"),
              ("POST", "/api/v0/config?arg=Swarm.DisableNatPortMap"): b'{"Key":"Swarm.DisableNatPortMap","Value":true}',
              ("GET", "/v1/getinfo"): doc("lnd-getinfo.json"), ("GET", "/v1/peers"): doc("lnd-peers.json")}
    macaroons: list[str] = []

    async def handler(method, path, headers, body):
        if path.startswith("/v1/"):
            macaroons.append(headers.get("grpc-metadata-macaroon", ""))
        if path.startswith("/api/v0/") and method != "POST":
            return 405, {}, b""
        found = routes.get((method, path))
        return (200, {}, found) if found is not None else (404, {}, b"404 page not found")

    server, port = await serve(handler)
    async with server:
        b = await read_node(NodeSpec.parse(f"beacon=http://127.0.0.1:{port}"))
        k = await read_node(NodeSpec.parse(f"kubo=http://127.0.0.1:{port}"))
        import tempfile
        with tempfile.NamedTemporaryFile() as mac:
            mac.write(b"\x02\x01macaroon")
            mac.flush()
            n = await read_node(NodeSpec.parse(f"lnd=http://127.0.0.1:{port}"), secrets=Secrets(macaroon_file=mac.name))
    assert b.error is None and (b.status.software, b.status.inbound, b.status.outbound) == ("Lighthouse", 2, 54)
    assert k.error is None and k.status.reachability is None  # this kubo has no AutoNAT command (404)
    assert k.status.mapping is not None and k.status.mapping.enabled is False
    assert n.error is None and n.status.inbound == 1 and macaroons == [b"\x02\x01macaroon".hex()] * 2


# --- hostile and broken RPCs: bounded time, one reason ---------------------------------------------------

async def _answer_with(handler: Handler, spec_kind: str = "monero", budget_s: float = 0.5):
    server, port = await serve(handler)
    async with server:
        started = time.monotonic()
        got = await read_node(NodeSpec.parse(f"{spec_kind}=http://u:hunter2@127.0.0.1:{port}"), budget_s=budget_s)
        return got, time.monotonic() - started


async def test_hanging_rpc_costs_the_budget_only():
    async def hang(method, path, headers, body):
        return None

    got, took = await _answer_with(hang)
    assert got.status is None and "did not answer within 0.5 s" in got.error
    assert took < 0.8


async def test_huge_answer_is_cut():
    async def huge(method, path, headers, body):
        return 200, {}, b'{"result":"' + b"x" * (5 << 20) + b'"}'

    got, _took = await _answer_with(huge, budget_s=5.0)
    assert got.status is None and "larger than 4096 KiB" in got.error


@pytest.mark.parametrize(("body", "reason"), [
    (b"<html>hello</html>", "not JSON-RPC"),
    (b'{"jsonrpc":"2.0","id":1,"result":{"status":"OK","incoming_connections_count":"many"}}', "unexpected answer"),
    (b'{"jsonrpc":"2.0","id":1,"result":{"status":"BUSY"}}', "status 'BUSY'"),
    (b'{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"go away"}}', "the node answered an error: go away"),
    (b"[" * 100_000, "not JSON-RPC"),
])
async def test_malformed_and_lying_answers(body, reason):
    async def bad(method, path, headers, b):
        return 200, {}, body

    got, _ = await _answer_with(bad)
    assert got.status is None and reason in got.error
    assert "hunter2" not in got.error


async def test_not_http_and_refused():
    async def garbage(reader, writer):
        await reader.read(4096)  # the request, then an SSH banner where HTTP was expected
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n" * 10)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        got = await read_node(NodeSpec.parse(f"kubo=http://127.0.0.1:{port}"), budget_s=0.5)
    assert got.status is None and "not HTTP" in got.error
    refused = await read_node(NodeSpec.parse(f"kubo=http://127.0.0.1:{port}"), budget_s=0.5)
    assert refused.status is None and "nothing answers on" in refused.error


async def test_missing_ipc_socket(tmp_path):
    got = await read_node(NodeSpec.parse(f"ethereum={tmp_path / 'geth.ipc'}"), budget_s=0.5)
    assert got.status is None and "no node listens on the socket" in got.error


async def test_http_request_direct_status_and_headers():
    async def ok(method, path, headers, body):
        return 200, {"X-Thing": "1"}, b"{}"

    server, port = await serve(ok)
    async with server:
        resp = await http_request(Target.parse(f"127.0.0.1:{port}"), "GET", "/", timeout=1.0)
    assert resp.status == 200 and resp.headers["x-thing"] == "1"
    with pytest.raises(NodeError, match="out of time"):
        Conn(Target.parse("http://127.0.0.1:1"), deadline=time.monotonic() - 1).left()


def test_node_spec_parsing_and_target_label():
    assert NodeSpec.parse("auto").kind is None
    assert NodeSpec.parse("geth=/var/lib/geth/geth.ipc") == NodeSpec("ethereum", "/var/lib/geth/geth.ipc")
    assert NodeSpec.parse("Monero") == NodeSpec("monero", None)
    with pytest.raises(ValueError, match="one of"):
        NodeSpec.parse("dogecoin")
    with pytest.raises(ValueError, match="needs a URL"):
        NodeSpec.parse("bitcoin=")
    t = Target.parse("http://alice:secret@127.0.0.1:8332")
    assert t.label == "http://127.0.0.1:8332" and "secret" not in repr(t)
    with pytest.raises(ValueError) as err:
        Target.parse("ftp://alice:secret@host")
    assert "secret" not in str(err.value)


# --- auto-detection and where credentials are found ------------------------------------------------------

def test_detect_from_processes_then_default_rpc_ports():
    from nodereach.node.listeners import Listener, ProcessInfo
    from nodereach.node.reader import detect

    procs = [ProcessInfo(10, "monerod", ("monerod",)), ProcessInfo(11, "geth", ("geth",), other_netns=True)]
    listeners = [Listener("tcp", "127.0.0.1", 18081, 4, True, uid=1001, pid=10),
                 Listener("tcp", "127.0.0.1", 5052, 4, True), Listener("tcp", "0.0.0.0", 8080, 4, True)]
    got = detect(procs, listeners)
    assert [(d.spec.kind, d.owner_uid) for d in got] == [("monero", 1001), ("beacon", None)]
    assert "monerod runs (pid 10)" in got[0].how and "5052" in got[1].how  # 8080 is not taken for lnd


def test_credentials_found_in_the_node_users_home(tmp_path):
    from nodereach.node import reader

    (tmp_path / ".bitcoin" / "signet").mkdir(parents=True)
    (tmp_path / ".bitcoin" / "signet" / ".cookie").write_text("__cookie__:feed")
    assert reader._bitcoin_cookie(Target.parse("127.0.0.1:38332"), [tmp_path], Secrets()) == ("__cookie__", "feed")
    assert reader._bitcoin_cookie(Target.parse("127.0.0.1:8332"), [tmp_path], Secrets()) is None
    cfg = tmp_path / ".local" / "state" / "syncthing"
    cfg.mkdir(parents=True)
    (cfg / "config.xml").write_text("<configuration><gui><apikey>k3y</apikey></gui></configuration>")
    assert reader._syncthing_key([tmp_path], Secrets()) == "k3y"
    assert reader._syncthing_key([tmp_path], Secrets(api_key="given")) == "given"
    mac = tmp_path / ".lnd" / "data" / "chain" / "bitcoin" / "mainnet"
    mac.mkdir(parents=True)
    (mac / "readonly.macaroon").write_bytes(b"\x02mac")
    (tmp_path / ".lnd" / "tls.cert").write_text("cert")
    assert reader._lnd_files([tmp_path], Secrets()) == (b"\x02mac", str(tmp_path / ".lnd" / "tls.cert"))


def test_config_file_names_the_node_credentials(tmp_path):
    from nodereach.diagnose.command import build_options

    key = tmp_path / "st.key"
    key.write_text("abc123\n")
    cfg = tmp_path / "check.toml"
    cfg.write_text(f'servers = ["203.0.113.10"]\nports = ["8333/tcp"]\nnode = "bitcoin"\n'
                   f'node_cookie_file = "/srv/btc/.cookie"\nnode_api_key_file = "{key}"\n')
    opts = build_options([], [], 5.0, False, 120.0, cfg)
    assert opts.node is not None and opts.node.spec == NodeSpec("bitcoin", None)
    assert opts.node_secrets == Secrets(cookie_file="/srv/btc/.cookie", api_key="abc123")
    assert "abc123" not in repr(opts.node_secrets)


# --- any answer at all: a typed value or one NodeError, never another exception ----------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
                    | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                        st.sampled_from(["version", "subversion", "connections_in", "localaddresses", "addrlocal",
                                         "inbound", "enode", "enr", "ports", "listener", "network", "data",
                                         "peer_id", "p2p_addresses", "meta", "count", "connected", "Addresses",
                                         "Peers", "Direction", "uris", "peers", "status", "incoming",
                                         "incoming_connections_count", "restricted", "peer-port", "torrents",
                                         "isIncoming", "connections", "myID", "connectionServiceStatus",
                                         "wanAddresses", "type", "reachability", "address", "port", "score"]),
                        inner, max_size=6), max_leaves=12)


def _status_of(kind: str, raw: bytes):
    from nodereach.node.adapters import monero, syncthing, transmission
    from nodereach.node.adapters.base import decode

    if kind == "bitcoin":
        net = decode(raw, bitcoin.NetworkInfo, "x")
        return bitcoin.status_from(net, decode(raw, list[bitcoin.PeerInfo], "x"))  # type: ignore[arg-type]
    if kind == "ethereum":
        return ethereum.status_from(decode(raw, ethereum.NodeInfo, "x"), decode(raw, list[ethereum.Peer], "x"),  # type: ignore[arg-type]
                                    None, "")
    if kind == "beacon":
        doc = decode(raw, beacon.IdentityDoc, "x")
        return beacon.status_from(doc.data, 1, 0, "")  # type: ignore[attr-defined]
    if kind == "kubo":
        return kubo.status_from(decode(raw, kubo.Id, "x"), decode(raw, kubo.SwarmPeers, "x"),  # type: ignore[arg-type]
                                decode(raw, kubo.AutoNat, "x"), None)  # type: ignore[arg-type]
    if kind == "lnd":
        return lnd.status_from(decode(raw, lnd.GetInfo, "x"), decode(raw, lnd.Peers, "x"))  # type: ignore[arg-type]
    if kind == "monero":
        return monero.status_from(decode(raw, monero.Info, "x"), decode(raw, monero.Connections, "x"))  # type: ignore[arg-type]
    if kind == "transmission":
        return transmission.status_from(decode(raw, transmission.Session, "x"),  # type: ignore[arg-type]
                                        decode(raw, transmission.Torrents, "x"))  # type: ignore[arg-type]
    return syncthing.status_from(decode(raw, syncthing.Status, "x"), decode(raw, syncthing.Connections, "x"),  # type: ignore[arg-type]
                                 None, None)


@pytest.mark.parametrize("kind", ["bitcoin", "ethereum", "beacon", "kubo", "lnd", "monero", "transmission",
                                  "syncthing"])
@given(value=JSON)
def test_adapters_take_any_json(kind, value):
    raw = json.dumps(value).encode()
    with contextlib.suppress(NodeError):
        _status_of(kind, raw)


@pytest.mark.parametrize(("typ", "doc"), [
    ("transmission.Session", {"peer-port": 70000}),
    ("transmission.Session", {"peer-port": -1}),
    ("bitcoin.NetworkInfo", {"version": 270000, "localaddresses": [{"address": "198.51.100.7", "port": -5}]}),
    ("bitcoin.NetworkInfo", {"version": 270000, "connections_in": -1}),
    ("ethereum.NodeInfo", {"ports": {"listener": 99999, "discovery": 30303}}),
    ("monero.Info", {"status": "OK", "incoming_connections_count": -3}),
    ("lnd.GetInfo", {"num_peers": -1}),
])
def test_out_of_range_numbers_are_malformed_answers(typ, doc):
    from nodereach.node.adapters import monero, transmission
    from nodereach.node.adapters.base import decode

    modules = {"transmission": transmission, "bitcoin": bitcoin, "ethereum": ethereum, "monero": monero, "lnd": lnd}
    module, name = typ.split(".")
    with pytest.raises(NodeError, match="unexpected answer"):
        decode(json.dumps(doc).encode(), getattr(modules[module], name), typ)
