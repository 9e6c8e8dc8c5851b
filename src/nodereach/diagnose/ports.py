"""Probes about ports: outbound port filters toward the server, and the node's ports from outside (dial-back)
with the public endpoint the NAT gives a free UDP port. One top-level coroutine each, returning a value."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from functools import partial
from typing import TYPE_CHECKING

from nodereach.diagnose import dialback, portfilter, probes
from nodereach.diagnose.budget import Context
from nodereach.diagnose.model import PortResult
from nodereach.diagnose.observations import PortPaths, PortProbe
from nodereach.diagnose.options import ResolvedServer
from nodereach.diagnose.stunio import StunSocket
from nodereach.net import Endpoint, Family, PortSpec, SockAddr, socket_family, wildcard
from nodereach.p2p.exchange import TRANSPORT, ProofProtocol
from nodereach.reach.client import ProofRequest
from nodereach.reach.limits import MAX_IN_FLIGHT_PER_ADDRESS

if TYPE_CHECKING:
    from nodereach.node.proofs import ProofPlan

DIALBACK_ATTEMPTS = 3
RETRY_AFTER_S = 1.0
"""The service answers 429/503 with Retry-After: 1 (reach.service)."""
SERVER_WAIT_RTTS = 4
"""The server's probe deadline in RTTs (+ 0.1 s): its tries go out in the first half (reach.prober.SCHEDULE,
every RTT/2 or so), the last one's answer has two RTTs (one for the round trip, one for jitter)."""
HEDGE_RTTS, HEDGE_BLIND_S = 3, 0.3
"""A further copy of a dial-back request starts when no earlier one connected within 3 RTT (0.3 s before any
RTT is known): its SYN or SYN-ACK was lost, and the kernel would resend it only after a second."""
NO_DIALBACK = "outbound port filters: needs a nodereach server (--server)"
NODE_ANSWER_S: dict[ProofProtocol, float] = {
    "monero": 0.1, "libp2p": 0.1, "bittorrent": 0.3, "bitcoin": 0.2, "discv4": 0.1, "discv5": 0.1}
"""What the node itself may take to answer a proof, on top of the path's round trips. Measured in the lab
(reach.client.dial_back): monerod 12 ms, js-libp2p 20 ms, ChainSafe discv5 and EthereumJS discv4 a few ms,
transmission-daemon up to 240 ms on loaded cores; Bitcoin Core answers `version` at once."""
CLOSED = frozenset({"timeout", "refused", "reset", "unreachable"})
"""A TCP proof's connection failed for one of these: the port is closed from outside (the server made the path
test's tries: reach.proofs.prove_tcp), no path test follows."""
PROOF_MIN_LEFT_S = 0.4
"""A proof is asked only while the run has this much time left (dial_back's own floor)."""
PROOF_TIMEOUT_S: dict[ProofProtocol, float] = {
    "bitcoin": 5.0, "monero": 5.0, "libp2p": 3.0, "bittorrent": 5.0, "discv4": 3.0, "discv5": 3.0}
"""The service's own bound per protocol (reach.proofs.PROTOCOL_TIMEOUT, which the client does not import)."""


def dialback_copies(ports: Sequence[PortSpec], spec: PortSpec) -> int:
    """Copies a port's dial-back request may have (the second starts only if the first did not connect in time,
    reach.client hedging; the first that decides wins): a lost SYN of the request does not hold the answer for
    the kernel's 1 s retransmission. Two per port while all of the run's requests fit the service's
    per-address in-flight cap; else two for TCP ports only if that fits, else one (a request beyond the cap is
    refused as busy)."""
    if 2 * len(ports) <= MAX_IN_FLIGHT_PER_ADDRESS:
        return 2
    tcp = sum(1 for p in ports if p.transport == "tcp")
    return 2 if spec.transport == "tcp" and len(ports) + tcp <= MAX_IN_FLIGHT_PER_ADDRESS else 1


async def port_paths(server: ResolvedServer, family: Family, ports: Sequence[PortSpec], ctx: Context) -> PortPaths:
    """Which destination ports outbound traffic reaches: the node's own and the well-known P2P ones."""
    host = server.address(family)
    if not server.dialback or host is None:
        # Only a nodereach server is ours to knock on at other ports; a public STUN server is not.
        return PortPaths(skipped=NO_DIALBACK)
    tcp_ports = sorted({*portfilter.WELL_KNOWN_TCP, *(p.port for p in ports if p.transport == "tcp")})
    udp_ports = sorted({p.port for p in ports if p.transport == "udp"})
    await ctx.first_rtt()
    sent = time.monotonic()
    # Answered TCP probes are loss evidence too (their SYNs cross the same path as the STUN tests).
    paths = await portfilter.probe_paths(host, tcp_ports, udp_ports, wait_s=partial(_path_deadline, ctx, sent),
                                         rto=ctx.rtt.rto, tries=ctx.rtt.tries_for_negative(),
                                         on_answer=ctx.rtt.record_answer, pace=ctx.rtt.pace(),
                                         needed=ctx.rtt.tries_for_negative,
                                         hard_end=lambda: ctx.budget.end - PATH_END_MARGIN_S)
    return PortPaths(tuple(paths), needed_tries=ctx.rtt.tries_for_negative())


PATH_END_MARGIN_S = 0.3
"""A silent UDP port's extra tries (portfilter.MoreTries) stop this long before the run's end: the conclusion
and the report need the rest."""


def _path_deadline(ctx: Context, sent: float) -> float:
    """Re-read by the probes: the paced tries' deadline (Budget.negative), never past the run's end."""
    return max(sent + 0.1, min(ctx.budget.end - 0.05, ctx.budget.negative(sent)))


def _rtt(ctx: Context, handshake_s: float) -> float:
    """The RTT: STUN's, or the API request's TCP handshake (a handshake slower than 0.9 s hid a lost SYN and
    says nothing about the RTT)."""
    if ctx.rtt.srtt is not None and not ctx.rtt.provisional:
        return ctx.rtt.srtt
    return handshake_s if handshake_s < 0.9 else 0.5


def _server_wait(ctx: Context, handshake_s: float) -> float:
    """The server's probe deadline, from the RTT."""
    rtt = _rtt(ctx, handshake_s)
    wait = max(0.25, SERVER_WAIT_RTTS * rtt + 0.1)
    return min(wait, max(0.2, ctx.budget.left() - 2 * rtt - 0.05))


def _proof_wait(ctx: Context, protocol: ProofProtocol, handshake_s: float) -> float:
    """A proof's deadline at the server: the probe's, plus one round trip for the exchange after a TCP
    handshake and the node's own time to answer; never past the protocol's bound nor the run's."""
    rtt = _rtt(ctx, handshake_s)
    exchange = rtt if TRANSPORT[protocol] == "tcp" else 0.0
    wait = max(0.3, SERVER_WAIT_RTTS * rtt + 0.1 + exchange + NODE_ANSWER_S[protocol])
    return min(wait, PROOF_TIMEOUT_S[protocol], max(0.2, ctx.budget.left() - 2 * rtt - 0.05))


class Slots:
    """The dial-back service runs at most MAX_IN_FLIGHT_PER_ADDRESS probes per requester at once and refuses
    more as busy (a retry then costs its Retry-After second): the run's requests over one family share these
    slots, so a proof asked while the first requests are still out waits for one instead."""

    def __init__(self, size: int = MAX_IN_FLIGHT_PER_ADDRESS) -> None:
        self.free = size
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def take(self, n: int) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: self.free >= min(n, MAX_IN_FLIGHT_PER_ADDRESS))
            self.free -= n
        try:
            yield
        finally:
            async with self._changed:
                self.free += n
                self._changed.notify_all()


async def dial_back(server: ResolvedServer, family: Family, spec: PortSpec, copies: int, ctx: Context, *,
                    listen: bool = True, proof: ProofRequest | None = None, slots: Slots | None = None) -> PortResult:
    """Dial-back of one port, started at once. The server's answer is final (its probe made several tries,
    reach.prober.SCHEDULE); a request that got no answer at all is made again while time allows, and a busy
    server is asked again after the second it asks for. `listen=False`: never listen on the port when nothing
    holds it (CheckOptions.hold_free_ports). `proof`: the server speaks the node's protocol instead (one
    request: the connection is the node's, not copies of a path test)."""
    host = server.address(family) or server.spec.host
    http_port = server.spec.http_port
    result = PortResult(port=spec.port, protocol=spec.transport, family=family, reason="no-server")
    if http_port is None:
        return result
    copies = copies if proof is None else 1  # one proof: a second connection may be refused (port_probe)
    wait = partial(_server_wait, ctx) if proof is None else partial(_proof_wait, ctx, proof.protocol)
    # A TCP proof's connection has the path test's deadline: a closed port is known as early (reach.proofs).
    connect_wait = partial(_server_wait, ctx) if proof is not None and spec.transport == "tcp" else None
    for _attempt in range(DIALBACK_ATTEMPTS):
        async with slots.take(copies) if slots is not None else contextlib.nullcontext():
            left = ctx.budget.left()
            if left < 0.4:
                break
            srtt = ctx.rtt.srtt
            new = await dialback.probe(host, http_port, spec.port, spec.transport, family=family, server_wait=wait,
                                       http_timeout=left - 0.02, copies=copies, listen=listen, proof=proof,
                                       hedge_s=HEDGE_RTTS * srtt if srtt is not None else HEDGE_BLIND_S,
                                       connect_wait=connect_wait)
        if result.reachable is None or new.reachable is not None:
            result = new
        if result.reason in ("rate-limited", "server-busy") and ctx.budget.left() > RETRY_AFTER_S + 0.6:
            await asyncio.sleep(RETRY_AFTER_S)  # the service asks to come back shortly (Retry-After: 1)
            continue
        if result.reason != "no-server":
            break
    return result


async def public_endpoint(port: int, family: Family, stun: SockAddr, ctx: Context) -> str | None:
    """Which public endpoint does the NAT give the node's own UDP port? Asked after the dial-back (so it cannot
    open the hole it tests). A node advertising its local port is unreachable if the NAT changes it."""
    if ctx.budget.left() < 0.1:
        return None
    try:
        sock = await StunSocket(ctx.rtt, socket_family(family), bind=(wildcard(family), port)).open()
    except OSError:
        return None
    try:
        reply = await probes.request(sock, stun, ctx)
    finally:
        sock.close()
    if reply is not None and reply.source == stun and reply.mapped is not None:
        return str(Endpoint.of(reply.mapped))  # IPv6 in brackets: [2001:db8::1]:30303
    return None


def _held(spec: PortSpec, family: Family) -> bool:
    """Something holds the port here: binding it as the dial-back's own listener would (reach.client) fails."""
    sock = socket.socket(socket_family(family), socket.SOCK_STREAM if spec.transport == "tcp" else socket.SOCK_DGRAM)
    try:
        if spec.transport == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's create_server(reuse_address)
        if family == 6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # IPv6 alone, as the listener binds it
        sock.bind((wildcard(family), spec.port))
    except OSError as exc:
        return exc.errno in (errno.EADDRINUSE, errno.EACCES)
    finally:
        sock.close()
    return False


async def _prove(server: ResolvedServer, family: Family, spec: PortSpec, request: ProofRequest, ctx: Context,
                 slots: Slots | None) -> PortResult:
    if ctx.budget.left() < PROOF_MIN_LEFT_S:
        return PortResult(port=spec.port, protocol=spec.transport, reason="no-time")
    return await dial_back(server, family, spec, 1, ctx, proof=request, slots=slots)


async def port_probe(server: ResolvedServer, family: Family, spec: PortSpec, copies: int, ctx: Context, *,
                     listen: bool = True, plan: Awaitable[ProofPlan] | None = None,
                     slots: Slots | None = None) -> PortProbe:
    """One node port from outside; for a free UDP port also the public endpoint the NAT gives it (only when
    the check may hold free ports: `listen`).

    With `plan` (the node stage's choice of proofs, nodereach.node.proofs) a port that something holds here may
    get the proof in the node's own protocol; a free port cannot (nothing there would answer), so its
    dial-back starts at once as without a plan. TCP: the proof is the port's only dial-back (its handshake is
    the path test), because a node may refuse a second connection from an address it is still handshaking
    with: Transmission 3.00 closes an incoming connection while it has another peer or handshake from the
    same address (libtransmission/peer-mgr.c, peerIsInUse), and the path test's copies come from the very
    address the proof does. The service connects for a proof with the path test's fresh SYNs, so a proof that
    could not connect (timeout, refused, unreachable) answers the path too; only a proof that did not run (no
    server, busy, no time) is followed by the path test (with its copies). UDP: beside the path test, which
    alone cannot see a node's port."""
    proof: PortResult | None = None
    if plan is None or not _held(spec, family):
        result = await dial_back(server, family, spec, copies, ctx, listen=listen, slots=slots)
    elif spec.transport == "tcp":
        request = (await plan).request_for(spec)
        if request is not None:
            proof = await _prove(server, family, spec, request, ctx, slots)
        if proof is not None and proof.reachable is True:
            result = PortResult(port=spec.port, protocol=spec.transport, reachable=True, reason="ok", listener="node",
                                rtt_ms=proof.rtt_ms)
        elif proof is not None and proof.reachable is False and proof.reason in CLOSED:
            # The proof's connection was tried as the path test's is (reach.proofs.prove_tcp): its "no" is the
            # path's answer, and asking again would only cost the path test's deadline a second time.
            result = PortResult(port=spec.port, protocol=spec.transport, family=family, reachable=False,
                                reason=proof.reason, listener="node", rtt_ms=proof.rtt_ms,
                                second_address=proof.second_address)
        else:
            result = await dial_back(server, family, spec, copies, ctx, listen=listen, slots=slots)
    else:
        plain = asyncio.ensure_future(dial_back(server, family, spec, copies, ctx, listen=listen, slots=slots))
        try:
            request = (await plan).request_for(spec)
            if request is not None:
                proof = await _prove(server, family, spec, request, ctx, slots)
            result = await plain
        finally:
            plain.cancel()
    stun = server.stun(family)
    endpoint = None
    if spec.transport == "udp" and result.listener == "nodereach" and stun is not None:
        endpoint = await public_endpoint(spec.port, family, stun, ctx)
    return PortProbe(spec, result, endpoint, proof)
