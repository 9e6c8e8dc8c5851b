"""Dial-back client: ask a nodereach server to reach this host on a port, from outside.

If nothing listens on the port, the client listens there itself for the duration (a TCP listener or a UDP
socket that answers the server's token probe with an echo), so the answer proves the probe reached *this*
host. If the node's own listener holds the port, the server's TCP handshake still tells; UDP is reported as
unknown unless the server saw a rejection, because nodereach cannot observe datagrams the node receives.
Network failures never raise: they come back as `reachable=None` with a reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from nodereach import defaults
from nodereach.errors import UsageError
from nodereach.reach import codec

Listener = Literal["nodereach", "node", "none"]


@dataclass(slots=True)
class ProbeResult:
    port: int
    protocol: str
    reachable: bool | None
    reason: str
    """ok | refused | timeout | reset | unreachable | other-host | udp-unobservable | no-server |
    rate-limited | refused-port | server-busy | server-error | local-error"""
    rtt_ms: float | None = None
    observed_address: str | None = None
    listener: Listener | None = None
    received: bool | None = None
    """Our own listener saw the server's token (None when we did not listen)."""
    server: str | None = None
    detail: str | None = None


def parse_server(server: str) -> tuple[str, int]:
    """'HOST', 'HOST:PORT', '[v6]:PORT', bare IPv6, optionally with http:// -> (host, http port)."""
    s = server.strip()
    for scheme in ("http://", "https://"):
        if s.lower().startswith(scheme):
            s = s[len(scheme):]
    s = s.rstrip("/")
    if not s:
        raise UsageError("empty server address", "use --server HOST or HOST:PORT")
    if s.startswith("["):
        host, sep, rest = s[1:].partition("]")
        if not sep:
            raise UsageError(f"bad server address {server!r}", "IPv6 with a port looks like [2001:db8::1]:3480")
        port_s = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise UsageError(f"bad server address {server!r}", "IPv6 with a port looks like [2001:db8::1]:3480")
    elif s.count(":") > 1:
        host, port_s = s, ""
    else:
        host, _, port_s = s.partition(":")
    if not host:
        raise UsageError(f"bad server address {server!r}", "use --server HOST or HOST:PORT")
    if not port_s:
        return host, defaults.HTTP_PORT
    try:
        port = int(port_s)
    except ValueError:
        raise UsageError(f"bad port in server address {server!r}", "use --server HOST:PORT") from None
    if not 1 <= port <= 65535:
        raise UsageError(f"port out of range in {server!r}", "ports are 1..65535")
    return host, port


def base_url(server: str) -> str:
    host, port = parse_server(server)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _TcpEcho(asyncio.Protocol):
    def __init__(self, owner: _Listener) -> None:
        self.owner = owner
        self.decoder = codec.StreamDecoder()
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        self.owner.connections += 1
        self.timer = asyncio.get_running_loop().call_later(2.0, transport.abort)

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
    def __init__(self, owner: _Listener) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            m = codec.decode(data)
        except codec.DialbackCodecError:
            return
        if m.kind == codec.Kind.PROBE and m.token == self.owner.token and self.transport is not None:
            self.owner.mark_received()
            self.transport.sendto(codec.echo(m.token), addr)


class _Listener:
    """nodereach's temporary listener on the node's port; `open` returns False if the port is taken."""

    def __init__(self, protocol: str, host: str, port: int) -> None:
        self.protocol = protocol
        self.host = host
        self.port = port
        self.token = secrets.token_bytes(16)
        self.received = False
        self.received_at: float | None = None
        self.connections = 0
        self._close: Any = None

    def mark_received(self) -> None:
        if not self.received:
            self.received = True
            self.received_at = time.monotonic()

    async def open(self) -> bool:
        loop = asyncio.get_running_loop()
        try:
            if self.protocol == "tcp":
                server = await loop.create_server(lambda: _TcpEcho(self), host=self.host, port=self.port,
                                                  reuse_address=True, backlog=16)
                self._close = server
            else:
                transport, _ = await loop.create_datagram_endpoint(lambda: _UdpEcho(self),
                                                                   local_addr=(self.host, self.port))
                self._close = transport
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
        return True

    async def close(self) -> None:
        if isinstance(self._close, asyncio.AbstractServer):
            self._close.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self._close.wait_closed()
        elif self._close is not None:
            self._close.close()
        self._close = None


async def _resolve(host: str, port: int, timeout: float) -> str | None:  # noqa: ASYNC109
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        async with asyncio.timeout(timeout):
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError):
        return None
    return str(infos[0][4][0]) if infos else None


def _bind_host(server_host: str, local_address: str | None) -> str:
    if local_address:
        return local_address
    try:
        return "::" if ipaddress.ip_address(server_host).version == 6 else "0.0.0.0"
    except ValueError:
        return "0.0.0.0"


async def probe_port(server: str, port: int, protocol: str, *, timeout: float, listen: bool = True,  # noqa: ASYNC109
                     local_address: str | None = None, session: aiohttp.ClientSession | None = None,
                     ) -> ProbeResult:
    """Ask `server` (HOST[:PORT], HTTP port default 3480) to reach this host's `port` over `protocol`."""
    protocol = protocol.lower()
    if protocol not in ("tcp", "udp"):
        raise UsageError(f"unknown protocol {protocol!r}", "use tcp or udp")
    if not 1 <= port <= 65535:
        raise UsageError(f"port {port} out of range", "ports are 1..65535")
    host, http_port = parse_server(server)
    # Resolve once: the listener must use the family the server will probe over (the request's family).
    started = time.monotonic()
    address = await _resolve(host, http_port, min(1.0, timeout / 3))
    if address is None:
        return ProbeResult(port, protocol, None, "no-server", server=server, detail=f"cannot resolve {host!r}")
    timeout = max(0.2, timeout - (time.monotonic() - started))
    url = (f"http://[{address}]:{http_port}" if ":" in address else f"http://{address}:{http_port}") + "/v1/probe"
    host = address
    listener: _Listener | None = None
    kind: Listener = "none"
    if listen:
        listener = _Listener(protocol, _bind_host(host, local_address), port)
        try:
            kind = "nodereach" if await listener.open() else "node"
        except OSError as exc:
            return ProbeResult(port, protocol, None, "local-error", server=server,
                               detail=f"cannot listen on {protocol} port {port}: {exc.strerror}")
        if kind == "node":
            listener = None
    body: dict[str, Any] = {"port": port, "protocol": protocol,
                            "timeout_ms": int(max(0.2, min(timeout * 0.7, timeout - 0.3)) * 1000)}
    if listener is not None:
        body["token"] = listener.token.hex()
    try:
        status, doc = await _post(url, body, timeout, session, local_address)
    finally:
        if listener is not None:
            await listener.close()
    result = ProbeResult(port, protocol, None, "server-error", listener=kind, server=server,
                         received=listener.received if listener is not None else None)
    if status is None:
        result.reason, result.detail = "no-server", str(doc.get("message"))
        return result
    if status != 200:
        code = str(doc.get("error", ""))
        result.detail = str(doc.get("message", f"HTTP {status}"))[:300]
        if status == 429:
            result.reason = "rate-limited"
        elif status == 403 and code == "refused-port":
            result.reason = "refused-port"
        elif status == 503:
            result.reason = "server-busy"
        return result
    if "reachable" not in doc or not isinstance(doc.get("reason"), str):
        result.detail = "the server's answer is not a nodereach dial-back answer"
        return result
    return _combine(result, doc, listener)


def _combine(result: ProbeResult, doc: dict[str, Any], listener: _Listener | None) -> ProbeResult:
    """Merge the server's view with what our own listener saw."""
    result.observed_address = doc.get("address") if isinstance(doc.get("address"), str) else None
    rtt = doc.get("rtt_ms")
    result.rtt_ms = float(rtt) if isinstance(rtt, int | float) else None
    server_reachable = doc.get("reachable")
    reason = str(doc.get("reason", "server-error"))[:40]
    verified = doc.get("verified") is True
    if listener is not None:
        if verified or listener.received:
            result.reachable, result.reason = True, "ok"
        elif server_reachable is True:
            # Something accepted the connection on our public address, but not our listener.
            result.reachable, result.reason = False, "other-host"
            result.detail = "a different host or device answered on this port (router service or other forward)"
        else:
            result.reachable = False
            result.reason = reason if reason not in ("no-echo", "unverified") else "timeout"
        return result
    if result.protocol == "tcp":
        result.reachable = server_reachable if isinstance(server_reachable, bool) else None
        result.reason = "ok" if server_reachable is True else reason
        return result
    if server_reachable is False:
        result.reachable, result.reason = False, reason
    else:
        result.reachable, result.reason = None, "udp-unobservable"
        result.detail = "the node holds this UDP port; nodereach cannot see whether the probe arrived"
    return result


async def _post(url: str, body: dict[str, Any], timeout: float, session: aiohttp.ClientSession | None,  # noqa: ASYNC109
                local_address: str | None) -> tuple[int | None, dict[str, Any]]:
    own = session is None
    if session is None:
        connector = aiohttp.TCPConnector(local_addr=(local_address, 0) if local_address else None,
                                         family=0, force_close=True)
        session = aiohttp.ClientSession(connector=connector)
    try:
        async with asyncio.timeout(timeout), session.post(url, json=body) as resp:
            try:
                doc = await resp.json(content_type=None)
            except (ValueError, aiohttp.ContentTypeError):
                doc = {}
            if not isinstance(doc, dict):
                doc = {}
            return resp.status, doc
    except TimeoutError:
        return None, {"message": f"no answer from {url} within {timeout:.1f} s"}
    except (aiohttp.ClientError, OSError) as exc:
        return None, {"message": f"{url}: {exc}"}
    finally:
        if own:
            await session.close()


async def server_info(server: str, *, timeout: float) -> dict[str, Any] | None:  # noqa: ASYNC109
    """GET /v1/info: what the server runs (STUN ports and RFC 5780 mode, dial-back). None if unreachable."""
    url = base_url(server) + "/v1/info"
    try:
        async with aiohttp.ClientSession() as session, asyncio.timeout(timeout), session.get(url) as resp:
            if resp.status != 200:
                return None
            doc = await resp.json(content_type=None)
            return doc if isinstance(doc, dict) else None
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
        return None


__all__ = ["ProbeResult", "base_url", "parse_server", "probe_port", "server_info"]
