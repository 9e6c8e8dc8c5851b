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
SERVER_WAIT_RTTS = 6
"""The server's probe deadline in RTTs: its tries go out in the first half (reach.prober.SCHEDULE), the last
one's answer has the rest."""
NO_DIALBACK = "outbound port filters: needs a nodereach server (--server)"


def dialback_copies(ports: Sequence[PortSpec]) -> int:
    """Copies of each TCP port's dial-back request (each is one independent SYN series from the server, so one
    lost packet does not decide): two while all of the run's requests fit the service's per-address in-flight
    cap, else one (a request beyond the cap is refused as busy)."""
    tcp = sum(1 for p in ports if p.transport == "tcp")
    return 2 if len(ports) + tcp <= MAX_IN_FLIGHT_PER_ADDRESS else 1


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
                                         on_answer=ctx.rtt.record_answer)
    return PortPaths(tuple(paths))


def _path_deadline(ctx: Context, sent: float) -> float:
    """Re-read by the probes: follows the loss estimate, never past the run's end."""
    return max(sent + 0.1, min(ctx.budget.end - 0.05, sent + ctx.rtt.negative_wait()))


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
        new = await dialback.probe(host, http_port, spec.port, spec.transport, family=family,
                                   server_wait=partial(_server_wait, ctx),
                                   http_timeout=left - 0.02, copies=copies if spec.transport == "tcp" else 1,
                                   listen=listen)
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
