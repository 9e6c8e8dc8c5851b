"""The dial-back service against real sockets on loopback (127.0.0.1 asks, 127.0.0.2 is the probe source)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest

from nodereach.reach.client import probe_port
from nodereach.reach.limits import LimitsConfig
from nodereach.reach.service import REQUESTER_TCP_BYTES, DialbackConfig, DialbackService
from reach_helpers import free_port, full_backlog_listener

LOOSE = LimitsConfig(address_burst=1000, network_burst=1000, max_ports_per_window=1000)


@contextlib.asynccontextmanager
async def running(config: DialbackConfig) -> AsyncIterator[tuple[DialbackService, str]]:
    svc = DialbackService(config)
    bound = await svc.start(["127.0.0.1"], 0)
    try:
        yield svc, f"127.0.0.1:{bound[0][1]}"
    finally:
        await svc.close()


@pytest.fixture
async def server() -> AsyncIterator[tuple[DialbackService, str]]:
    async with running(DialbackConfig(alt_addresses=("127.0.0.2",), limits=LOOSE, probe_timeout=1.0)) as s:
        yield s


async def post(url: str, body: object, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.post(url + "/v1/probe", json=body, headers=headers) as r:
        return r.status, await r.json()


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def get_text(url: str) -> str:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return await r.text()


async def test_tcp_own_listener_verified(server: tuple[DialbackService, str]) -> None:
    _, addr = server
    r = await probe_port(addr, free_port(), "tcp", timeout=2)
    assert (r.reachable, r.reason, r.listener, r.received) == (True, "ok", "nodereach", True)
    assert r.observed_address == "127.0.0.1"
    assert r.rtt_ms is not None and r.rtt_ms < 100


async def test_tcp_closed_port_refused(server: tuple[DialbackService, str]) -> None:
    _, addr = server
    r = await probe_port(addr, free_port(), "tcp", timeout=2, listen=False)
    assert (r.reachable, r.reason) == (False, "refused")


async def test_tcp_node_listener_handshake(server: tuple[DialbackService, str]) -> None:
    _, addr = server
    with socket.socket() as node:
        node.bind(("0.0.0.0", 0))
        node.listen(8)
        r = await probe_port(addr, node.getsockname()[1], "tcp", timeout=2)
    assert (r.reachable, r.reason, r.listener) == (True, "ok", "node")


async def test_tcp_timeout_when_syn_dropped(server: tuple[DialbackService, str]) -> None:
    _, addr = server
    with full_backlog_listener() as port:
        start = time.monotonic()
        r = await probe_port(addr, port, "tcp", timeout=1.5, listen=False)
        took = time.monotonic() - start
    assert (r.reachable, r.reason) == (False, "timeout")
    assert took < 1.5  # the server's deadline (from timeout_ms) ends it, not the client's


async def test_udp_own_listener_echo(server: tuple[DialbackService, str]) -> None:
    _, addr = server
    r = await probe_port(addr, free_port(socket.SOCK_DGRAM), "udp", timeout=2)
    assert (r.reachable, r.reason, r.listener, r.received) == (True, "ok", "nodereach", True)


async def test_udp_closed_port_refused_by_icmp(server: tuple[DialbackService, str]) -> None:
    _, addr = server
    r = await probe_port(addr, free_port(socket.SOCK_DGRAM), "udp", timeout=2, listen=False)
    assert (r.reachable, r.reason) == (False, "refused")


async def test_udp_node_listener_is_unknown(server: tuple[DialbackService, str]) -> None:
    _, addr = server
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as node:
        node.bind(("0.0.0.0", 0))
        r = await probe_port(addr, node.getsockname()[1], "udp", timeout=1.5)
        node.setblocking(False)
        got = node.recv(100)  # the node did receive the server's datagram...
    assert got.startswith(b"NRDB")
    assert (r.reachable, r.reason, r.listener) == (None, "udp-unobservable", "node")  # ...but we cannot know


async def test_probe_source_is_alt_address(server: tuple[DialbackService, str]) -> None:
    _, addr = server
    with socket.socket() as node:
        node.bind(("127.0.0.1", 0))
        node.listen(8)
        status, doc = await post(f"http://{addr}", {"port": node.getsockname()[1], "protocol": "tcp"})
        conn, peer = node.accept()
        conn.close()
    assert status == 200 and doc["source"] == "127.0.0.2" and peer[0] == "127.0.0.2"
    assert doc["second_address"] is True
    r = await probe_port(addr, free_port(), "tcp", timeout=2)
    assert (r.reachable, r.source, r.second_address) == (True, "127.0.0.2", True)


@pytest.mark.parametrize("field", ["address", "host", "ip", "target", "Address"])
async def test_request_naming_another_address_refused(server: tuple[DialbackService, str], field: str) -> None:
    svc, addr = server
    status, doc = await post(f"http://{addr}", {"port": 30303, "protocol": "tcp", field: "203.0.113.99"})
    assert status == 403 and doc["error"] == "foreign-address"
    assert svc.limiter.in_flight == 0 and svc.limiter.tracked_addresses == 0  # no probe was even admitted


@pytest.mark.parametrize("body, code", [
    ({"port": 0, "protocol": "tcp"}, 400),
    ({"port": 70000, "protocol": "tcp"}, 400),
    ({"port": 30303, "protocol": "sctp"}, 400),
    ({"port": [30303, 30304], "protocol": "tcp"}, 400),
    ({"port": 30303, "protocol": "tcp", "token": "zz" * 8}, 400),
    ({"port": 30303, "protocol": "tcp", "token": "ab"}, 400),
    ({"port": 30303, "protocol": "tcp", "extra": 1}, 400),
    ([30303], 400),
    ({"port": 25, "protocol": "tcp"}, 403),
    ({"port": 22, "protocol": "udp"}, 403),
])
async def test_bad_requests(server: tuple[DialbackService, str], body: object, code: int) -> None:
    status, doc = await post(f"http://{server[1]}", body)
    assert status == code and "error" in doc and doc["message"]


async def test_not_json_and_oversized() -> None:
    async with running(DialbackConfig(limits=LOOSE)) as (_, addr), aiohttp.ClientSession() as s:
        json_type = {"Content-Type": "application/json"}
        async with s.post(f"http://{addr}/v1/probe", data=b"\xff{", headers=json_type) as r:
            assert r.status == 400
        async with s.post(f"http://{addr}/v1/probe", data=b"x" * 5000, headers=json_type) as r:
            assert r.status in (400, 413)
        async with s.post(f"http://{addr}/v1/probe", data=b'{"port": 30303, "protocol": "tcp"}') as r:
            assert r.status == 415  # text/plain would be a "simple" cross-site request: refused
        async with s.options(f"http://{addr}/v1/probe", headers={"Origin": "http://evil.example",
                                                                 "Access-Control-Request-Method": "POST"}) as r:
            assert "Access-Control-Allow-Origin" not in r.headers


async def test_refused_port_via_client(server: tuple[DialbackService, str]) -> None:
    r = await probe_port(server[1], 25, "tcp", timeout=2, listen=False)
    assert (r.reachable, r.reason) == (None, "refused-port")


async def test_rate_limit_per_address() -> None:
    limits = replace(LimitsConfig(), address_burst=5, address_rate=0.01)
    async with running(DialbackConfig(alt_addresses=("127.0.0.2",), limits=limits)) as (_, addr):
        port = free_port()
        codes = [(await post(f"http://{addr}", {"port": port, "protocol": "tcp"}))[0] for _ in range(12)]
        assert codes[:5] == [200] * 5 and set(codes[5:]) == {429}
        async with aiohttp.ClientSession() as s, s.post(f"http://{addr}/v1/probe",
                                                        json={"port": port, "protocol": "tcp"}) as r:
            assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
        text = await get_text(f"http://{addr}/metrics")
        assert metric(text, 'nodereach_probes_rejected_total{reason="rate-limited-address"}') == 8
        assert metric(text, 'nodereach_probes_total{outcome="refused",protocol="tcp"}') == 5


async def test_port_scan_refused() -> None:
    limits = replace(LimitsConfig(), max_ports_per_window=3, address_burst=100)
    async with running(DialbackConfig(limits=limits)) as (_, addr):
        codes = [(await post(f"http://{addr}", {"port": 40000 + i, "protocol": "udp"}))[0] for i in range(6)]
        assert codes == [200, 200, 200, 429, 429, 429]


async def test_no_amplification_even_for_tiny_requests(server: tuple[DialbackService, str]) -> None:
    """A minimal raw request: the server sends fewer probe bytes than the request had, for every outcome."""
    _, addr = server
    host, port = addr.split(":")
    for proto, listen in (("udp", False), ("udp", True), ("tcp", True), ("tcp", False)):
        target = free_port(socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM)
        holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM)
        holder.bind(("127.0.0.1", target))
        if proto == "tcp":
            holder.listen(4)
        if not listen:
            holder.close()
        body = f'{{"port":{target},"protocol":"{proto}","token":"{"ab" * 8}"}}'.encode()
        raw = (b"POST /v1/probe HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
               % (len(body), body))
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(raw)
        await writer.drain()
        resp = await asyncio.wait_for(reader.read(4096), 5)
        writer.close()
        holder.close()
        doc = __import__("json").loads(resp.split(b"\r\n\r\n", 1)[1])
        assert doc["request_bytes"] <= len(raw) + 2 + REQUESTER_TCP_BYTES  # + its SYN, ACK, segment header
        assert 0 < doc["bytes_sent"] <= doc["request_bytes"], (proto, listen, doc)
        if proto == "tcp" and listen:  # handshake + ACK/FIN/ACK (+ the token) was affordable and happened
            assert doc["reachable"] is True


async def test_x_forwarded_for_only_from_trusted_proxy() -> None:
    async with running(DialbackConfig(limits=LOOSE)) as (_, addr), aiohttp.ClientSession() as s, \
            s.get(f"http://{addr}/v1/address", headers={"X-Forwarded-For": "127.0.0.9"}) as r:
        assert (await r.json())["address"] == "127.0.0.1"
    cfg = DialbackConfig(limits=LOOSE, trusted_proxies=("127.0.0.1/32",))
    async with running(cfg) as (_, addr), aiohttp.ClientSession() as s:
        async with s.get(f"http://{addr}/v1/address", headers={"X-Forwarded-For": "6.6.6.6, 127.0.0.9"}) as r:
            assert (await r.json())["address"] == "127.0.0.9"
        # and the probe goes to that client, not to the proxy
        with socket.socket() as node:
            node.bind(("127.0.0.9", 0))
            node.listen(4)
            status, doc = await post(f"http://{addr}", {"port": node.getsockname()[1], "protocol": "tcp"},
                                     {"X-Forwarded-For": "127.0.0.9"})
        assert status == 200 and doc["address"] == "127.0.0.9" and doc["reachable"] is True


async def test_health_info_metrics(server: tuple[DialbackService, str]) -> None:
    _, addr = server
    await probe_port(addr, free_port(), "tcp", timeout=2)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://{addr}/healthz") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"
        async with s.get(f"http://{addr}/v1/info") as r:
            info = await r.json()
            assert info["api"] == 1 and info["dialback"]["protocols"] == ["tcp", "udp"]
    text = await get_text(f"http://{addr}/metrics")
    for name in ("nodereach_http_requests_total", "nodereach_probe_seconds_bucket", "nodereach_probes_in_flight",
                 "nodereach_limiter_tracked", "nodereach_http_connections", "nodereach_probe_bytes_sent_total"):
        assert name in text
    assert metric(text, 'nodereach_probes_total{outcome="ok",protocol="tcp"}') == 1


async def test_slow_header_client_is_cut_off() -> None:
    cfg = DialbackConfig(limits=LOOSE, head_timeout=0.3)
    async with running(cfg) as (svc, addr):
        host, port = addr.split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /v1/probe HTTP/1.1\r\nHost: x\r\n")  # ... and never finishes the head
        await writer.drain()
        start = time.monotonic()
        data = await asyncio.wait_for(reader.read(100), 3)
        assert data == b"" and time.monotonic() - start < 1.5
        writer.close()
        assert svc.guard.stats.dropped["slow"] == 1


async def test_connections_per_address_capped() -> None:
    cfg = DialbackConfig(limits=LOOSE, max_connections_per_address=5)
    async with running(cfg) as (svc, addr):
        host, port = addr.split(":")
        conns = [await asyncio.open_connection(host, int(port)) for _ in range(8)]
        for _, w in conns:
            w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = []
        for r, _ in conns:
            try:
                answers.append(await asyncio.wait_for(r.read(12), 3))
            except ConnectionResetError:
                answers.append(b"")
        for _, w in conns:
            w.close()
        assert sum(a.startswith(b"HTTP/1.1 200") for a in answers) == 5
        assert svc.guard.stats.dropped["too-many-address"] == 3


async def test_drain_answers_probe_in_flight() -> None:
    async with running(DialbackConfig(limits=LOOSE, probe_timeout=1.0)) as (svc, addr):
        with full_backlog_listener() as port:
            pending = asyncio.ensure_future(post(f"http://{addr}", {"port": port, "protocol": "tcp"}))
            for _ in range(100):
                if svc.limiter.in_flight:
                    break
                await asyncio.sleep(0.01)
            assert svc.limiter.in_flight == 1
            await svc.drain()
            status, doc = await asyncio.wait_for(pending, 3)
        assert status == 200 and doc["reason"] == "timeout"
        with pytest.raises(aiohttp.ClientConnectionError):
            await post(f"http://{addr}", {"port": port, "protocol": "tcp"})


async def test_ipv6_requester_is_probed_over_ipv6() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 on this host")
    # The alt address is IPv4: an IPv6 requester is probed from the IPv6 address the request reached.
    svc = DialbackService(DialbackConfig(alt_addresses=("127.0.0.2",), limits=LOOSE))
    port = (await svc.start(["::1"], 0))[0][1]
    try:
        server = f"[::1]:{port}"
        r = await probe_port(server, free_port(), "tcp", timeout=2)
        assert (r.reachable, r.reason, r.observed_address) == (True, "ok", "::1")
        assert (r.source, r.second_address) == ("::1", False)  # the client hands the server's word on
        r = await probe_port(server, free_port(socket.SOCK_DGRAM), "udp", timeout=2)
        assert (r.reachable, r.reason, r.received) == (True, "ok", True)
        async with aiohttp.ClientSession() as s, s.post(f"http://{server}/v1/probe",
                                                        json={"port": free_port(), "protocol": "tcp"}) as resp:
            doc = await resp.json()
        assert doc["source"] == "::1" and doc["reason"] == "refused"
        assert doc["second_address"] is False  # the weaker answer: from the address the request went to
    finally:
        await svc.close()


def _require_ipv6_loopback() -> None:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 on this host")


async def test_default_listens_on_both_families_each_request_probed_over_its_own() -> None:
    """No address given: 0.0.0.0 and :: (IPV6_V6ONLY, else the second bind of one port would fail), an IPv4
    requester seen as IPv4 (not ::ffff:...), probed from the IPv4 second address; an IPv6 one over IPv6."""
    _require_ipv6_loopback()
    svc = DialbackService(DialbackConfig(alt_addresses=("127.0.0.2",), limits=LOOSE, probe_timeout=1.0))
    bound = await svc.start([], 0)
    port = bound[0][1]
    try:
        assert sorted(bound) == [("0.0.0.0", port), ("::", port)]
        async with aiohttp.ClientSession() as s:
            for host, seen in (("127.0.0.1", "127.0.0.1"), ("[::1]", "::1")):
                async with s.get(f"http://{host}:{port}/v1/address") as r:
                    assert (await r.json())["address"] == seen
            async with s.get(f"http://127.0.0.1:{port}/v1/info") as r:
                info = await r.json()
        assert info["families"] == [4, 6]
        assert info["http"] == [{"family": 4, "address": "0.0.0.0", "port": port},
                                {"family": 6, "address": "::", "port": port}]
        assert info["dialback"]["families"] == [{"family": 4, "second_address": "127.0.0.2"},
                                                {"family": 6, "second_address": None}]
        for host, family, source, second in (("127.0.0.1", socket.AF_INET, "127.0.0.2", True),
                                             ("::1", socket.AF_INET6, "::1", False)):
            with socket.socket(family) as node:
                node.bind((host, 0))
                node.listen(4)
                url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
                status, doc = await post(url, {"port": node.getsockname()[1], "protocol": "tcp"})
                conn, peer = node.accept()
                conn.close()
            assert status == 200 and doc["reachable"] is True and doc["address"] == host
            assert (doc["source"], peer[0], doc["second_address"]) == (source, source, second)
    finally:
        await svc.close()


async def test_request_to_the_second_address_is_not_probed_from_it() -> None:
    """A request that reached the second address itself (a wildcard listener) gets a probe from that same
    address: the answer says so (second_address false), never claims a second address it did not use."""
    svc = DialbackService(DialbackConfig(alt_addresses=("127.0.0.2",), limits=LOOSE, probe_timeout=1.0))
    port = (await svc.start(["0.0.0.0"], 0))[0][1]
    try:
        with socket.socket() as node:
            node.bind(("127.0.0.1", 0))
            node.listen(4)
            status, doc = await post(f"http://127.0.0.2:{port}", {"port": node.getsockname()[1], "protocol": "tcp"})
        assert status == 200 and (doc["source"], doc["second_address"]) == ("127.0.0.2", False)
    finally:
        await svc.close()


async def test_ipv6_request_budget_counts_its_longer_headers() -> None:
    """The amplification budget follows the request's family: 3 x 20 bytes more IP header for an IPv6
    requester (its SYN, ACK and request segment), as the probe's own IPv6 packets are counted 20 bytes more."""
    _require_ipv6_loopback()
    svc = DialbackService(DialbackConfig(limits=LOOSE, probe_timeout=0.5))
    port = (await svc.start(["127.0.0.1", "::1"], 0))[0][1]
    try:
        budgets = {}
        for host in ("127.0.0.1", "[::1]"):
            body = b'{"port":40001,"protocol":"udp"}'
            raw = (b"POST /v1/probe HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            reader, writer = await asyncio.open_connection(host.strip("[]"), port)
            writer.write(raw)
            await writer.drain()
            resp = await asyncio.wait_for(reader.read(4096), 5)
            writer.close()
            budgets[host] = __import__("json").loads(resp.split(b"\r\n\r\n", 1)[1])["request_bytes"]
        assert budgets["[::1]"] - budgets["127.0.0.1"] == 60
    finally:
        await svc.close()


async def test_trusted_proxy_not_capped_per_address() -> None:
    cfg = DialbackConfig(limits=LOOSE, max_connections_per_address=3, trusted_proxies=("127.0.0.1/32",))
    async with running(cfg) as (svc, addr):
        host, port = addr.split(":")
        conns = [await asyncio.open_connection(host, int(port)) for _ in range(6)]
        for _, w in conns:
            w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = [await asyncio.wait_for(r.read(12), 3) for r, _ in conns]
        for _, w in conns:
            w.close()
        assert all(a.startswith(b"HTTP/1.1 200") for a in answers)
        assert svc.guard.stats.dropped["too-many-address"] == 0
        text = await get_text(f"http://{addr}/metrics")
        assert 'nodereach_http_connections_dropped_total{reason="too-many-address"} 0.0' in text


def test_tcp_budget_shortens_deadline_to_fit_syn_retransmissions() -> None:
    from nodereach.reach.prober import tcp_min_budget

    assert tcp_min_budget(0.5) == 60 + 3 * 52  # one SYN, then ACK, FIN, ACK on success
    assert tcp_min_budget(2.0) == 60 + 3 * 52  # two SYNs (120) cost less than a completed handshake
    assert tcp_min_budget(5.0) == 60 + 3 * 52  # three SYNs: 180 < 216
    assert tcp_min_budget(2.0, ipv6=True) == 80 + 3 * 72
