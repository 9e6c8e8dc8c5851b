"""Connection guard for the HTTP server: slow and greedy clients cannot hold the server.

aiohttp has no deadline for reading request headers (slowloris) and no per-address connection cap, so every
accepted connection is wrapped in a protocol that forwards to aiohttp's handler and:
- closes a connection whose request head is not complete within `head_timeout` (each request on it),
- closes any connection older than `max_age`,
- refuses connections beyond `max_connections` in total or `max_per_address` from one address.
"""

from __future__ import annotations

import asyncio
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HEAD_END = b"\r\n\r\n"
MAX_HEAD = 16 * 1024


@dataclass
class GuardStats:
    open: int = 0
    accepted: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: {"slow": 0, "idle": 0, "too-many": 0,
                                                              "too-many-address": 0, "max-age": 0,
                                                              "oversized-head": 0})


class ConnectionGuard:
    def __init__(self, *, head_timeout: float = 5.0, max_age: float = 60.0, max_connections: int = 2048,
                 max_per_address: int = 32, exempt: Callable[[str], bool] | None = None) -> None:
        self.head_timeout = head_timeout
        self.max_age = max_age
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.exempt = exempt or (lambda peer: False)
        """Peers without the per-address cap: trusted reverse proxies carry many clients' connections."""
        self.stats = GuardStats()
        self.per_address: dict[str, int] = {}
        self.connections: set[GuardedProtocol] = set()
        self.by_transport: dict[asyncio.BaseTransport, GuardedProtocol] = {}

    def factory(self, inner_factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: GuardedProtocol(self, inner_factory())

    def close_idle(self) -> None:
        """On shutdown: close connections that are not in the middle of a request."""
        for conn in list(self.connections):
            if conn.idle:
                conn.abort("max-age", count=False)


class GuardedProtocol(asyncio.Protocol):
    """Forwards every protocol event to aiohttp's RequestHandler; enforces the guard's deadlines."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner: Any = inner
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self._head = bytearray()
        self._head_bytes = 0
        self._in_head = True
        self._timer: asyncio.TimerHandle | None = None
        self._age_timer: asyncio.TimerHandle | None = None
        self._registered = False
        self.idle = True

    # --- life cycle ----------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but have its methods
        transport = self.transport = typing.cast(asyncio.Transport, transport)
        g = self.guard
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        if len(g.connections) >= g.max_connections:
            g.stats.dropped["too-many"] += 1
            transport.abort()
            return
        if g.per_address.get(self.peer, 0) >= g.max_per_address and not g.exempt(self.peer):
            g.stats.dropped["too-many-address"] += 1
            transport.abort()
            return
        self._registered = True
        g.connections.add(self)
        g.by_transport[transport] = self
        g.per_address[self.peer] = g.per_address.get(self.peer, 0) + 1
        g.stats.open = len(g.connections)
        g.stats.accepted += 1
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(g.head_timeout, self._head_deadline)
        self._age_timer = loop.call_later(g.max_age, self.abort, "max-age")
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        for t in (self._timer, self._age_timer):
            if t is not None:
                t.cancel()
        if not self._registered:
            return
        self._registered = False
        g = self.guard
        g.connections.discard(self)
        if self.transport is not None:
            g.by_transport.pop(self.transport, None)
        n = g.per_address.get(self.peer, 1) - 1
        if n > 0:
            g.per_address[self.peer] = n
        else:
            g.per_address.pop(self.peer, None)
        g.stats.open = len(g.connections)
        self.inner.connection_lost(exc)

    def _head_deadline(self) -> None:
        """No complete request head in time: `slow` if some of it came, `idle` (keep-alive unused) if none."""
        self.abort("slow" if self._head_bytes else "idle")

    def abort(self, reason: str, count: bool = True) -> None:
        if count:
            self.guard.stats.dropped[reason] += 1
        if self.transport is not None:
            self.transport.abort()

    # --- data ----------------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if not self._registered:
            return
        self.idle = False
        if self._in_head:
            self._head += data
            self._head_bytes += len(data)
            end = self._head.find(HEAD_END)
            if end >= 0:
                # Head complete; the body is bounded by aiohttp's client_max_size and the handler's deadline.
                self._in_head = False
                self._head_bytes = 0
                del self._head[:]
                if self._timer is not None:
                    self._timer.cancel()
            elif self._head_bytes > MAX_HEAD:
                self.abort("oversized-head")
                return
            else:
                # Keep only the tail that could still complete HEAD_END.
                del self._head[: max(0, len(self._head) - len(HEAD_END))]
        self.inner.data_received(data)

    def response_sent(self) -> None:
        """Next request on a keep-alive connection: its head gets a fresh deadline."""
        self._in_head = True
        self.idle = True
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self.guard.head_timeout, self._head_deadline)

    def eof_received(self) -> bool | None:
        keep_open: bool | None = self.inner.eof_received()
        return keep_open

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()
