"""Probes about ports: outbound port filters toward the server, and the node's ports from outside (dial-back)
with the public endpoint the NAT gives a free UDP port. One top-level coroutine each, returning a value."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from functools import partial

from nodereach.diagnose import dialback, portfilter, probes
from nodereach.diagnose.budget import Context
from nodereach.diagnose.model import PortResult
from nodereach.diagnose.observations import PortPaths, PortProbe
from nodereach.diagnose.options import ResolvedServer
from nodereach.diagnose.stunio import StunSocket
from nodereach.net import Endpoint, Family, PortSpec, SockAddr, socket_family, wildcard
from nodereach.reach.limits import MAX_IN_FLIGHT_PER_ADDRESS

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
                                         rto=ctx.rtt.rto, tries=ctx.tries(), on_answer=ctx.rtt.record_answer,
                                         pace=ctx.pace())
    return PortPaths(tuple(paths))


def _path_deadline(ctx: Context, sent: float) -> float:
    """Re-read by the probes: the paced tries' deadline (Budget.negative), never past the run's end."""
    return max(sent + 0.1, min(ctx.budget.end - 0.05, ctx.budget.negative(sent)))


def _server_wait(ctx: Context, handshake_s: float) -> float:
    """The server's probe deadline, from the RTT (STUN's, or the API request's TCP handshake: a handshake
    slower than 0.9 s hid a lost SYN and says nothing about the RTT)."""
    rtt = ctx.rtt.srtt if ctx.rtt.srtt is not None and not ctx.rtt.provisional else \
        (handshake_s if handshake_s < 0.9 else 0.5)
    wait = max(0.25, SERVER_WAIT_RTTS * rtt + 0.1)
    return min(wait, max(0.2, ctx.budget.left() - 2 * rtt - 0.05))


async def dial_back(server: ResolvedServer, family: Family, spec: PortSpec, copies: int, ctx: Context, *,
                    listen: bool = True) -> PortResult:
    """Dial-back of one port, started at once. The server's answer is final (its probe made several tries,
    reach.prober.SCHEDULE); a request that got no answer at all is made again while time allows, and a busy
    server is asked again after the second it asks for. `listen=False`: never listen on the port when nothing
    holds it (CheckOptions.hold_free_ports)."""
    host = server.address(family) or server.spec.host
    http_port = server.spec.http_port
    result = PortResult(port=spec.port, protocol=spec.transport, family=family, reason="no-server")
    if http_port is None:
        return result
    for _attempt in range(DIALBACK_ATTEMPTS):
        left = ctx.budget.left()
        if left < 0.4:
            break
        srtt = ctx.rtt.srtt
        new = await dialback.probe(host, http_port, spec.port, spec.transport, family=family,
                                   server_wait=partial(_server_wait, ctx), http_timeout=left - 0.02, copies=copies,
                                   listen=listen, hedge_s=HEDGE_RTTS * srtt if srtt is not None else HEDGE_BLIND_S)
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


async def port_probe(server: ResolvedServer, family: Family, spec: PortSpec, copies: int, ctx: Context, *,
                     listen: bool = True) -> PortProbe:
    """One node port from outside; for a free UDP port also the public endpoint the NAT gives it (only when
    the check may hold free ports: `listen`)."""
    result = await dial_back(server, family, spec, copies, ctx, listen=listen)
    stun = server.stun(family)
    endpoint = None
    if spec.transport == "udp" and result.listener == "nodereach" and stun is not None:
        endpoint = await public_endpoint(spec.port, family, stun, ctx)
    return PortProbe(spec, result, endpoint)
