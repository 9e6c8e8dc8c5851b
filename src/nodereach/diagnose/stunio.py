"""The check's view of STUN over UDP: nodereach.stun.client.StunClient in shared-RTT mode.

The diagnosis needs, beyond a plain client: one RTT and loss estimate across all its sockets (SharedRtt, so
negative answers cost a few RTTs and as many tries as the measured loss requires), deadlines that tighten as
the RTT becomes known, replies kept with their source address (classification decides which source is
acceptable), a reply or None instead of exceptions, and the Binding requests and answers that arrive
unsolicited (hairpinning, binding lifetime). StunSocket adapts StunClient to that; the transaction and
retransmission logic lives in the client only.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from nodereach.stun import message as M
from nodereach.stun.client import StunClient
from nodereach.stun.errors import StunError, StunErrorResponse, StunParseError
from nodereach.stun.framing import StreamDecoder
from nodereach.stun.message import StunMessage
from nodereach.stun.rtt import (  # noqa: F401  (re-exported for the check)
    BACKOFF,
    INITIAL_RTO,
    MAX_TRIES,
    MIN_RTO,
    MIN_TRIES,
    MISS_TARGET,
    SharedRtt,
    tries_for_loss,
    wait_for_tries,
)

Addr = tuple[str, int]


@dataclass
class Reply:
    source: Addr
    mapped: Addr | None
    other_address: Addr | None
    response_origin: Addr | None
    error: tuple[int, str] | None
    rtt: float
    retransmitted: bool


class SocketStats:
    """Per-socket counters the conclusions read (garbage per source address)."""

    def __init__(self, client: StunClient) -> None:
        self._client = client

    @property
    def garbage(self) -> dict[Addr, int]:
        return self._client.stats.malformed_from

    @property
    def stray(self) -> int:
        return self._client.stats.stray

    @property
    def refused(self) -> int:
        return self._client.stats.refused


class StunSocket:
    """One UDP socket; `request()` runs one transaction on it, many may run at once."""

    def __init__(self, rtt: SharedRtt, family: socket.AddressFamily = socket.AF_INET,
                 bind: Addr | None = None) -> None:
        self.rtt = rtt
        self.family = family
        self.bind = bind or (("::" if family == socket.AF_INET6 else "0.0.0.0"), 0)
        self.client = StunClient(local=self.bind, shared_rtt=rtt, on_unsolicited=self._unsolicited)
        self.stats = SocketStats(self.client)
        self.requests_seen: dict[bytes, Addr] = {}
        self.responses_seen: dict[bytes, Addr] = {}
        self.request_event = asyncio.Event()

    async def open(self) -> StunSocket:
        try:
            await self.client.open()
        except StunError as exc:
            raise (exc.__cause__ if isinstance(exc.__cause__, OSError) else OSError(str(exc))) from None
        return self

    @property
    def transport(self) -> asyncio.DatagramTransport | None:
        return self.client._transport

    @property
    def local(self) -> Addr:
        return self.client.local_address

    def close(self) -> None:
        self.client.abort()

    def _unsolicited(self, msg: StunMessage, addr: Addr) -> None:
        if msg.cls == M.REQUEST and msg.method == M.BINDING:
            self.requests_seen[msg.transaction_id] = addr
            self.request_event.set()
        elif msg.cls == M.SUCCESS:
            self.responses_seen[msg.transaction_id] = addr  # e.g. a RESPONSE-PORT answer (lifetime test)
            self.request_event.set()

    def send_raw(self, data: bytes, dest: Addr) -> None:
        if self.transport is not None:
            self.transport.sendto(data, dest)

    async def request(self, dest: Addr, *, deadline: Callable[[], float], change_ip: bool = False,
                      change_port: bool = False, response_port: int | None = None,
                      transaction_id: bytes | None = None) -> Reply | None:
        """A Binding transaction to `dest` until a reply (from any source, which the caller judges) or
        `deadline()` (time.monotonic(), re-read after every wait); None if nothing usable came."""
        try:
            r = await self.client.binding(dest, change_ip=change_ip, change_port=change_port,
                                          response_port=response_port, deadline=deadline, any_source=True,
                                          transaction_id=transaction_id)
        except StunErrorResponse as exc:
            return Reply(source=dest, mapped=None, other_address=None, response_origin=None,
                         error=(exc.code, exc.reason), rtt=0.0, retransmitted=False)
        except StunError:  # timeout, closed, unsendable, or a reply whose attributes do not parse
            return None
        return Reply(source=r.source, mapped=r.mapped, other_address=r.other_address,
                     response_origin=r.response_origin, error=None, rtt=r.rtt, retransmitted=r.attempts > 1)


async def tcp_binding(dest: Addr, *, deadline: float) -> tuple[Reply | None, str | None]:
    """One Binding request over TCP (RFC 8489 framing): proves outbound TCP and gives the TCP mapping."""
    start = time.monotonic()
    timeout = deadline - start
    if timeout <= 0:
        return None, "no time left"
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(dest[0], dest[1])
            connected = time.monotonic()
            msg = M.binding_request()
            writer.write(M.encode_message(msg, fingerprint=True))
            decoder = StreamDecoder()
            while True:
                chunk = await reader.read(4096)
                if not chunk:
                    return None, "connection closed without a STUN reply"
                for raw in decoder.feed(chunk):
                    reply = M.parse_message(raw)
                    if reply.transaction_id == msg.transaction_id and reply.cls in (M.SUCCESS, M.ERROR):
                        return Reply(source=dest, mapped=reply.mapped_address, other_address=reply.other_address,
                                     response_origin=reply.response_origin, error=reply.error_code,
                                     rtt=connected - start, retransmitted=False), None
                if decoder.pending > 4096:
                    return None, "oversized reply"
    except TimeoutError:
        return None, "timeout"
    except ConnectionRefusedError:
        return None, "refused"
    except StunParseError:
        return None, "garbage reply (not STUN)"
    except OSError as exc:
        return None, exc.strerror or str(exc)
    finally:
        if writer is not None:
            writer.close()
