"""UDP binding lifetime (RFC 5780 §4.6), all candidate intervals in parallel, bounded by --lifetime-max.

For each interval w: socket X makes a binding to the server; after w seconds socket Y asks the server
(RESPONSE-PORT = X's public port) to answer to X's public endpoint. If X still receives it, the binding
outlived w. Every interval runs at once, so the whole test takes about --lifetime-max, not their sum.
"""

from __future__ import annotations

import asyncio
import time

from nodereach.diagnose.budget import Context
from nodereach.diagnose.observations import LifetimeObservation
from nodereach.diagnose.stunio import StunSocket
from nodereach.net import SockAddr
from nodereach.stun.rtt import SharedRtt

CANDIDATES = (2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200, 1800, 3600)


def intervals(lifetime_max: float) -> list[float]:
    out = [float(w) for w in CANDIDATES if w < lifetime_max]
    out.append(float(lifetime_max))
    return out


async def _one(server: SockAddr, wait: float, rtt: SharedRtt) -> bool | None:
    """True: binding alive after `wait`; False: gone; None: could not test (no mapping, server refused, or an
    answer from another address than the server's: set aside, never trusted)."""
    x = await StunSocket(rtt).open()
    y = await StunSocket(rtt).open()
    try:
        t0 = time.monotonic()
        first = await x.request(server, deadline=lambda: t0 + rtt.negative_wait(5))
        if first is None or first.mapped is None or first.source != server:
            return None
        await asyncio.sleep(wait)
        # Y asks, X's public port receives (RFC 5780 RESPONSE-PORT): one question, its answer routed to X.
        t1 = time.monotonic()
        answer = await y.request(server, deadline=lambda: t1 + rtt.negative_wait(5), response_port=first.mapped[1],
                                 reply_via=x)
        if answer is None:
            return False
        return True if answer.source == server and answer.error is None else None
    finally:
        x.close()
        y.close()


async def measure(server: SockAddr, lifetime_max: float, rtt: SharedRtt) -> tuple[float | None, str]:
    """(lifetime lower bound in seconds, explanation)."""
    waits = intervals(lifetime_max)
    results = await asyncio.gather(*(_one(server, w, rtt) for w in waits))
    tested = [(w, r) for w, r in zip(waits, results, strict=True) if r is not None]
    if not tested:
        return None, "could not create a binding to measure (no reply from the server)"
    alive = [w for w, r in tested if r]
    dead = [w for w, r in tested if r is False]
    if not alive:
        return 0.0, f"binding gone after {min(dead):g} s already"
    best = max(alive)
    later_dead = [w for w in dead if w > best]
    if not later_dead:
        return best, f"binding still alive after {best:g} s (the longest interval tested, --lifetime-max)"
    return best, f"binding alive after {best:g} s, gone after {min(later_dead):g} s"


async def probe(server: SockAddr, lifetime_max: float, ctx: Context) -> LifetimeObservation:
    """The binding lifetime toward `server` once an RTT is known (its deadlines derive from it)."""
    await ctx.first_rtt()
    value, why = await measure(server, lifetime_max, ctx.rtt)
    return LifetimeObservation(value, why)
