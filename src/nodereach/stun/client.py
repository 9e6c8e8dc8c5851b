"""asyncio STUN client: many concurrent Binding transactions over one UDP socket, or one over TCP.

    async with StunClient(local=("0.0.0.0", 0)) as c:          # or StunClient(sock=the_nodes_socket)
        r = await c.binding(("203.0.113.10", 3478))           # BindingResult
        r.mapped, r.other_address, r.response_origin, r.rtt, r.legacy, r.source
        # RFC 5780 tests: the reply is accepted only from the server's OTHER-ADDRESS ip/port combination
        r2 = await c.binding(("203.0.113.10", 3478), change_ip=True, change_port=True, timeout=1.0)
    r3 = await tcp_binding(("203.0.113.10", 3478), local=("0.0.0.0", 30303))

Errors: StunTimeout (no acceptable reply after all retransmissions or past `timeout`), StunErrorResponse
(the server sent ERROR-CODE), StunError (bad use, e.g. a change request before OTHER-ADDRESS is known).

Why the rules: replies are demultiplexed by transaction id and accepted only from the address the request
went to (or the expected alternate address), because a stray or spoofed reply would corrupt a NAT
classification. Retransmission follows RFC 8489 (RTO 500 ms doubling, Rc=7 sends, last wait Rm=16 x RTO);
with `Retransmit(adaptive=True)` the RTO of a server comes from its measured RTT (RFC 6298 SRTT/RTTVAR,
Karn's rule: only replies to first transmissions are sampled), so a diagnosis on a fast path finishes in
tens of milliseconds instead of waiting out fixed seconds.

A caller-provided socket (the node's own port, or one created in another network namespace and handed
over) is dup()ed: closing the client leaves the caller's socket open, but it is left non-blocking.

For a diagnosis (nodereach check) three options change the driver: `shared_rtt=SharedRtt()` (one RTT and
loss estimate across all sockets of a run; retransmission every RTO growing 1.3x until `deadline()`, a
callable re-read after every wait so it tightens as the RTT becomes known), `binding(any_source=True)`
(the reply is returned with the address it came from; the caller judges it), and `on_unsolicited` (Binding
requests and answers no transaction waits for: hairpinning, RESPONSE-PORT tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nodereach.stun import attributes as A
from nodereach.stun.errors import StunError, StunErrorResponse, StunParseError, StunTimeout
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
from nodereach.stun.rtt import BACKOFF, SharedRtt

Address = A.Address


@dataclass(frozen=True)
class Retransmit:
    """RFC 8489 section 6.2.1 timers; adaptive=True derives the RTO from measured RTT once known."""

    rto: float = 0.5
    rc: int = 7
    rm: int = 16
    adaptive: bool = False
    adaptive_rc: int = 4
    adaptive_rm: int = 4
    min_rto: float = 0.05
    max_rto: float = 3.0


@dataclass(frozen=True)
class BindingResult:
    """One answered Binding transaction."""

    mapped: Address | None
    """XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS from an RFC 3489 server): where the server saw us."""
    other_address: Address | None
    """OTHER-ADDRESS / CHANGED-ADDRESS: present only if the server runs RFC 5780 (3489) tests."""
    response_origin: Address | None
    source: Address
    """Address the reply actually came from."""
    local: Address
    rtt: float
    """Seconds from the last transmission to the reply."""
    attempts: int
    legacy: bool
    """The server answered without XOR-MAPPED-ADDRESS (an RFC 3489 server)."""
    software: str | None
    message: StunMessage = field(repr=False)


@dataclass
class ClientStats:
    sent: int = 0
    stray: int = 0
    """Datagrams matching no pending transaction, or from an address the transaction does not accept."""
    malformed: int = 0
    malformed_from: dict[Address, int] = field(default_factory=dict)
    """Malformed datagrams per source (a "server" that answers garbage)."""
    refused: int = 0


class _RttEstimator:
    __slots__ = ("rttvar", "srtt")

    def __init__(self, sample: float) -> None:
        self.srtt = sample
        self.rttvar = sample / 2

    def update(self, sample: float) -> None:
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - sample)
        self.srtt = 0.875 * self.srtt + 0.125 * sample

    def rto(self, policy: Retransmit) -> float:
        return min(max(self.srtt + 4 * self.rttvar, policy.min_rto), policy.max_rto)


class _Pending:
    __slots__ = ("accept", "error_from", "future")

    def __init__(self, future: asyncio.Future[tuple[StunMessage, Address, float]], accept: frozenset[Address] | None,
                 error_from: Address) -> None:
        self.future = future
        self.accept = accept
        self.error_from = error_from  # error responses (e.g. 420 to a CHANGE-REQUEST) come from where we sent


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
                 retransmit: Retransmit | None = None, software: str | None = None,
                 shared_rtt: SharedRtt | None = None,
                 on_unsolicited: Callable[[StunMessage, Address], None] | None = None) -> None:
        if sock is not None and local is not None:
            raise StunError("give either sock or local, not both")
        self.shared_rtt = shared_rtt
        self.on_unsolicited = on_unsolicited
        self._given_sock = sock
        self._local_req = local or ("0.0.0.0", 0)
        self.retransmit = retransmit or Retransmit()
        self.software = software
        self.stats = ClientStats()
        self._pending: dict[bytes, _Pending] = {}
        self._rtt: dict[str, _RttEstimator] = {}
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

    def learned_other_address(self, server: Address) -> Address | None:
        """OTHER-ADDRESS a server advertised in an earlier reply to this client."""
        return self._other.get(server)

    def current_rto(self, server_ip: str) -> float:
        est = self._rtt.get(server_ip)
        if self.retransmit.adaptive and est is not None:
            return est.rto(self.retransmit)
        return self.retransmit.rto

    async def binding(self, server: Address, *, change_ip: bool = False, change_port: bool = False,
                      response_port: int | None = None, padding: int = 0, timeout: float | None = None,  # noqa: ASYNC109
                      other: Address | None = None, reply_via: StunClient | None = None,
                      legacy: bool = False, deadline: Callable[[], float] | None = None,
                      any_source: bool = False, transaction_id: bytes | None = None) -> BindingResult:
        """One Binding transaction.

        change_ip/change_port: RFC 5780 CHANGE-REQUEST; the reply is then accepted only from the server's
        OTHER-ADDRESS ip and/or port (`other`, or learned from an earlier reply of this server).
        response_port: RFC 5780 RESPONSE-PORT; pass reply_via=<client bound to that port> to receive it.
        timeout: overall cap in seconds on top of the retransmission schedule. legacy: RFC 3489 request.
        deadline: with shared_rtt, a time.monotonic() deadline re-read after every wait (default: time for
        as many tries as the measured loss requires). any_source: accept the reply from any address (it is
        in `source`; a CHANGE-REQUEST then needs no known OTHER-ADDRESS).
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
        receiver = reply_via or self
        accept = None if any_source else frozenset({expect})
        if self.shared_rtt is not None:
            msg, source, rtt, attempts = await self._transact_shared(
                encode_message(req, fingerprint=True), req.key, dest, accept, deadline, timeout, receiver)
        else:
            msg, source, rtt, attempts = await self._transact(encode_message(req), req.key, dest, accept,
                                                              timeout, receiver)
        if msg.cls == ERROR:
            code, reason = msg.error_code or (0, "")
            raise StunErrorResponse(code, reason, msg.unknown_attributes, msg.alternate_server)
        other_address = msg.other_address
        if other_address is not None and not (change_ip or change_port):
            self._other[dest] = other_address
        return BindingResult(
            mapped=msg.mapped_address, other_address=other_address, response_origin=msg.response_origin,
            source=source, local=receiver.local_address, rtt=rtt, attempts=attempts,
            legacy=msg.xor_mapped_address is None, software=msg.software, message=msg)

    async def _resolve(self, server: Address) -> Address:
        host, port = server
        try:
            return (ipaddress.ip_address(host).compressed, port)
        except ValueError:
            pass
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port, family=self.family, type=socket.SOCK_DGRAM), 5.0)
        except (OSError, TimeoutError) as exc:
            raise StunError(f"cannot resolve STUN server {host!r}: {exc}") from exc
        if not infos:
            raise StunError(f"cannot resolve STUN server {host!r}")
        sa = infos[0][4]
        return (str(sa[0]), int(sa[1]))

    async def _transact_shared(self, data: bytes, key: bytes, dest: Address, accept: frozenset[Address] | None,
                               deadline: Callable[[], float] | None, limit: float | None,
                               receiver: StunClient) -> tuple[StunMessage, Address, float, int]:
        """Shared-RTT schedule: a send every RTO (growing BACKOFF x) until a reply or `deadline()`."""
        shared = self.shared_rtt
        assert shared is not None
        if key in receiver._pending:
            raise StunError("duplicate transaction id")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[StunMessage, Address, float]] = loop.create_future()
        receiver._pending[key] = _Pending(future, accept, dest)
        first_sent = time.monotonic()
        cap = first_sent + limit if limit is not None else float("inf")

        def end() -> float:
            return min(cap, deadline() if deadline is not None else first_sent + shared.negative_wait())

        attempts = 0
        sent_at = first_sent
        try:
            while True:
                if self._transport is None:
                    raise StunError("client closed")
                if attempts:
                    shared.retransmits += 1
                sent_at = time.monotonic()
                try:
                    self._transport.sendto(data, dest)
                except OSError as exc:
                    raise StunError(f"cannot send to {dest[0]}:{dest[1]}: {exc}") from exc
                self.stats.sent += 1
                next_send = sent_at + shared.rto * (BACKOFF ** attempts)
                attempts += 1
                while not future.done():
                    now = time.monotonic()
                    stop = end()
                    if now >= stop:
                        raise StunTimeout(f"no STUN reply from {dest[0]}:{dest[1]} after {attempts} attempts"
                                          f" ({now - first_sent:.2f}s)")
                    if now >= next_send:
                        break
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(min(next_send, stop) - now):
                            await asyncio.shield(future)
                if future.done():
                    msg, source, at = future.result()
                    break
        finally:
            receiver._pending.pop(key, None)
        rtt = max(at - sent_at, 0.0)  # the loop's clock is time.monotonic()
        shared.record_answer(attempts)
        if attempts == 1:  # Karn: a reply after a retransmission is ambiguous
            shared.add(rtt)
        else:
            shared.recovered += 1
        return msg, source, rtt, attempts

    async def _transact(self, data: bytes, key: bytes, dest: Address, accept: frozenset[Address] | None,
                        limit: float | None, receiver: StunClient) -> tuple[StunMessage, Address, float, int]:
        loop = asyncio.get_running_loop()
        if key in receiver._pending:
            raise StunError("duplicate transaction id")
        future: asyncio.Future[tuple[StunMessage, Address, float]] = loop.create_future()
        receiver._pending[key] = _Pending(future, accept, dest)
        policy = self.retransmit
        est = self._rtt.get(dest[0])
        adaptive = policy.adaptive and est is not None
        rto = self.current_rto(dest[0])
        rc, rm = (policy.adaptive_rc, policy.adaptive_rm) if adaptive else (policy.rc, policy.rm)
        deadline = loop.time() + limit if limit is not None else float("inf")
        attempts = 0
        wait = rto
        first_sent = sent_at = loop.time()
        try:
            while True:
                if self._transport is None:
                    raise StunError("client closed")
                sent_at = loop.time()
                self._transport.sendto(data, dest)
                self.stats.sent += 1
                attempts += 1
                last = attempts >= rc
                step = min(rto * rm if last else wait, deadline - sent_at)
                if step > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(future), step)
                if future.done():
                    msg, source, at = future.result()
                    break
                if last or loop.time() >= deadline:
                    raise StunTimeout(f"no STUN reply from {dest[0]}:{dest[1]} after {attempts} attempts"
                                      f" ({loop.time() - first_sent:.2f}s)")
                wait *= 2
        finally:
            receiver._pending.pop(key, None)
        rtt = max(at - sent_at, 0.0)
        if attempts == 1:  # Karn: a reply after a retransmission is ambiguous
            if est is None:
                self._rtt[dest[0]] = _RttEstimator(rtt)
            else:
                est.update(rtt)
        return msg, source, rtt, attempts

    def _malformed(self, addr: Address) -> None:
        self.stats.malformed += 1
        self.stats.malformed_from[addr] = self.stats.malformed_from.get(addr, 0) + 1

    def _on_datagram(self, data: bytes, addr: Address) -> None:
        if len(data) < HEADER_SIZE or data[0] & 0xC0:
            self._malformed(addr)
            return
        p = self._pending.get(data[4:20])
        if (p is None or p.future.done()) and self.on_unsolicited is not None:
            self._unsolicited(data, addr)
            return
        if p is None or p.future.done() or (p.accept is not None and addr not in p.accept and not (
                addr == p.error_from and data[0] & 0x01 and data[1] & 0x10)):
            self.stats.stray += 1
            return
        try:
            msg = parse_message(data)
        except StunParseError:
            self._malformed(addr)
            return
        if msg.check_fingerprint() is False:  # RFC 8489 7.3: a wrong FINGERPRINT means "not STUN"
            self._malformed(addr)
            return
        if msg.cls not in (SUCCESS, ERROR):
            self.stats.stray += 1
            return
        p.future.set_result((msg, addr, asyncio.get_running_loop().time()))

    def _unsolicited(self, data: bytes, addr: Address) -> None:
        """A datagram no transaction waits for: parsed (garbage is counted per source) and handed on."""
        self.stats.stray += 1
        try:
            msg = parse_message(data)
        except StunParseError:
            self._malformed(addr)
            return
        if self.on_unsolicited is not None:
            self.on_unsolicited(msg, addr)


async def tcp_binding(server: Address, *, local: Address | None = None, sock: socket.socket | None = None,
                      timeout: float = 5.0) -> BindingResult:  # noqa: ASYNC109
    """One Binding transaction over TCP (RFC 8489 framing; no retransmission, `timeout` bounds it all).

    local: bind this address first (SO_REUSEADDR+SO_REUSEPORT, so a node's own listening port can be used
    if the node's socket set SO_REUSEPORT too); sock: a caller's TCP socket, bound and not yet connected.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    host, port = server
    if sock is None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            if local is not None:
                sock.bind(local)
        except OSError as exc:
            sock.close()
            raise StunError(f"cannot bind TCP {local}: {exc}") from exc
    sock.setblocking(False)
    req = binding_request()
    writer: asyncio.StreamWriter | None = None
    try:
        t0 = loop.time()
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (host, port)), max(deadline - loop.time(), 0))
            reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(encode_message(req))
            decoder = StreamDecoder()
            while True:
                chunk = await asyncio.wait_for(reader.read(4096), max(deadline - loop.time(), 0))
                if not chunk:
                    raise StunError(f"STUN server {host}:{port} closed the TCP connection without a reply")
                for frame in decoder.feed(chunk):
                    msg = parse_message(frame)
                    if msg.key == req.key and msg.cls in (SUCCESS, ERROR):
                        rtt = loop.time() - t0
                        break
                else:
                    continue
                break
        except TimeoutError as exc:
            raise StunTimeout(f"no STUN reply over TCP from {host}:{port} within {timeout:.1f}s") from exc
        except OSError as exc:
            raise StunError(f"TCP to STUN server {host}:{port} failed: {exc}") from exc
        if msg.cls == ERROR:
            code, reason = msg.error_code or (0, "")
            raise StunErrorResponse(code, reason, msg.unknown_attributes, msg.alternate_server)
        name = sock.getsockname()
        peer = sock.getpeername()
        return BindingResult(mapped=msg.mapped_address, other_address=msg.other_address,
                             response_origin=msg.response_origin, source=(peer[0], peer[1]),
                             local=(name[0], name[1]), rtt=rtt, attempts=1,
                             legacy=msg.xor_mapped_address is None, software=msg.software, message=msg)
    finally:
        if writer is not None:
            writer.close()
        else:
            sock.close()
