"""Protocol proofs: the dial-back service speaks the first exchange of the node's own protocol.

A TCP handshake proves a port open; a node's own answer proves the *node* behind it takes peers, and for UDP
(discv4 PONG, discv5 WHOAREYOU) it is the only way to see that datagrams reach a node that ignores
nodereach's token. The exchanges are the sans-IO ones of `nodereach.p2p`; this module does the I/O with the
same rules as the plain probes (reach.prober): only the (host, port) it is given, a deadline, and never more
on-wire bytes than `budget` (the request that caused the proof), counted with IP and TCP/UDP headers.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
import typing
from dataclasses import dataclass
from typing import Any

from nodereach.p2p import bitcoin, bittorrent, discv4, discv5, levin, multistream
from nodereach.p2p.exchange import (
    TRANSPORT,
    Answer,
    DatagramExchange,
    ProofProtocol,
    ProtocolCheck,
    StreamExchange,
)
from nodereach.reach.prober import (
    TCP_SEGMENT_OVERHEAD,
    TCP_SYN_BYTES,
    Attempt,
    Decider,
    OverBudget,
    ProbeOutcome,
    datagram_bytes,
    first_connection,
    ip_extra,
    reason_for,
    send_datagrams,
    syn_bytes,
    syn_deadline,
    syns,
    tcp_tries,
)

PROTOCOL_TIMEOUT: dict[ProofProtocol, float] = {
    "bitcoin": 5.0, "monero": 5.0, "libp2p": 3.0, "bittorrent": 5.0, "discv4": 3.0, "discv5": 3.0}
"""Upper bound per protocol, connection and answer together. Nodes answer these at once (measured:
monerod 1 ms, transmission-daemon and js-libp2p a few ms on a LAN); the bound leaves room for a loaded node
and a long path, and the request's own timeout may be shorter."""
MSS = 1448
RECEIVE_ACKS = 2
"""ACK segments reserved for the peer's answer (it fits one or two segments; delayed ACKs halve the count)."""
UDP_SENDS = (0.0, 0.25, 0.5)
"""When a UDP proof's datagram goes out, as fractions of its deadline: resent at T/4 and T/2 (a lost datagram
does not decide), as many as the budget pays for; the last wait runs to the deadline."""


@dataclass(frozen=True, slots=True)
class ProofSpec:
    """What the request told us the proof needs (validated by the service)."""

    protocol: ProofProtocol
    magic: bytes | None = None
    network: str | None = None
    infohash: bytes | None = None
    node_id: bytes | None = None


def exchange_for(spec: ProofSpec, host: str, port: int) -> StreamExchange | DatagramExchange:
    """The sans-IO exchange that speaks `spec.protocol` to host:port."""
    if spec.protocol == "bitcoin":
        magic = spec.magic or bitcoin.NETWORKS["main"]
        return bitcoin.VersionExchange(magic, nonce=secrets.randbits(64), timestamp=int(time.time()),
                                       receiver=(host, port), network=spec.network)
    if spec.protocol == "monero":
        return levin.PingExchange()
    if spec.protocol == "libp2p":
        return multistream.HeaderExchange()
    if spec.protocol == "bittorrent":
        if spec.infohash is None:
            raise ValueError("a BitTorrent proof needs the infohash of a torrent the node serves")
        return bittorrent.HandshakeExchange(spec.infohash)
    if spec.protocol == "discv4":
        return discv4.PingExchange(discv4.NodeEndpoint(host, port, 0), now=time.time(), node_id=spec.node_id)
    if spec.node_id is None:
        raise ValueError("a discv5 proof needs the node id (from the node's ENR)")
    return discv5.WhoareyouExchange(spec.node_id)


def tcp_cost(request_len: int, ipv6: bool, n_syns: int = 1) -> int:
    """On-wire bytes a TCP proof may send: SYNs, ACK, the request segment, ACKs of the answer, FIN, last ACK."""
    extra = ip_extra(ipv6)
    seg = TCP_SEGMENT_OVERHEAD + extra
    return n_syns * (TCP_SYN_BYTES + extra) + seg + (seg + request_len) + RECEIVE_ACKS * seg + 2 * seg


def min_request_bytes(spec: ProofSpec, ipv6: bool = False) -> int:
    """The smallest request (on-wire) that pays for one try of this proof: clients pad up to it."""
    ex = exchange_for(spec, "2001:db8::1" if ipv6 else "192.0.2.1", 1)
    if TRANSPORT[spec.protocol] == "tcp":
        return tcp_cost(len(ex.request()), ipv6)
    return datagram_bytes(len(ex.request()), ipv6)


async def prove(spec: ProofSpec, host: str, port: int, *, source: str | None, timeout: float,  # noqa: ASYNC109
                budget: int, connect_timeout: float | None = None) -> tuple[ProbeOutcome, ProtocolCheck]:
    """`connect_timeout` (TCP): the connection's own deadline, within `timeout` (the whole exchange's)."""
    timeout = min(timeout, PROTOCOL_TIMEOUT[spec.protocol])
    exchange = exchange_for(spec, host, port)
    if TRANSPORT[spec.protocol] == "tcp":
        return await prove_tcp(typing.cast(StreamExchange, exchange), host, port, source=source, timeout=timeout,
                               budget=budget, connect_timeout=connect_timeout)
    return await prove_udp(typing.cast(DatagramExchange, exchange), host, port, source=source, timeout=timeout,
                           budget=budget)


def _too_small(protocol: ProofProtocol, need: int, budget: int, source: str | None) -> tuple[ProbeOutcome,
                                                                                             ProtocolCheck]:
    detail = (f"the request ({budget} bytes on the wire) is smaller than what this proof sends ({need} bytes); "
              "pad the request (the `pad` field)")
    return ProbeOutcome(None, "error", source=source), ProtocolCheck(protocol, False, detail)


async def prove_tcp(exchange: StreamExchange, host: str, port: int, *, source: str | None,
                    timeout: float, budget: int,  # noqa: ASYNC109
                    connect_timeout: float | None = None) -> tuple[ProbeOutcome, ProtocolCheck]:
    """Connect as the plain TCP probe does (fresh SYNs on reach.prober.SCHEDULE over `connect_timeout`, as
    many as the budget pays for, the first answer decides), send the exchange's request, feed the answer to it
    until it decides, the peer closes, or `timeout` (from the first SYN) passes.

    Why the same tries as the path test: a proof that cannot connect answers the path question too, as surely
    (one lost SYN does not decide), so the client needs no second request to learn that the port is closed.
    Why a connection deadline of its own: the time for the node's answer is needed only once connected; a
    closed port is known as early as the path test knows it."""
    loop = asyncio.get_running_loop()
    request = exchange.request()
    ipv6 = ":" in host
    extra = ip_extra(ipv6)
    connected = tcp_cost(len(request), ipv6) - (TCP_SYN_BYTES + extra)
    span = min(timeout, connect_timeout if connect_timeout is not None else timeout)
    span = syn_deadline(span, lambda t: tcp_tries(t, budget, ipv6, connected) > 0)
    if tcp_tries(span, budget, ipv6, connected) == 0:
        return _too_small(exchange.protocol, tcp_cost(len(request), ipv6, syns(span)), budget, source)
    tries = tcp_tries(span, budget, ipv6, connected)
    timeout = max(timeout, span)
    attempts: list[Attempt] = []
    try:
        winner, reason, at = await first_connection(host, port, source, span, tries, attempts)
        syn_sent = syn_bytes(attempts, at, extra)
        if winner is None or reason != "ok":
            if reason == "error" and not attempts:
                return ProbeOutcome(None, "error", source=source), ProtocolCheck(
                    exchange.protocol, False, "cannot open a socket")
            # A RST or ICMP error came back: its delay is a round trip too (a timeout has none).
            rtt_ms = (at - winner.started) * 1000 if winner is not None else None
            outcome = ProbeOutcome(None if reason == "error" else False, reason, rtt_ms=rtt_ms, source=source,
                                   bytes_sent=syn_sent)
            return outcome, ProtocolCheck(exchange.protocol, False, f"no TCP connection ({reason})")
        for other in attempts:  # the others stop now (their SYNs are counted above)
            if other is not winner:
                other.sock.close()
        sock = winner.sock
        rtt = at - winner.started
        src = sock.getsockname()[0]
        seg = TCP_SEGMENT_OVERHEAD + extra
        outcome = ProbeOutcome(True, "ok", rtt_ms=rtt * 1000, source=src, bytes_sent=syn_sent + seg + 2 * seg)
        deadline = attempts[0].started + timeout
        sent_at = time.monotonic()
        received = 0
        answer: Answer | None = None
        try:
            async with asyncio.timeout(max(0.0, deadline - sent_at)):
                await loop.sock_sendall(sock, request)
                outcome.bytes_sent += seg + len(request)
                while answer is None:
                    data = await loop.sock_recv(sock, min(4096, exchange.max_reply - received + 1))
                    if not data:
                        answer = exchange.closed()
                        break
                    received += len(data)
                    answer = exchange.feed(data)
                    if answer is None and received > exchange.max_reply:
                        answer = Answer(False, f"{received} bytes without an answer")
        except TimeoutError:
            answer = Answer(False, f"no answer within {timeout:.1f} s after connecting")
        except OSError as exc:
            answer = Answer(False, f"connection {reason_for(exc)} before an answer")
        # Our kernel ACKs what arrived (about one ACK per two full segments; at least one).
        outcome.bytes_sent += min(RECEIVE_ACKS, max(1 if received else 0, math.ceil(received / (2 * MSS)))) * seg
        rtt_ms = (time.monotonic() - sent_at) * 1000 if answer.ok else None
        return outcome, ProtocolCheck(exchange.protocol, answer.ok, answer.detail, rtt_ms)
    finally:
        for attempt in attempts:
            attempt.sock.close()


class _Datagrams(Decider[Answer]):
    def __init__(self, exchange: DatagramExchange) -> None:
        super().__init__()
        self.exchange = exchange
        self.received = 0

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self.done.done() or self.received >= 16:
            return  # a node may ping back or ask for our record: a few unrelated packets are ignored
        self.received += 1
        answer = self.exchange.feed(data)
        if answer is not None:
            self.decide(answer)


async def prove_udp(exchange: DatagramExchange, host: str, port: int, *, source: str | None,
                    timeout: float, budget: int) -> tuple[ProbeOutcome, ProtocolCheck]:  # noqa: ASYNC109
    """Send the exchange's datagram (resent within the deadline and the budget); its answer decides."""
    datagrams = _Datagrams(exchange)
    try:
        outcome = await send_datagrams(host, port, exchange.request(), datagrams, source=source, timeout=timeout,
                                       budget=budget, at=UDP_SENDS)
    except OverBudget as over:
        return _too_small(exchange.protocol, over.need, budget, source)
    except OSError as exc:
        return ProbeOutcome(None, reason_for(exc), source=source), ProtocolCheck(
            exchange.protocol, False, f"cannot send: {exc.strerror}")
    answer = datagrams.answer if outcome.reachable else None  # not one that came after the deadline
    if answer is not None:
        # Any answer in the node's protocol proves the datagrams arrive, even a malformed one.
        return outcome, ProtocolCheck(exchange.protocol, answer.ok, answer.detail,
                                      outcome.rtt_ms if answer.ok else None)
    if outcome.reason == "timeout":
        return outcome, ProtocolCheck(exchange.protocol, False, exchange.silence())
    return outcome, ProtocolCheck(exchange.protocol, False, f"the port is closed ({outcome.reason}: ICMP error)")


__all__ = ["PROTOCOL_TIMEOUT", "ProofSpec", "ProtocolCheck", "exchange_for", "min_request_bytes", "prove"]
