"""asyncio STUN client: many concurrent Binding transactions over one UDP socket, or one over TCP.

    async with StunClient(local=("0.0.0.0", 0)) as c:          # or StunClient(sock=the_nodes_socket)
        r = await c.binding(("203.0.113.10", 3478))           # BindingReply
        r.mapped, r.other_address, r.response_origin, r.rtt, r.legacy, r.source, r.attempts
        # RFC 5780 tests: the reply is accepted only from the server's OTHER-ADDRESS ip/port combination
        r2 = await c.binding(("203.0.113.10", 3478), change_ip=True, change_port=True, timeout=1.0)
    r3 = await tcp_binding(("203.0.113.10", 3478), local=("0.0.0.0", 30303))

Errors: StunTimeout (no acceptable reply after all retransmissions or past the deadline),
BindingErrorResponse (a StunErrorResponse: the server sent an error response; `exc.reply` is that answer as
a BindingReply with `error` set, for a caller that keeps error responses as values), StunError (bad use,
e.g. a change request before OTHER-ADDRESS is known; a closed client).

This module only does I/O and bookkeeping: the schedules and the reply rules are the state machines in
nodereach.stun.transaction, which StunClient drives (one coroutine per request, one loop for both kinds; a
datagram is handed to the exchange whose id it carries, every id it sent being registered). The policy
chooses the machine: `Rfc8489Retransmit` by default, a `BindingTransaction` (RFC 8489: RTO 500 ms doubling,
Rc = 7 sends, last wait Rm = 16 x RTO; adaptive=True learns each server's RTO), or `PacedTries(SharedRtt())`
for a diagnosis, a `Question` (one RTT and loss estimate for all sockets; a first try, after an RTO more
tries half an RTT apart, each with a fresh transaction id, as many as the measured loss asks for, until
`deadline()`, a callable re-read after every wait).

A caller-provided socket (the node's own port, or one created in another network namespace and handed
over) is dup()ed: closing the client leaves the caller's socket open, but it is left non-blocking.
`on_unsolicited` receives the Binding requests and answers no transaction waits for (hairpinning,
RESPONSE-PORT tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nodereach import net
from nodereach.stun import attributes as A
from nodereach.stun.errors import StunConnectionError, StunError, StunParseError, StunTimeout
from nodereach.stun.framing import StreamDecoder
from nodereach.stun.message import (
    ERROR,
    HEADER_SIZE,
    SUCCESS,
    StunMessage,
    binding_request,
    encode_message,
    parse_message,
)
from nodereach.stun.rtt import PerServerRtt
from nodereach.stun.transaction import (
    BindingReply,
    BindingTransaction,
    GiveUp,
    Ignored,
    PacedTries,
    Question,
    Rfc8489Retransmit,
    Transmit,
    Wait,
)

Address = A.Address
RetransmitPolicy = Rfc8489Retransmit | PacedTries
"""How a request is asked again (nodereach.stun.transaction)."""
Exchange = BindingTransaction | Question
"""The state machine of one request, as the policy chose it."""


@dataclass
class ClientStats:
    sent: int = 0
    stray: int = 0
    """Datagrams matching no pending transaction, or that a transaction did not accept (wrong source...)."""
    malformed: int = 0
    malformed_from: dict[Address, int] = field(default_factory=dict)
    """Malformed datagrams (or wrong FINGERPRINT) per source: a "server" that answers garbage."""
    refused: int = 0


class _Pending:
    __slots__ = ("future", "txn")

    def __init__(self, txn: Exchange, future: asyncio.Future[BindingReply]) -> None:
        self.txn = txn
        self.future = future


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, client: StunClient) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.client._on_datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        # ICMP unreachable etc.: the transaction simply times out (what a NAT test must observe)
        self.client.stats.refused += 1


class StunClient:
    """Binding transactions over one UDP socket (see module docstring)."""

    def __init__(self, *, sock: socket.socket | None = None, local: Address | None = None,
                 retransmit: RetransmitPolicy | None = None, software: str | None = None,
                 on_unsolicited: Callable[[StunMessage, Address], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """clock: the time base of every schedule and deadline (time.monotonic, the asyncio loop's clock)."""
        if sock is not None and local is not None:
            raise StunError("give either sock or local, not both")
        self.retransmit: RetransmitPolicy = retransmit or Rfc8489Retransmit()
        self.on_unsolicited = on_unsolicited
        self.software = software
        self.clock = clock
        self.stats = ClientStats()
        self.server_rtt = PerServerRtt()
        """RFC 8489 adaptive mode's estimates, per server IP."""
        self._given_sock = sock
        self._local_req = local or ("0.0.0.0", 0)
        self._pending: dict[bytes, _Pending] = {}
        self._other: dict[Address, Address] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self.local_address: Address = ("", 0)
        self.family = socket.AF_INET

    async def open(self) -> StunClient:
        if self._given_sock is not None:
            if self._given_sock.type != socket.SOCK_DGRAM:
                raise StunError("StunClient needs a UDP socket; use tcp_binding() for TCP")
            sock = self._given_sock.dup()
        else:
            host = self._local_req[0]
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
            try:
                if sock.family == socket.AF_INET6:
                    # IPv6 only: a `[::]:port` socket must not take the IPv4 port too (the check binds a node's
                    # port over both families at once).
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                net.prefer_stable_source(sock)
                sock.bind(self._local_req)
            except OSError as exc:
                sock.close()
                raise StunError(f"cannot bind UDP {self._local_req[0]}:{self._local_req[1]}: {exc}") from exc
        sock.setblocking(False)
        self.family = sock.family
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
        self._transport = transport
        name = sock.getsockname()
        self.local_address = (name[0], name[1])
        return self

    async def close(self) -> None:
        self.abort()

    def abort(self) -> None:
        """close() without awaiting (from synchronous cleanup code)."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for p in self._pending.values():
            if not p.future.done():
                p.future.set_exception(StunError("client closed"))

    async def __aenter__(self) -> StunClient:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def is_open(self) -> bool:
        return self._transport is not None

    def send_raw(self, data: bytes, dest: Address) -> None:
        """One datagram outside any transaction (hairpinning, RESPONSE-PORT probes); dropped if closed."""
        if self._transport is not None:
            self._transport.sendto(data, dest)
            self.stats.sent += 1

    def learned_other_address(self, server: Address) -> Address | None:
        """OTHER-ADDRESS a server advertised in an earlier reply to this client."""
        return self._other.get(server)

    def current_rto(self, server_ip: str) -> float:
        """The first RTO a transaction to this server would use."""
        if isinstance(self.retransmit, PacedTries):
            return self.retransmit.rtt.rto
        return self.retransmit.current_rto(server_ip, self.server_rtt)

    async def binding(self, server: Address, *, change_ip: bool = False, change_port: bool = False,
                      response_port: int | None = None, padding: int = 0, timeout: float | None = None,  # noqa: ASYNC109
                      other: Address | None = None, reply_via: StunClient | None = None,
                      legacy: bool = False, deadline: Callable[[], float] | None = None,
                      any_source: bool = False, transaction_id: bytes | None = None) -> BindingReply:
        """One Binding request (a transaction, or a Question under PacedTries) and its (success) reply;
        BindingErrorResponse carries an error reply.

        change_ip/change_port: RFC 5780 CHANGE-REQUEST; the reply is then accepted only from the server's
        OTHER-ADDRESS ip and/or port (`other`, or learned from an earlier reply of this server).
        response_port: RFC 5780 RESPONSE-PORT; pass reply_via=<client bound to that port> to receive it.
        timeout: overall cap in seconds on top of the retransmission schedule. legacy: RFC 3489 request.
        deadline: a callable giving a `clock()` value, re-read after every wait (PacedTries: default is time
        for as many tries as the measured loss requires). transaction_id: the (first) request's.
        any_source: accept the reply from any address (it is in `source`, the caller judges it; a
        CHANGE-REQUEST then needs no known OTHER-ADDRESS).
        """
        if self._transport is None:
            raise StunError("client not open (use `async with StunClient(...)`)")
        dest = await self._resolve(server)
        if (":" in dest[0]) != (self.family == socket.AF_INET6):
            raise StunError(f"cannot reach {dest[0]} from an IPv{6 if self.family == socket.AF_INET6 else 4} "
                            "socket", "use a client bound to the server's address family")
        expect = dest
        if (change_ip or change_port) and not any_source:
            alt = other or self._other.get(dest)
            if alt is None:
                raise StunError(f"server {dest[0]}:{dest[1]} has no known OTHER-ADDRESS",
                                "send a plain binding request first (RFC 5780 test I)")
            expect = (alt[0] if change_ip else dest[0], alt[1] if change_port else dest[1])
        req = binding_request(change_ip=change_ip, change_port=change_port, response_port=response_port,
                              padding=padding, software=self.software, legacy=legacy, transaction_id=transaction_id)
        policy = self.retransmit
        receiver = reply_via or self
        accept = None if any_source else frozenset({expect})
        txn: Exchange
        if isinstance(policy, PacedTries):
            txn = Question(req, dest, rtt=policy.rtt, accept=accept, deadline=deadline, limit=timeout,
                           local=receiver.local_address)
        else:
            txn = BindingTransaction(encode_message(req), dest, timer=policy.timer(dest[0], self.server_rtt, deadline),
                                     accept=accept, limit=timeout, local=receiver.local_address)
        reply = await self._run(txn, receiver)
        if reply.other_address is not None and reply.error is None and not (change_ip or change_port):
            self._other[dest] = reply.other_address
        return reply.raise_for_error()

    async def _resolve(self, server: Address) -> Address:
        host, port = server
        try:  # an IP literal as given (a dual-stack socket speaks IPv4-mapped addresses)
            return (ipaddress.ip_address(host).compressed, port)
        except ValueError:
            pass
        try:
            ips = await net.resolve(host, port, family=6 if self.family == socket.AF_INET6 else 4)
        except net.ResolveError as exc:
            raise StunError(f"cannot resolve STUN server: {exc}") from exc
        return (ips[0], port)

    async def _run(self, txn: Exchange, receiver: StunClient) -> BindingReply:
        """Drive one exchange: send what it says (registering every transaction id it sends with the socket
        the answer comes to), sleep until it wants waking or its reply came."""
        future: asyncio.Future[BindingReply] = asyncio.get_running_loop().create_future()
        pending = _Pending(txn, future)
        keys: list[bytes] = []
        clock = self.clock
        try:
            event: Transmit | Wait | GiveUp = txn.start(clock())
            while True:
                if isinstance(event, GiveUp):
                    raise StunTimeout(event.reason)
                if isinstance(event, Transmit):
                    key = event.data[4:20]
                    if receiver._pending.get(key, pending) is not pending:
                        raise StunError("duplicate transaction id")
                    receiver._pending[key] = pending
                    keys.append(key)
                    self._send(event.data, event.dest)
                delay = event.wake_at - clock()
                if delay > 0 and not future.done():
                    await asyncio.wait((future,), timeout=None if math.isinf(delay) else delay)
                if future.done():
                    return future.result()
                event = txn.on_timer(clock())
        finally:
            for key in keys:
                if receiver._pending.get(key) is pending:
                    del receiver._pending[key]

    def _send(self, data: bytes, dest: Address) -> None:
        if self._transport is None:
            raise StunError("client closed")
        try:
            self._transport.sendto(data, dest)
        except OSError as exc:
            raise StunError(f"cannot send to {dest[0]}:{dest[1]}: {exc}") from exc
        self.stats.sent += 1

    def _malformed(self, addr: Address) -> None:
        self.stats.malformed += 1
        self.stats.malformed_from[addr] = self.stats.malformed_from.get(addr, 0) + 1

    def _on_datagram(self, data: bytes, addr: Address) -> None:
        if len(data) < HEADER_SIZE or data[0] & 0xC0:
            self._malformed(addr)
            return
        p = self._pending.get(data[4:20])
        if p is None or p.txn.finished:
            self._unsolicited(data, addr)
            return
        try:
            msg = parse_message(data)
        except StunParseError:
            self._malformed(addr)
            return
        result = p.txn.receive(msg, addr, self.clock())
        if isinstance(result, BindingReply):
            if not p.future.done():
                p.future.set_result(result)
        elif result is Ignored.BAD_FINGERPRINT:
            self._malformed(addr)
        else:
            self.stats.stray += 1

    def _unsolicited(self, data: bytes, addr: Address) -> None:
        """A datagram no transaction waits for: counted as stray; with a hook, parsed (garbage is counted per
        source) and handed on."""
        self.stats.stray += 1
        if self.on_unsolicited is None:
            return
        try:
            msg = parse_message(data)
        except StunParseError:
            self._malformed(addr)
            return
        self.on_unsolicited(msg, addr)


async def tcp_binding(server: Address, *, local: Address | None = None, sock: socket.socket | None = None,
                      timeout: float | None = None, deadline: float | None = None,  # noqa: ASYNC109
                      max_reply: int = 4096) -> BindingReply:
    """One Binding transaction over TCP (RFC 8489 framing; TCP retransmits, so one request).

    Bounded by `deadline` (a time.monotonic() value) and/or `timeout` seconds (5 s if neither is given).
    The reply's rtt is from the request to the reply on the established connection. local: bind this address
    first (SO_REUSEADDR + SO_REUSEPORT, so a node's own listening port can be used if the node's socket set
    SO_REUSEPORT too); sock: a caller's TCP socket, bound and not yet connected. A host name is resolved.
    Raises StunTimeout, BindingErrorResponse (with `.reply`), StunConnectionError (refused, reset, closed without
    a reply: `.reason`), StunParseError (the server sent bytes that are not STUN, or a reply over max_reply
    bytes), StunError (cannot bind, cannot resolve).
    """
    start = time.monotonic()
    end = min(start + timeout if timeout is not None else math.inf, deadline if deadline is not None else math.inf)
    if math.isinf(end):
        end = start + 5.0
    host, port = server
    if end <= start:
        raise StunTimeout(f"no time left for STUN over TCP to {host}:{port}")
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(end - start):
            if not _is_ip(host):
                try:
                    host = (await net.resolve(host, port, transport="tcp", timeout=end - start))[0]
                except net.ResolveError as exc:
                    raise StunError(f"cannot resolve STUN server: {exc}") from exc
            if sock is None:
                sock = _tcp_socket(host, local)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
            reader, writer = await asyncio.open_connection(sock=sock)
            req = binding_request()
            writer.write(encode_message(req, fingerprint=True))
            sent = time.monotonic()
            decoder = StreamDecoder(max_message=max_reply)
            while True:
                chunk = await reader.read(4096)
                if not chunk:
                    raise StunConnectionError(f"STUN server {host}:{port} closed the TCP connection without a reply",
                                              reason="connection closed without a STUN reply")
                for frame in decoder.feed(chunk):
                    msg = parse_message(frame)
                    if msg.key == req.key and msg.method == req.method and msg.cls in (SUCCESS, ERROR):
                        name, peer = sock.getsockname(), sock.getpeername()
                        rtt = time.monotonic() - sent
                        return BindingReply.of(msg, (peer[0], peer[1]), (name[0], name[1]), rtt, 1).raise_for_error()
    except TimeoutError as exc:
        raise StunTimeout(f"no STUN reply over TCP from {host}:{port} within {end - start:.1f}s") from exc
    except ConnectionRefusedError as exc:
        raise StunConnectionError(f"TCP to STUN server {host}:{port} refused", reason="refused") from exc
    except OSError as exc:
        raise StunConnectionError(f"TCP to STUN server {host}:{port} failed: {exc}",
                                  reason=exc.strerror or str(exc)) from exc
    finally:
        if writer is not None:
            writer.close()
        elif sock is not None:
            sock.close()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _tcp_socket(host: str, local: Address | None) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    net.prefer_stable_source(sock)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if local is not None:
        try:
            sock.bind(local)
        except OSError as exc:
            sock.close()
            raise StunError(f"cannot bind TCP {local[0]}:{local[1]}: {exc}") from exc
    return sock
