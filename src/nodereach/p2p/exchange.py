"""The shape every "first exchange" of a node protocol has, so one driver runs them all (reach.proofs).

An exchange is sans-IO: it gives the bytes to send first and judges what comes back. Stream exchanges
(TCP) are fed bytes as they arrive; datagram exchanges (UDP) are fed whole datagrams. Each one decides as
soon as it can: `Answer(ok=True, ...)` when the peer answered as the protocol's node would, `Answer(ok=False,
...)` when it answered something else, None while it needs more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from nodereach.net import Transport

ProofProtocol = Literal["bitcoin", "monero", "libp2p", "bittorrent", "discv4", "discv5"]
PROOF_PROTOCOLS: tuple[ProofProtocol, ...] = ("bitcoin", "monero", "libp2p", "bittorrent", "discv4", "discv5")
TRANSPORT: dict[ProofProtocol, Transport] = {
    "bitcoin": "tcp", "monero": "tcp", "libp2p": "tcp", "bittorrent": "tcp", "discv4": "udp", "discv5": "udp"}


@dataclass(frozen=True, slots=True)
class Answer:
    ok: bool
    detail: str
    """What the peer said, for a person: "version 70016 /Satoshi:27.0.0/ height 840000"."""


@dataclass(frozen=True, slots=True)
class ProtocolCheck:
    """The outcome of a protocol proof as the dial-back API reports it (`protocol_check`)."""

    protocol: ProofProtocol
    ok: bool
    detail: str
    rtt_ms: float | None = None
    """From sending the first message to the node's answer (None without an answer)."""


class StreamExchange(Protocol):
    protocol: ProofProtocol

    def request(self) -> bytes:
        """The bytes to send right after the TCP handshake."""
        ...

    def feed(self, data: bytes) -> Answer | None:
        """More bytes from the peer; never raises (a malformed answer is `Answer(ok=False)`)."""
        ...

    def closed(self) -> Answer:
        """The peer closed the connection before an answer was complete."""
        ...

    @property
    def max_reply(self) -> int:
        """Bytes the exchange reads at most before deciding (bounds the driver's buffer)."""
        ...


class DatagramExchange(Protocol):
    protocol: ProofProtocol

    def request(self) -> bytes:
        """The datagram to send (resending the same bytes is safe)."""
        ...

    def feed(self, datagram: bytes) -> Answer | None:
        """One datagram from the peer: an answer, or None to keep waiting (unrelated packets are ignored)."""
        ...

    def silence(self) -> str:
        """What no answer means, for a person."""
        ...
