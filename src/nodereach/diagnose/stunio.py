"""The check's view of STUN: nodereach.stun.client asking paced questions, failures as values.

What the diagnosis needs beyond a plain client: every socket of a run on one RTT and loss estimate, each
request a question asked as paced tries (PacedTries: stun.transaction.Question), deadlines re-read as the
estimate improves, replies kept with their source whatever it is (classification judges the source), an
error response as a reply (`reply.error`), a reply or None instead of exceptions, a RESPONSE-PORT answer
routed to another socket of the run (binding lifetime), and the Binding requests that arrive unsolicited
(hairpinning). The schedule and the reply rules are nodereach.stun.transaction; the reply type is its
BindingReply; STUN over TCP is stun.client.tcp_binding.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from nodereach import net
from nodereach.net import SockAddr
from nodereach.stun import client as stun_client
from nodereach.stun import message as M
from nodereach.stun.client import StunClient
from nodereach.stun.errors import StunConnectionError, StunError, StunParseError, StunTimeout
from nodereach.stun.message import StunMessage
from nodereach.stun.rtt import SharedRtt
from nodereach.stun.transaction import BindingErrorResponse, BindingReply, PacedTries


class StunSocket:
    """One UDP socket of a run; `request()` asks one question on it, many may run at once."""

    def __init__(self, rtt: SharedRtt, family: socket.AddressFamily = socket.AF_INET,
                 bind: SockAddr | None = None) -> None:
        local = bind or (net.wildcard(6 if family == socket.AF_INET6 else 4), 0)
        self.client = StunClient(local=local, retransmit=PacedTries(rtt), on_unsolicited=self._unsolicited)
        self.requests_seen: dict[bytes, SockAddr] = {}
        """Binding requests that reached this socket unasked (hairpinning), by transaction id."""
        self.request_event = asyncio.Event()
        """Set whenever `requests_seen` gets an entry."""

    async def open(self) -> StunSocket:
        try:
            await self.client.open()
        except StunError as exc:
            raise (exc.__cause__ if isinstance(exc.__cause__, OSError) else OSError(str(exc))) from None
        return self

    @property
    def local(self) -> SockAddr:
        return self.client.local_address

    @property
    def garbage(self) -> dict[SockAddr, int]:
        """Malformed datagrams per source address (a "server" that answers garbage)."""
        return self.client.stats.malformed_from

    def close(self) -> None:
        self.client.abort()

    def send_raw(self, data: bytes, dest: SockAddr) -> None:
        self.client.send_raw(data, dest)

    def _unsolicited(self, msg: StunMessage, addr: SockAddr) -> None:
        if msg.cls == M.REQUEST and msg.method == M.BINDING:
            self.requests_seen[msg.transaction_id] = addr
            self.request_event.set()

    async def request(self, dest: SockAddr, *, deadline: Callable[[], float], change_ip: bool = False,
                      change_port: bool = False, response_port: int | None = None,
                      reply_via: StunSocket | None = None, transaction_id: bytes | None = None
                      ) -> BindingReply | None:
        """A Binding request to `dest`, asked as paced tries until a reply (from any source, which the caller
        judges; an error response too) or `deadline()` (time.monotonic(), re-read after every wait); None if
        none came. response_port + reply_via: the answer goes to that other socket (RFC 5780 RESPONSE-PORT)."""
        try:
            return await self.client.binding(dest, change_ip=change_ip, change_port=change_port,
                                             response_port=response_port, deadline=deadline, any_source=True,
                                             reply_via=None if reply_via is None else reply_via.client,
                                             transaction_id=transaction_id)
        except BindingErrorResponse as exc:
            return exc.reply
        except StunError:  # timeout, closed, unsendable
            return None


async def tcp_binding(dest: SockAddr, *, deadline: float) -> tuple[BindingReply | None, str | None]:
    """STUN over TCP (nodereach.stun.client.tcp_binding): proves outbound TCP and gives the TCP mapping;
    (reply, None), an error response included, or (None, why not, as the report says it)."""
    try:
        return await stun_client.tcp_binding(dest, deadline=deadline), None
    except BindingErrorResponse as exc:
        return exc.reply, None
    except StunTimeout:
        return None, "timeout"
    except StunConnectionError as exc:
        return None, exc.reason
    except StunParseError:
        return None, "garbage reply (not STUN)"
    except StunError as exc:
        return None, exc.message
