"""The dial-back HTTP service: /v1 JSON API, the "Is my node reachable?" page, /healthz and /metrics.

It only ever probes the address the request came from (or, behind a configured proxy, the client named in
X-Forwarded-For); a request that names another address is refused. Every probe passes the Limiter first.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from nodereach import __version__
from nodereach.net import FAMILIES, Family, IPAddress, Transport, family_of, is_ip, parse_ip, unmap, wildcard
from nodereach.p2p.exchange import PROOF_PROTOCOLS, TRANSPORT, ProofProtocol
from nodereach.reach import codec, prober, proofs
from nodereach.reach.guard import ConnectionGuard
from nodereach.reach.limits import DEFAULT_REFUSED_PORTS, Limiter, LimitsConfig, client_address, parse_networks
from nodereach.reach.metrics import LabeledCounters, Metrics

log = logging.getLogger("nodereach.reach")

API_VERSION = 1
MAX_BODY = 1024
FORBIDDEN_FIELDS = ("address", "host", "ip", "target", "addr", "hostname", "to", "destination")
FAMILY_MISSING = frozenset({errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT})
"""Errors binding a wildcard of a family this kernel or container does not have (IPv6 switched off)."""


@dataclass
class DialbackConfig:
    probe_timeout: float = 2.0
    """Upper bound of one probe; a request may ask for less (timeout_ms)."""
    min_probe_timeout: float = 0.2
    alt_addresses: tuple[str, ...] = ()
    """The server's second address per family (at most one each): a probe over that family leaves from it,
    not from the address the request reached, so state the request created never lets the probe in."""
    trusted_proxies: tuple[str, ...] = ()
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    refused_ports_spec: str = DEFAULT_REFUSED_PORTS
    head_timeout: float = 5.0
    body_timeout: float = 5.0
    max_connections: int = 2048
    max_connections_per_address: int = 32
    drain_timeout: float = 5.0
    web: bool = True
    probes: bool = True
    """False (serve --no-dialback): only /healthz, /metrics and /v1/info are served."""
    proof_timeout: float = 5.0
    """Upper bound of one protocol proof (each protocol has its own, lower or equal: proofs.PROTOCOL_TIMEOUT)."""


class ProofBody(msgspec.Struct, forbid_unknown_fields=True):
    """Speak the node's own protocol to the port (docs/dialback-api.md, "Protocol proofs")."""

    protocol: ProofProtocol
    network: str | None = None
    """Bitcoin: main, testnet3, testnet4, signet, regtest."""
    magic: str | None = None
    """Bitcoin: 8 hex digits (a custom signet); overrides `network`."""
    infohash: str | None = None
    """BitTorrent: 40 hex digits, a torrent the node serves."""
    node_id: str | None = None
    """discv5 (required unless `enr`), discv4 (optional: the PONG must be signed by it): 64 hex digits."""
    enr: str | None = None
    """The node's ENR (`enr:...`): its node id is taken from it; its addresses are never used."""


class ProbeRequest(msgspec.Struct, forbid_unknown_fields=True):
    port: int
    protocol: Transport
    token: str | None = None
    """Hex, 16..64 digits: the client's listener will be sent it and must echo it."""
    timeout_ms: int | None = None
    connect_timeout_ms: int | None = None
    """A TCP proof: the deadline of its connection (the path test's); the rest of `timeout_ms` is for the node's
    answer once connected. Without it the connection may take all of `timeout_ms`."""
    proof: ProofBody | None = None
    pad: str | None = None
    """Ignored: lets a client make its request as large as the proof it asks for (no amplification)."""


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=msgspec.json.encode(data), status=status, content_type="application/json",
                        headers=headers)


REQUESTER_TCP_BYTES = prober.TCP_SYN_BYTES + 2 * prober.TCP_SEGMENT_OVERHEAD
"""The requester's own SYN, ACK and the header of the segment carrying the request (IPv4; FIN not counted):
counted with the same sizes as what the probe sends."""


def _request_bytes(request: web.Request, body_len: int, family: Family) -> int:
    """On-wire bytes the requester sent for this request: the budget a probe may not exceed (no amplification).
    Counted like the probe: IP/TCP headers included."""
    line = len(request.method) + len(request.raw_path) + 11
    headers = REQUESTER_TCP_BYTES + 3 * prober.ip_extra(family == 6)
    return headers + line + sum(len(k) + len(v) + 4 for k, v in request.raw_headers) + 2 + body_len


class DialbackService:
    def __init__(self, config: DialbackConfig | None = None, metrics: Metrics | None = None,
                 info: dict[str, Any] | None = None) -> None:
        self.config = config or DialbackConfig()
        self.metrics = metrics or Metrics()
        self.info_extra = info or {}
        self.limiter = Limiter(self.config.limits)
        self.trusted = parse_networks(self.config.trusted_proxies)
        self.guard = ConnectionGuard(head_timeout=self.config.head_timeout,
                                     max_connections=self.config.max_connections,
                                     max_per_address=self.config.max_connections_per_address,
                                     exempt=self._is_trusted_proxy)
        self.closing = False
        self._probes: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self.bound: list[tuple[str, int]] = []
        """The HTTP sockets listening: (address, port), one or more per family."""
        self._static = _load_static() if self.config.web and self.config.probes else {}
        self.metrics.tracked.labels("address").set_function(lambda: self.limiter.tracked_addresses)
        self.metrics.tracked.labels("network").set_function(lambda: self.limiter.tracked_networks)
        self.metrics.connections.set_function(lambda: self.guard.stats.open)
        self.metrics.in_flight.set_function(lambda: self.limiter.in_flight)
        self.metrics.add_collector(LabeledCounters("nodereach_http_connections_dropped",
                                                   "HTTP connections closed by the guard", "reason",
                                                   lambda: self.guard.stats.dropped))

    # --- app -----------------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._middleware])
        if self.config.probes:
            app.router.add_post("/v1/probe", self.handle_probe)
        app.router.add_get("/v1/address", self.handle_address)
        app.router.add_get("/v1/info", self.handle_info)
        app.router.add_get("/healthz", self.handle_health)
        app.router.add_get("/metrics", self.handle_metrics)
        if self._static:
            app.router.add_get("/", self.handle_static)
            app.router.add_get("/static/{name}", self.handle_static)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        start = time.perf_counter()
        route = request.match_info.route.resource
        endpoint = route.canonical if route is not None else "other"
        status = 500
        try:
            try:
                response: web.StreamResponse = await handler(request)
            except ApiError as err:
                if err.status in (400, 403, 415, 429, 503):
                    self.metrics.rejected.labels(err.code).inc()
                response = _json({"error": err.code, "message": err.message}, err.status, err.headers)
            except web.HTTPException as exc:
                response = _json({"error": "http", "message": exc.reason}, exc.status)
            status = response.status
            return response
        finally:
            self.metrics.http_requests.labels(endpoint, str(status)).inc()
            self.metrics.http_seconds.labels(endpoint).observe(time.perf_counter() - start)
            if request.transport is not None:
                conn = self.guard.by_transport.get(request.transport)
                if conn is not None:
                    conn.response_sent()

    def _is_trusted_proxy(self, peer: str) -> bool:
        if not self.trusted:
            return False
        try:
            addr = unmap(parse_ip(peer))
        except ValueError:
            return False
        return any(addr in net for net in self.trusted)

    def _client(self, request: web.Request) -> IPAddress:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if not peer:
            raise ApiError(400, "no-peer", "cannot tell where the request came from")
        try:
            return client_address(peer[0], request.headers.get("X-Forwarded-For"), self.trusted)
        except ValueError as exc:
            raise ApiError(400, "bad-forwarded-for", str(exc)) from None

    # --- handlers ------------------------------------------------------------------------------------
    async def handle_probe(self, request: web.Request) -> web.Response:
        if self.closing:
            raise ApiError(503, "shutting-down", "the server is shutting down; try another server",
                           {"Retry-After": "5"})
        if request.content_type != "application/json":
            # Also forces a CORS preflight (which is not granted): other sites cannot make browsers call us.
            raise ApiError(415, "bad-content-type", "send the body as Content-Type: application/json")
        try:
            async with asyncio.timeout(self.config.body_timeout):
                body = await request.read()
        except TimeoutError:
            raise ApiError(408, "slow-body", "request body not received in time") from None
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(400, "bad-request", f"body larger than {MAX_BODY} bytes") from None
        req, spec = _parse_probe(body)
        target = self._client(request)
        cfg = self.config
        now = time.monotonic()
        verdict = self.limiter.admit(target, req.port, now)
        if verdict is not None:
            raise _rejection(verdict, req.port, self.limiter.retry_after(target))
        try:
            timeout = cfg.probe_timeout if spec is None else cfg.proof_timeout
            if req.timeout_ms is not None:
                timeout = max(cfg.min_probe_timeout, min(timeout, req.timeout_ms / 1000))
            token = bytes.fromhex(req.token) if req.token else None
            budget = _request_bytes(request, len(body), family_of(target))
            sockname = request.transport.get_extra_info("sockname") if request.transport else None
            source, second = self._source_for(target, sockname[0] if sockname else None)
            host = str(target)
            start = time.perf_counter()
            connect = timeout if req.connect_timeout_ms is None else \
                max(cfg.min_probe_timeout, min(timeout, req.connect_timeout_ms / 1000))
            task = asyncio.ensure_future(self._probe(req, spec, host, token, source, timeout, budget, connect))
            self._probes.add(task)
            task.add_done_callback(self._probes.discard)
            outcome, check = await asyncio.shield(task)
            elapsed = time.perf_counter() - start
        finally:
            self.limiter.release(target)
            if not self.limiter.in_flight:
                self._idle.set()
        self.metrics.probes.labels(req.protocol, outcome.reason).inc()
        self.metrics.probe_seconds.labels(req.protocol).observe(elapsed)
        self.metrics.bytes_sent.inc(outcome.bytes_sent)
        if check is not None:
            self.metrics.proofs.labels(check.protocol, "ok" if check.ok else "failed").inc()
        log.info("probe", extra={"event": "probe", "client": host, "port": req.port, "protocol": req.protocol,
                                 "reachable": outcome.reachable, "reason": outcome.reason,
                                 "rtt_ms": outcome.rtt_ms, "verified": outcome.verified, "source": outcome.source,
                                 "second_address": second,
                                 "proof": None if check is None else check.protocol,
                                 "proof_ok": None if check is None else check.ok})
        return _json({"address": host, "port": req.port, "protocol": req.protocol,
                      "reachable": outcome.reachable, "reason": outcome.reason,
                      "rtt_ms": None if outcome.rtt_ms is None else round(outcome.rtt_ms, 3),
                      "verified": outcome.verified, "source": outcome.source, "second_address": second,
                      "duration_ms": round(elapsed * 1000, 3), "bytes_sent": outcome.bytes_sent,
                      "request_bytes": budget, "protocol_check": None if check is None else {
                          "protocol": check.protocol, "ok": check.ok, "detail": check.detail,
                          "rtt_ms": None if check.rtt_ms is None else round(check.rtt_ms, 3)}})

    async def _probe(self, req: ProbeRequest, spec: proofs.ProofSpec | None, host: str, token: bytes | None,
                     source: str | None, timeout: float, budget: int, connect: float,  # noqa: ASYNC109
                     ) -> tuple[prober.ProbeOutcome, proofs.ProtocolCheck | None]:
        if spec is not None:
            return await proofs.prove(spec, host, req.port, source=source, timeout=timeout, budget=budget,
                                      connect_timeout=connect)
        if req.protocol == "tcp":
            return await prober.probe_tcp(host, req.port, token=token, source=source, timeout=timeout,
                                          budget=budget), None
        return await prober.probe_udp(host, req.port, token=token or secrets.token_bytes(16), source=source,
                                      timeout=timeout, budget=budget, expect_echo=token is not None), None

    def _source_for(self, target: IPAddress, local: str | None) -> tuple[str | None, bool]:
        """Where a probe to `target` leaves from, and whether that is a second address (not the one the request
        reached). The second address of the target's family when the server has one: no state the request
        created (not even address-dependent filtering) can let the probe in. Else the address the request
        reached, on a fresh ephemeral port: port-dependent state still cannot, but an address-dependent
        filter would, so the answer is weaker (`second_address: false`)."""
        loc: IPAddress | None = None
        if local:
            with contextlib.suppress(ValueError):
                loc = unmap(parse_ip(local))
        for alt in self.config.alt_addresses:
            alt_ip = parse_ip(alt)
            if alt_ip.version == target.version and alt_ip != loc:
                return alt, True
        if loc is not None and loc.version == target.version and not loc.is_unspecified:
            return str(loc), False
        return None, False

    async def handle_address(self, request: web.Request) -> web.Response:
        target = self._client(request)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        port = peer[1] if peer and is_ip(peer[0]) and unmap(parse_ip(peer[0])) == target else None
        return _json({"address": str(target), "port": port})

    async def handle_info(self, request: web.Request) -> web.Response:
        cfg = self.config
        http = [{"family": family_of(host), "address": host, "port": port} for host, port in self.bound]
        families = sorted({family_of(host) for host, _ in self.bound})
        dialback = None if not cfg.probes else {
            "protocols": ["tcp", "udp"], "probe_timeout_ms": int(cfg.probe_timeout * 1000),
            "refused_ports": cfg.refused_ports_spec, "alt_address": bool(cfg.alt_addresses),
            "families": [{"family": f, "second_address": next((a for a in cfg.alt_addresses if family_of(a) == f),
                                                               None)} for f in families],
            "proofs": list(PROOF_PROTOCOLS), "proof_timeout_ms": int(cfg.proof_timeout * 1000)}
        return _json({"service": "nodereach", "version": __version__, "api": API_VERSION, "families": families,
                      "http": http, "dialback": dialback, **self.info_extra})

    async def handle_health(self, request: web.Request) -> web.Response:
        if self.closing:
            return _json({"status": "draining", "probes_in_flight": self.limiter.in_flight}, 503)
        return _json({"status": "ok", "probes_in_flight": self.limiter.in_flight})

    async def handle_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def handle_static(self, request: web.Request) -> web.Response:
        name = request.match_info.get("name", "index.html")
        item = self._static.get(name)
        if item is None:
            raise web.HTTPNotFound()
        body, ctype = item
        return web.Response(body=body, content_type=ctype, headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": "default-src 'self'; style-src 'self'; script-src 'self'; "
                                       "connect-src 'self'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff",
        })

    # --- life cycle ----------------------------------------------------------------------------------
    async def start(self, addresses: list[str], port: int) -> list[tuple[str, int]]:
        """Listen on each address; none given: on 0.0.0.0 and on :: (IPV6_V6ONLY, so each socket's family is
        its requests' family), skipping a family the kernel does not have. Returns the bound (host, port)."""
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, keepalive_timeout=15)
        await self._runner.setup()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        if self.config.probes:
            loop.run_in_executor(None, _warm_proof_imports)
        bound: list[tuple[str, int]] = []
        hosts = list(addresses) or [wildcard(f) for f in FAMILIES]
        try:
            for host in hosts:
                try:
                    srv = await loop.create_server(self.guard.factory(server), host=host, port=port,
                                                   reuse_address=True, backlog=1024)
                except OSError as exc:
                    if addresses or exc.errno not in FAMILY_MISSING:
                        raise
                    log.warning("IPv%d not available: not serving it", family_of(host),
                                extra={"event": "family-missing", "error": str(exc)})
                    continue
                self._servers.append(srv)
                for sock in srv.sockets:
                    name = sock.getsockname()
                    bound.append((name[0], name[1]))
                    if port == 0:
                        port = name[1]
        except OSError as exc:
            await self.close()
            raise exc
        self.bound = bound
        return bound

    async def drain(self) -> None:
        """Stop accepting; let probes in flight finish (bounded) so every request gets its answer."""
        self.closing = True
        for srv in self._servers:
            srv.close()
        if self._probes:
            await asyncio.wait(set(self._probes), timeout=self.config.drain_timeout)
        # Give handlers a moment to write the answers of the probes that just finished.
        if self.limiter.in_flight:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._idle.wait()
        self.guard.close_idle()

    async def close(self) -> None:
        for srv in self._servers:
            srv.close()
        for task in list(self._probes):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for conn in list(self.guard.connections):
            conn.abort("max-age", count=False)
        self._servers.clear()


def _warm_proof_imports() -> None:
    """Import what ENR proofs need off the event loop, once at start: `rlp` pulls eth-utils and pydantic
    (~0.7 s here), which would otherwise stall every request in flight when the first ENR arrives."""
    with contextlib.suppress(ImportError):  # a broken install shows up, with its error, on the first ENR
        import coincurve  # noqa: F401
        import rlp  # noqa: F401
        from Crypto.Hash import keccak  # noqa: F401


def _parse_proof(req: ProbeRequest) -> proofs.ProofSpec | None:
    """Validate the proof part of a request; ApiError 400 says which field is wrong."""
    p = req.proof
    if p is None:
        return None
    if req.token is not None:
        raise ApiError(400, "bad-request", "a protocol proof speaks to the node itself: send no token")
    if TRANSPORT[p.protocol] != req.protocol:
        raise ApiError(400, "bad-request", f"{p.protocol} runs over {TRANSPORT[p.protocol]}, not {req.protocol}")
    magic = infohash = node_id = None
    network = p.network
    if p.protocol == "bitcoin":
        from nodereach.p2p.bitcoin import NETWORKS

        if p.magic is not None:
            magic = _hex_field(p.magic, "magic", 4)
        elif network is not None:
            if network not in NETWORKS:
                raise ApiError(400, "bad-request", f"unknown Bitcoin network {network[:32]!r}: use one of "
                               f"{', '.join(NETWORKS)}, or give the magic")
            magic = NETWORKS[network]
    if p.protocol == "bittorrent":
        if p.infohash is None:
            raise ApiError(400, "bad-request", "a BitTorrent proof needs the infohash of a torrent the node serves")
        infohash = _hex_field(p.infohash, "infohash", 20)
    if p.node_id is not None:
        node_id = _hex_field(p.node_id, "node_id", 32)
    elif p.enr is not None:
        from nodereach.p2p.enr import EnrError, decode_enr

        try:
            node_id = decode_enr(p.enr).node_id
        except EnrError as exc:
            raise ApiError(400, "bad-request", f"enr: {exc}") from None
    if p.protocol == "discv5" and node_id is None:
        raise ApiError(400, "bad-request", "a discv5 proof needs the node id (node_id or enr): packets not "
                       "masked with it get no answer")
    return proofs.ProofSpec(p.protocol, magic=magic, network=network, infohash=infohash, node_id=node_id)


def _hex_field(value: str, name: str, size: int) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise ApiError(400, "bad-request", f"{name} must be {2 * size} hex digits")
    return raw


def _parse_probe(body: bytes) -> tuple[ProbeRequest, proofs.ProofSpec | None]:
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise ApiError(400, "bad-request", "body is not JSON") from None
    if not isinstance(raw, dict):
        raise ApiError(400, "bad-request", "body must be a JSON object")
    named = [k for k in raw if isinstance(k, str) and k.lower() in FORBIDDEN_FIELDS]
    if named:
        raise ApiError(403, "foreign-address", f"field {named[0]!r} refused: this server only tests the address "
                       "the request comes from")
    try:
        req = msgspec.convert(raw, ProbeRequest)
    except msgspec.ValidationError as exc:
        raise ApiError(400, "bad-request", str(exc)) from None
    if not 1 <= req.port <= 65535:
        raise ApiError(400, "bad-request", "port must be 1..65535")
    if req.token is not None:
        if not 2 * codec.MIN_TOKEN <= len(req.token) <= 2 * codec.MAX_TOKEN or len(req.token) % 2:
            raise ApiError(400, "bad-request", "token must be 16..64 hex digits")
        try:
            bytes.fromhex(req.token)
        except ValueError:
            raise ApiError(400, "bad-request", "token must be hex") from None
    if req.timeout_ms is not None and not 1 <= req.timeout_ms <= 60_000:
        raise ApiError(400, "bad-request", "timeout_ms must be 1..60000")
    if req.connect_timeout_ms is not None and not 1 <= req.connect_timeout_ms <= 60_000:
        raise ApiError(400, "bad-request", "connect_timeout_ms must be 1..60000")
    return req, _parse_proof(req)


def _rejection(reason: str, port: int, retry_after: float) -> ApiError:
    if reason == "refused-port":
        return ApiError(403, reason, f"port {port} is on this server's refused list (system services)")
    if reason == "too-many-ports":
        return ApiError(429, reason, "too many distinct ports from this address recently (looks like a scan)",
                        {"Retry-After": "600"})
    if reason == "busy":
        return ApiError(503, reason, "too many probes in flight; retry shortly", {"Retry-After": "1"})
    return ApiError(429, reason, "rate limited; retry later", {"Retry-After": str(int(retry_after + 0.999))})


def _load_static() -> dict[str, tuple[bytes, str]]:
    """The page's files, read once (small): name -> (bytes, content type)."""
    types = {".html": "text/html", ".js": "application/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    out: dict[str, tuple[bytes, str]] = {}
    root = resources.files("nodereach.reach") / "web"
    if not root.is_dir():
        return out
    for item in root.iterdir():
        ext = os.path.splitext(item.name)[1]
        if item.is_file() and ext in types:
            out[item.name] = (item.read_bytes(), types[ext])
    return out


__all__ = ["ApiError", "DialbackConfig", "DialbackService", "ProbeRequest"]
