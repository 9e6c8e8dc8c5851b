"""The check's view of STUN: nodereach.stun.client in shared-RTT mode, errors as values.

The diagnosis needs, beyond a plain client: one RTT and loss estimate across all its sockets (SharedRtt via
SharedRttRetransmit, so negative answers cost a few RTTs and as many tries as the measured loss requires),
deadlines that tighten as the RTT becomes known, replies kept with their source address (classification
decides which source is acceptable), a reply or None instead of exceptions (an error response is a reply
with `error` set), and the Binding requests and answers that arrive unsolicited (hairpinning, binding
lifetime). StunSocket adapts StunClient to that; the transaction and retransmission logic is
nodereach.stun.transaction, the one TCP helper nodereach.stun.client.tcp_binding.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from nodereach.stun import client as stun_client
from nodereach.stun import message as M
from nodereach.stun.client import StunClient
from nodereach.stun.errors import (
    StunConnectionError,
    StunError,
    StunErrorResponse,
    StunParseError,
    StunTimeout,
)
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
from nodereach.stun.transaction import BindingReply, SharedRttRetransmit

Addr = tuple[str, int]
Reply = BindingReply
"""The one STUN reply type (the check's modules still import it by this name)."""


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
        self.client = StunClient(local=self.bind, retransmit=SharedRttRetransmit(rtt),
                                 on_unsolicited=self._unsolicited)
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
        return self.client._transport  # still read by the check (is the socket open?)

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
        self.client.send_raw(data, dest)

    async def request(self, dest: Addr, *, deadline: Callable[[], float], change_ip: bool = False,
                      change_port: bool = False, response_port: int | None = None,
                      transaction_id: bytes | None = None) -> BindingReply | None:
        """A Binding transaction to `dest` until a reply (from any source, which the caller judges) or
        `deadline()` (time.monotonic(), re-read after every wait); None if nothing usable came."""
        try:
            return await self.client.binding(dest, change_ip=change_ip, change_port=change_port,
                                             response_port=response_port, deadline=deadline, any_source=True,
                                             transaction_id=transaction_id)
        except StunErrorResponse as exc:
            return exc.reply
        except StunError:  # timeout, closed, unsendable
            return None


async def tcp_binding(dest: Addr, *, deadline: float) -> tuple[BindingReply | None, str | None]:
    """One Binding request over TCP (nodereach.stun.client.tcp_binding): proves outbound TCP and gives the
    TCP mapping; (reply, None) or (None, why not)."""
    try:
        return await stun_client.tcp_binding(dest, deadline=deadline), None
    except StunErrorResponse as exc:
        return exc.reply, None
    except StunTimeout:
        return None, "timeout"
    except StunConnectionError as exc:
        return None, exc.reason
    except StunParseError:
        return None, "garbage reply (not STUN)"
    except StunError as exc:
        return None, exc.message
