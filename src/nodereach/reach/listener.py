"""nodereach's own listener on a node's port while a dial-back runs: the proof that the probe reached this host.

When nothing listens on the port, the dial-back client listens there itself: a TCP server or a UDP socket
that answers the server's PROBE carrying our token with an ECHO (reach.codec). Bytes from the network are
decoded bounded (a stream decoder per connection, one datagram at a time); anything else is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import secrets
import socket
import typing
from typing import Any

from nodereach.net import Transport, prefer_stable_source
from nodereach.reach import codec

__all__ = ["EchoListener"]


class _TcpEcho(asyncio.Protocol):
    def __init__(self, owner: EchoListener) -> None:
        self.owner = owner
        self.decoder = codec.StreamDecoder()
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but have its methods
        self.transport = typing.cast(asyncio.Transport, transport)
        self.owner.connections += 1
        self.timer = asyncio.get_running_loop().call_later(2.0, self.transport.abort)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        try:
            messages = self.decoder.feed(data)
        except codec.DialbackCodecError:
            self.transport.abort()
            return
        for m in messages:
            if m.kind == codec.Kind.PROBE and m.token == self.owner.token:
                self.owner.mark_received()
                self.transport.write(codec.echo(m.token))
            self.transport.close()
            return

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()


class _UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, owner: EchoListener) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        """Done once the socket is closed (the transport closes it on a later loop iteration)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.DatagramTransport, transport)  # a datagram endpoint's transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            m = codec.decode(data)
        except codec.DialbackCodecError:
            return
        if m.kind == codec.Kind.PROBE and m.token == self.owner.token and self.transport is not None:
            self.owner.mark_received()
            self.transport.sendto(codec.echo(m.token), addr)


class EchoListener:
    """nodereach's temporary listener on the node's port; `open` returns False if the port is taken."""

    def __init__(self, protocol: Transport, host: str, port: int) -> None:
        self.protocol = protocol
        self.host = host
        self.port = port
        self.token = secrets.token_bytes(16)
        self.received = False
        """The server's PROBE with our token arrived (proof it reached this host)."""
        self.connections = 0
        """TCP connections accepted: the server's probe got through even if the token was lost."""
        self._close: Any = None
        self._udp: _UdpEcho | None = None

    def mark_received(self) -> None:
        self.received = True

    async def open(self) -> bool:
        loop = asyncio.get_running_loop()
        try:
            if self.protocol == "tcp":
                server = await loop.create_server(lambda: _TcpEcho(self), host=self.host, port=self.port,
                                                  reuse_address=True, backlog=16)
                self._close = server
            else:
                sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    if sock.family == socket.AF_INET6:
                        # `[::]:port` for IPv6 alone (asyncio's TCP server does the same): the check listens on
                        # a free node port over IPv4 and IPv6 at once, and a dual-stack socket would take both.
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    prefer_stable_source(sock)  # echoes leave from the address the server was told to dial
                    sock.bind((self.host, self.port))
                except OSError:
                    sock.close()
                    raise
                transport, self._udp = await loop.create_datagram_endpoint(lambda: _UdpEcho(self), sock=sock)
                self._close = transport
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
        return True

    async def close(self) -> None:
        """Close and wait (bounded) until the port is free again: a retry may bind it right away."""
        closer, self._close = self._close, None
        if closer is None:
            return
        closer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(0.5):
                if isinstance(closer, asyncio.AbstractServer):
                    await closer.wait_closed()
                elif self._udp is not None:
                    await self._udp.closed
