"""The dial-back service speaking node protocols, on loopback (127.0.0.1 asks, 127.0.0.2 is the probe source).

The peers in this file are IN-TEST PEERS: codec round-trips built from our own encoders, or replays of
published/captured bytes. They test the service's driver, its byte budget, the API and the client; they do
not claim anything about how real node software answers — tests/test_proofs_real.py does that against
monerod, transmission-daemon and js-libp2p.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import msgspec
import pytest

from nodereach.p2p import bittorrent, discv4, discv5, levin, multistream
from nodereach.p2p.enr import encode_enr
from nodereach.reach.client import ProofRequest, prove
from nodereach.reach.limits import LimitsConfig
from nodereach.reach.proofs import ProofSpec, min_request_bytes, prove_tcp
from nodereach.reach.service import DialbackConfig, DialbackService
from reach_helpers import free_port
from test_p2p_protocols import CORE23_VERACK, CORE23_VERSION, KEY, KEY_NODE_ID, MONEROD_PING_RESPONSE

LOOSE = LimitsConfig(address_burst=1000, network_burst=1000, max_ports_per_window=1000)
INFOHASH = bytes.fromhex("d2474e86c95b19b8bcfdb92bc12c9d44667cfa36")


@pytest.fixture
async def server() -> AsyncIterator[str]:
    svc = DialbackService(DialbackConfig(alt_addresses=("127.0.0.2",), limits=LOOSE, probe_timeout=1.0,
                                         proof_timeout=2.0))
    bound = await svc.start(["127.0.0.1"], 0)
    try:
        yield f"127.0.0.1:{bound[0][1]}"
    finally:
        await svc.close()


@contextlib.asynccontextmanager
async def tcp_peer(answer: Callable[[bytes], bytes | None], need: int, delay: float = 0.0) -> AsyncIterator[int]:
    """An in-test TCP peer: reads `need` bytes, writes `answer(them)` after `delay` s (None: closes without a
    word)."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            data = await asyncio.wait_for(reader.readexactly(need), 2)
            await asyncio.sleep(delay)
            reply = answer(data)
            if reply is not None:
                writer.write(reply)
                await writer.drain()
                await asyncio.sleep(0.2)  # let the prober read before we close
        writer.close()

    srv = await asyncio.start_server(handle, "0.0.0.0", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()
        await srv.wait_closed()


class UdpPeer(asyncio.DatagramProtocol):
    def __init__(self, answer: Callable[[bytes], bytes | None]) -> None:
        self.answer = answer
        self.transport: asyncio.DatagramTransport | None = None
        self.seen = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.seen += 1
        reply = self.answer(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


@contextlib.asynccontextmanager
async def udp_peer(answer: Callable[[bytes], bytes | None]) -> AsyncIterator[tuple[int, UdpPeer]]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(lambda: UdpPeer(answer), local_addr=("0.0.0.0", 0))
    try:
        yield transport.get_extra_info("sockname")[1], proto
    finally:
        transport.close()


async def post(addr: str, body: object) -> tuple[int, dict]:  # type: ignore[type-arg]
    async with aiohttp.ClientSession() as s, s.post(f"http://{addr}/v1/probe", json=body) as r:
        return r.status, await r.json()


# --- TCP proofs ------------------------------------------------------------------------------------------
async def test_monero_proof_against_replayed_monerod_answer(server: str) -> None:
    async with tcp_peer(lambda req: MONEROD_PING_RESPONSE if req == levin.ping_request() else None, 43) as port:
        r = await prove(server, port, ProofRequest("monero"), timeout=3)
    assert r.protocol_check is not None and r.protocol_check.ok, r.protocol_check
    assert "a47a8f696fd9d468" in r.protocol_check.detail and r.protocol_check.rtt_ms is not None
    assert (r.reachable, r.reason, r.listener) == (True, "ok", "none")


async def test_a_connection_deadline_leaves_the_node_the_rest_of_the_timeout(server: str) -> None:
    """`connect_timeout_ms` bounds the connection only: a node that answers after it passed is still heard
    (until `timeout_ms`), so an open port's proof stays right while a closed one is known early."""
    async with tcp_peer(lambda req: MONEROD_PING_RESPONSE if req == levin.ping_request() else None, 43,
                        delay=0.35) as port:
        status, doc = await post(server, {"port": port, "protocol": "tcp", "timeout_ms": 900,
                                          "connect_timeout_ms": 200, "proof": {"protocol": "monero"},
                                          "pad": " " * 600})
    assert status == 200 and doc["reachable"] is True
    assert doc["protocol_check"]["ok"] is True, doc["protocol_check"]
    assert doc["bytes_sent"] <= doc["request_bytes"]


async def test_bitcoin_proof_against_replayed_core_answer(server: str) -> None:
    seen: list[bytes] = []

    def answer(req: bytes) -> bytes:
        seen.append(req)
        return CORE23_VERSION + CORE23_VERACK

    async with tcp_peer(answer, 24) as port:
        r = await prove(server, port, ProofRequest("bitcoin", network="main"), timeout=3)
    assert r.protocol_check is not None and r.protocol_check.ok and "/Satoshi:23.0.0/" in r.protocol_check.detail
    assert seen and seen[0][:4] == bytes.fromhex("f9beb4d9") and seen[0][4:11] == b"version"


async def test_bitcoin_proof_wrong_network_is_not_ok(server: str) -> None:
    async with tcp_peer(lambda _req: CORE23_VERSION, 24) as port:
        r = await prove(server, port, ProofRequest("bitcoin", network="regtest"), timeout=3)
    assert r.protocol_check is not None and not r.protocol_check.ok and "main" in r.protocol_check.detail
    assert r.reachable is True  # the port is open; the node is on another network


async def test_libp2p_proof(server: str) -> None:
    hdr = multistream.encode(multistream.HEADER)
    async with tcp_peer(lambda req: hdr if req == hdr else None, len(hdr)) as port:
        r = await prove(server, port, ProofRequest("libp2p"), timeout=3)
    assert r.protocol_check is not None and r.protocol_check.ok


async def test_bittorrent_proof_known_and_unknown_infohash(server: str) -> None:
    def answer(req: bytes) -> bytes | None:
        hs = bittorrent.decode_handshake(req)
        return bittorrent.encode_handshake(INFOHASH, b"-TR4000-aaaaaaaaaaaa") if hs.infohash == INFOHASH else None

    async with tcp_peer(answer, 68) as port:
        good = await prove(server, port, ProofRequest("bittorrent", infohash=INFOHASH), timeout=3)
        unknown = await prove(server, port, ProofRequest("bittorrent", infohash=bytes(20)), timeout=3)
    assert good.protocol_check is not None and good.protocol_check.ok
    assert unknown.protocol_check is not None and not unknown.protocol_check.ok
    assert "closed without a handshake" in unknown.protocol_check.detail


async def test_tcp_proof_closed_port(server: str) -> None:
    r = await prove(server, free_port(), ProofRequest("monero"), timeout=3)
    assert (r.reachable, r.reason) == (False, "refused")
    assert r.protocol_check is not None and not r.protocol_check.ok and "refused" in r.protocol_check.detail


async def test_tcp_proof_silent_peer_times_out_within_the_bound(server: str) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        loop = asyncio.get_running_loop()
        start = loop.time()
        status, doc = await post(server, {"port": silent.getsockname()[1], "protocol": "tcp", "timeout_ms": 600,
                                          "proof": {"protocol": "libp2p"}, "pad": " " * 600})
        took = loop.time() - start
    assert status == 200 and doc["reachable"] is True
    assert doc["protocol_check"]["ok"] is False and "no answer" in doc["protocol_check"]["detail"]
    assert took < 1.5
    assert doc["bytes_sent"] <= doc["request_bytes"]


# --- UDP proofs ------------------------------------------------------------------------------------------
def _discv4_peer(req: bytes) -> bytes | None:
    """In-test discv4 peer holding KEY: PONG for a valid PING (codec round-trip)."""
    packet = discv4.decode_packet(req)
    ping = discv4.parse_ping(packet)
    return discv4.encode_pong(KEY, ping.sender, packet.hash, ping.expiration, 9)


async def test_discv4_proof_makes_udp_observable(server: str) -> None:
    async with udp_peer(_discv4_peer) as (port, peer):
        r = await prove(server, port, ProofRequest("discv4", node_id=KEY_NODE_ID), timeout=3)
    assert peer.seen >= 1
    assert (r.reachable, r.reason) == (True, "ok")  # not "udp-unobservable": the node answered
    assert r.protocol_check is not None and r.protocol_check.ok and "enr-seq 9" in r.protocol_check.detail


async def test_discv4_wrong_node_id(server: str) -> None:
    async with udp_peer(_discv4_peer) as (port, _peer):
        r = await prove(server, port, ProofRequest("discv4", node_id=bytes(32)), timeout=3)
    assert r.reachable is True and r.protocol_check is not None and not r.protocol_check.ok


def _discv5_peer(node_id: bytes) -> Callable[[bytes], bytes | None]:
    """In-test discv5 peer with `node_id`: WHOAREYOU for any message packet it can unmask (codec round-trip)."""
    def answer(req: bytes) -> bytes | None:
        try:
            packet = discv5.decode_packet(req, node_id)
        except Exception:
            return None  # not masked with our id: a real node stays silent too
        return discv5.encode_whoareyou(packet.authdata, packet.nonce, b"\x05" * 16, 4, b"\x09" * 16)
    return answer


async def test_discv5_proof_with_node_id_and_with_enr(server: str) -> None:
    enr = encode_enr(KEY, 4, {"ip": bytes([127, 0, 0, 1]), "udp": 30303})
    async with udp_peer(_discv5_peer(KEY_NODE_ID)) as (port, _peer):
        by_id = await prove(server, port, ProofRequest("discv5", node_id=KEY_NODE_ID), timeout=3)
        by_enr = await prove(server, port, ProofRequest("discv5", enr=enr.text), timeout=3)
    for r in (by_id, by_enr):
        assert (r.reachable, r.reason) == (True, "ok")
        assert r.protocol_check is not None and r.protocol_check.ok and "enr-seq 4" in r.protocol_check.detail


async def test_discv5_wrong_node_id_gets_silence(server: str) -> None:
    async with udp_peer(_discv5_peer(KEY_NODE_ID)) as (port, peer):
        status, doc = await post(server, {"port": port, "protocol": "udp", "timeout_ms": 500, "pad": " " * 500,
                                          "proof": {"protocol": "discv5", "node_id": "ab" * 32}})
    assert peer.seen >= 1 and status == 200
    assert (doc["reachable"], doc["reason"]) == (False, "timeout")
    assert doc["protocol_check"]["ok"] is False and "node id" in doc["protocol_check"]["detail"]
    assert doc["bytes_sent"] <= doc["request_bytes"]


async def test_udp_proof_closed_port_is_refused(server: str) -> None:
    r = await prove(server, free_port(socket.SOCK_DGRAM), ProofRequest("discv4"), timeout=3)
    assert (r.reachable, r.reason) == (False, "refused")


# --- API ---------------------------------------------------------------------------------------------------
async def test_info_lists_proofs(server: str) -> None:
    async with aiohttp.ClientSession() as s, s.get(f"http://{server}/v1/info") as r:
        doc = await r.json()
    assert doc["dialback"]["proofs"] == ["bitcoin", "monero", "libp2p", "bittorrent", "discv4", "discv5"]
    assert doc["dialback"]["proof_timeout_ms"] == 2000


@pytest.mark.parametrize("body, why", [
    ({"port": 30303, "protocol": "udp", "proof": {"protocol": "monero"}}, "runs over tcp"),
    ({"port": 30303, "protocol": "tcp", "proof": {"protocol": "bittorrent"}}, "infohash"),
    ({"port": 30303, "protocol": "tcp", "proof": {"protocol": "bittorrent", "infohash": "ab"}}, "40 hex"),
    ({"port": 30303, "protocol": "udp", "proof": {"protocol": "discv5"}}, "node id"),
    ({"port": 30303, "protocol": "udp", "proof": {"protocol": "discv5", "enr": "enr:xyz"}}, "enr"),
    ({"port": 30303, "protocol": "tcp", "proof": {"protocol": "bitcoin", "network": "moon"}}, "network"),
    ({"port": 30303, "protocol": "tcp", "proof": {"protocol": "bitcoin", "magic": "zz"}}, "magic"),
    ({"port": 30303, "protocol": "tcp", "proof": {"protocol": "gopher"}}, "protocol"),
    ({"port": 30303, "protocol": "tcp", "proof": {"protocol": "monero", "host": "x"}}, "host"),
    ({"port": 30303, "protocol": "tcp", "token": "00" * 16, "proof": {"protocol": "monero"}}, "token"),
    ({"port": 30303, "protocol": "tcp", "connect_timeout_ms": 0, "proof": {"protocol": "monero"}},
     "connect_timeout_ms"),
])
async def test_proof_request_validation(server: str, body: dict, why: str) -> None:  # type: ignore[type-arg]
    status, doc = await post(server, body)
    assert status == 400 and why in doc["message"]


async def test_a_small_request_buys_no_proof() -> None:
    """Direct driver call: a budget below what the proof sends refuses to send anything."""
    with socket.socket() as node:
        node.bind(("127.0.0.1", 0))
        node.listen(1)
        from nodereach.p2p.bitcoin import NETWORKS, VersionExchange

        ex = VersionExchange(NETWORKS["main"], nonce=1, timestamp=1)
        outcome, check = await prove_tcp(ex, "127.0.0.1", node.getsockname()[1], source=None, timeout=1.0,
                                         budget=300)
    assert outcome.bytes_sent == 0 and outcome.reason == "error"
    assert not check.ok and "pad the request" in check.detail


def test_min_request_bytes_fit_the_padded_client_request() -> None:
    # The client pads its body to 900 bytes; with headers that is > 1100 bytes on the wire, enough for each.
    for spec in (ProofSpec("bitcoin"), ProofSpec("monero"), ProofSpec("libp2p"),
                 ProofSpec("bittorrent", infohash=INFOHASH), ProofSpec("discv4"),
                 ProofSpec("discv5", node_id=KEY_NODE_ID)):
        assert min_request_bytes(spec, ipv6=True) < 1000, spec


class _FirstRoundRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The first servers' request type (reach/service.py at 542dffc), decoded by the real msgspec."""
    port: int
    protocol: str
    token: str | None = None
    timeout_ms: int | None = None


async def _older_server(fields: frozenset[str], seen: list[dict]) -> tuple[Any, int]:  # type: ignore[type-arg]
    """An in-test stand-in for an older service: its request type is the first round's plus `fields`, and an
    unknown field gets the 400 the service gave (msgspec's own message)."""
    from aiohttp import web

    async def probe(request: web.Request) -> web.Response:
        raw = await request.read()
        doc = json.loads(raw)
        seen.append(doc)
        try:
            msgspec.json.decode(json.dumps({k: v for k, v in doc.items() if k not in fields}),
                                type=_FirstRoundRequest)
        except msgspec.ValidationError as exc:
            return web.json_response({"error": "bad-request", "message": str(exc)}, status=400)
        answer = {"address": "127.0.0.1", "port": doc["port"], "protocol": "tcp", "reachable": True, "reason": "ok"}
        if "proof" in fields and "proof" in doc:
            answer["protocol_check"] = {"protocol": "monero", "ok": True, "detail": "ping OK", "rtt_ms": 1.0}
        return web.json_response(answer)

    app = web.Application()
    app.router.add_post("/v1/probe", probe)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def test_a_server_from_before_connect_timeout_ms_is_asked_again_without_it() -> None:
    """The client drops `connect_timeout_ms` and asks once more, so the proof still runs there."""
    from nodereach.reach.client import dial_back

    seen: list[dict] = []  # type: ignore[type-arg]
    runner, port = await _older_server(frozenset({"proof", "pad"}), seen)
    try:
        r = await dial_back("127.0.0.1", port, 18080, "tcp", server_wait=lambda _: 0.5, http_timeout=3.0,
                            proof=ProofRequest("monero"), connect_wait=lambda _: 0.3)
    finally:
        await runner.cleanup()
    assert [("connect_timeout_ms" in d) for d in seen] == [True, False]
    assert seen[0]["connect_timeout_ms"] == 300 and seen[0]["timeout_ms"] == 500
    assert r.protocol_check is not None and r.protocol_check.ok and (r.reachable, r.reason) == (True, "ok")


async def test_a_first_round_server_is_asked_with_the_fields_it_knows() -> None:
    """A server from before proofs and padding rejects each new field in turn: the client leaves each out and
    still gets the path's answer; the proof is reported as not spoken, not as the node failing it."""
    from nodereach.reach.client import dial_back

    seen: list[dict] = []  # type: ignore[type-arg]
    runner, port = await _older_server(frozenset(), seen)
    try:
        r = await dial_back("127.0.0.1", port, 18080, "tcp", server_wait=lambda _: 0.5, http_timeout=3.0,
                            proof=ProofRequest("monero"), connect_wait=lambda _: 0.3)
        plain = await dial_back("127.0.0.1", port, 9, "tcp", server_wait=lambda _: 0.5, http_timeout=3.0,
                                listen=False)
    finally:
        await runner.cleanup()
    new_fields = {"proof", "pad", "connect_timeout_ms"}
    # msgspec names the first unknown field in the body's order: one more ask per field, then the answer
    assert [sorted(set(d) & new_fields) for d in seen] == [
        ["connect_timeout_ms", "pad", "proof"], ["pad", "proof"], ["pad"], [],  # the proof's dial-back
        ["pad"], []]  # a plain TCP dial-back: only its padding is new
    assert (r.reachable, r.reason) == (True, "ok")
    assert r.protocol_check is not None and not r.protocol_check.ok and "older server" in r.protocol_check.detail
    assert (plain.reachable, plain.reason) == (True, "ok")
