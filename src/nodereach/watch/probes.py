"""The cheap probe: one STUN Binding per due server and address family, in parallel, bounded in time.

One long-lived UDP socket per family (no new NAT mapping per probe, no per-probe setup); a server name is
resolved again every RESOLVE_EVERY_S or after it failed. A family the host has no route for is skipped
without a packet (a UDP connect() asks the routing table only), so a host without IPv6 never counts an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from dataclasses import dataclass, field

from nodereach.net import Endpoint, Family, ResolveError, family_of, resolve, socket_family, wildcard
from nodereach.stun.client import StunClient
from nodereach.stun.errors import StunError, StunTimeout
from nodereach.stun.transaction import Rfc8489Retransmit
from nodereach.watch.model import StunAnswer

RETRANSMIT = Rfc8489Retransmit(rto=0.5, rc=3, rm=4)
"""Three sends (0, 0.5 s, 1.5 s), the last waited for 2 s: one lost packet never fails a probe."""
PROBE_TIMEOUT_S = 4.0
RESOLVE_EVERY_S = 600.0
RESOLVE_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class ServerAddr:
    host: str
    port: int

    @property
    def label(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(slots=True)
class _Resolved:
    addresses: list[str] = field(default_factory=list)
    at: float = -1e18
    error: str | None = None


class StunProber:
    def __init__(self, servers: list[ServerAddr], *, timeout: float = PROBE_TIMEOUT_S,
                 retransmit: Rfc8489Retransmit = RETRANSMIT, families: tuple[Family, ...] = (4, 6)) -> None:
        self.servers = {s.label: s for s in servers}
        self.timeout = timeout
        self.retransmit = retransmit
        self.families = families
        self._clients: dict[Family, StunClient] = {}
        self._resolved: dict[str, _Resolved] = {}
        self.sent = 0
        """Binding requests sent, retransmissions included (for the cost benchmark)."""

    async def probe(self, names: list[str]) -> tuple[StunAnswer, ...]:
        jobs = []
        for name in names:
            server = self.servers.get(name)
            if server is None:
                continue
            res = await self._addresses(server)
            if res.error is not None:
                jobs.append(_now(_failed(name, 4, res.error)))
                continue
            targets = _per_family(res.addresses, self.families)
            routed = {fam: addr for fam, addr in targets.items() if _has_route(addr)}
            if not routed:
                jobs.append(_now(_failed(name, next(iter(targets), 4), "no route to the server")))
                continue
            jobs += [self._ask(name, fam, addr, server.port) for fam, addr in sorted(routed.items())]
        if not jobs:
            return ()
        return tuple(await asyncio.gather(*jobs))

    async def _addresses(self, server: ServerAddr) -> _Resolved:
        res = self._resolved.setdefault(server.label, _Resolved())
        now = time.monotonic()
        if res.addresses and res.error is None and now - res.at < RESOLVE_EVERY_S:
            return res
        try:
            addresses = await resolve(server.host, server.port, timeout=RESOLVE_TIMEOUT_S)
        except ResolveError as exc:
            if res.addresses:  # keep using the last good answer while DNS is down
                return _Resolved(res.addresses, res.at)
            self._resolved[server.label] = _Resolved(error=str(exc), at=now)
            return self._resolved[server.label]
        self._resolved[server.label] = _Resolved(addresses, now)
        return self._resolved[server.label]

    async def _client(self, fam: Family) -> StunClient:
        client = self._clients.get(fam)
        if client is None:
            client = await StunClient(local=(wildcard(fam), 0), retransmit=self.retransmit).open()
            self._clients[fam] = client
        return client

    async def _ask(self, name: str, fam: Family, address: str, port: int) -> StunAnswer:
        try:
            client = await self._client(fam)
            before = client.stats.sent
            try:
                result = await client.binding((address, port), timeout=self.timeout)
            finally:
                self.sent += client.stats.sent - before
        except StunTimeout:
            return _failed(name, fam, "timeout")
        except StunError as exc:
            self._drop(fam)  # a broken socket is replaced at the next probe
            self._resolved.pop(name, None)
            return _failed(name, fam, exc.message)
        except OSError as exc:
            self._drop(fam)
            return _failed(name, fam, str(exc))
        mapped = Endpoint.of(result.mapped) if result.mapped is not None else None
        if mapped is None:
            return _failed(name, fam, "answer without a mapped address")
        return StunAnswer(name, fam, mapped, None, round(result.rtt, 4))

    def _drop(self, fam: Family) -> None:
        client = self._clients.pop(fam, None)
        if client is not None:
            client.abort()

    async def close(self) -> None:
        for fam in list(self._clients):
            self._drop(fam)


def _failed(name: str, fam: Family, why: str) -> StunAnswer:
    return StunAnswer(name, fam, None, why)


async def _now(answer: StunAnswer) -> StunAnswer:
    return answer


def _per_family(addresses: list[str], families: tuple[Family, ...]) -> dict[Family, str]:
    out: dict[Family, str] = {}
    for a in addresses:
        fam = family_of(a)
        if fam in families:
            out.setdefault(fam, a)
    return out


def _has_route(address: str) -> bool:
    """Does the routing table have a way to `address`? (connect() on UDP sends nothing.)"""
    fam = family_of(address)
    with contextlib.suppress(OSError), socket.socket(socket_family(fam), socket.SOCK_DGRAM) as s:
        s.connect((address, 9))
        return True
    return False
