"""STUN Binding exchanges as state machines without I/O (sans-IO, in the manner of h11).

    txn = BindingTransaction(request_bytes, dest, timer=Rfc8489Retransmit().timer(), accept=frozenset({dest}))
    event = txn.start(now)                 # Transmit(data, dest, wake_at, attempt)
    event = txn.on_timer(now)              # when woken: Transmit (resend), Wait(wake_at) or GiveUp(reason)
    result = txn.receive(msg, source, now) # a BindingReply (the transaction is done) or an Ignored reason

    q = Question(request_message, dest, rtt=shared_rtt, accept=None)   # the same three calls: a Transmit may
                                                                       # carry a fresh transaction id

The caller owns the socket and the clock: it sends what Transmit says, sleeps until `wake_at` or a datagram
with an id it sent arrives (`Transmit.data[4:20]`), and feeds either one back. Every time is a number the
caller passes, so the schedules and the reply rules are tested on an injected clock
(tests/test_stun_transaction.py); nodereach.stun.client.StunClient is the one asyncio driver of both.

Two ways to ask, chosen by the client's policy:
- `Rfc8489Retransmit` -> `BindingTransaction`: RFC 8489 6.2.1, one transaction id, retransmitted (RTO 500 ms
  doubling, Rc = 7 sends, last wait Rm x RTO); with adaptive=True the RTO of a server that answered before
  comes from its own RFC 6298 estimate (PerServerRtt). Karn's rule: only a reply to a first transmission is an
  RTT sample.
- `PacedTries` -> `Question`: the diagnosis schedule over one RTT/loss estimate shared by a whole run
  (SharedRtt): a first try; if an RTO passes unanswered, more tries half an RTT apart, each a transaction of
  its own with a fresh id and sent once (so an answer says which try it answers and is always an RTT sample),
  as many as the loss evidence asks for (SharedRtt.tries_for_negative, re-read), until a deadline (by default
  SharedRtt.negative_wait, re-read, so it follows the estimate). The first acceptable answer wins; the tries
  left unanswered for an RTO are booked as lost (evidence for the next negative answer).

Reply rules (why: a stray or spoofed reply would corrupt a NAT classification), one place for both: same
transaction id; a Binding success or error response; from an accepted source (the destination, or the
alternate address a CHANGE-REQUEST expects, or anywhere with accept=None), except that an error response is
also taken from the destination (a server refusing CHANGE-REQUEST answers from where the request went); a
FINGERPRINT, if present, must be right (RFC 8489 7.3).
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from nodereach.stun import attributes as A
from nodereach.stun.errors import StunError, StunErrorResponse
from nodereach.stun.message import BINDING, ERROR, SUCCESS, StunMessage, encode_message
from nodereach.stun.rtt import PerServerRtt, SharedRtt

Address = A.Address


@dataclass(frozen=True, slots=True)
class BindingReply:
    """The answer to one Binding transaction (UDP or TCP), success or error response."""

    source: Address
    """Address the reply actually came from."""
    mapped: Address | None
    """XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS from an RFC 3489 server): where the server saw us."""
    other_address: Address | None
    """OTHER-ADDRESS / CHANGED-ADDRESS: present only if the server runs RFC 5780 (3489) tests."""
    response_origin: Address | None
    rtt: float
    """Seconds from the last transmission of the request it answers to the reply (a Question's tries are sent
    once each: always an RTT sample there)."""
    error: tuple[int, str] | None = None
    """(code, reason) of an error response ((0, "") if it lacks ERROR-CODE), None for a success response."""
    attempts: int = 1
    """Requests sent: transmissions of one transaction (more than 1: loss, and no RTT sample), or tries of a
    Question."""
    lost: int = 0
    """A Question's tries that stayed unanswered for an RTO before this answer came (loss evidence)."""
    local: Address = ("", 0)
    """The local address the reply arrived at."""
    legacy: bool = False
    """A success response without XOR-MAPPED-ADDRESS (an RFC 3489 server)."""
    software: str | None = None
    message: StunMessage | None = field(default=None, repr=False, compare=False)
    """The message as received (None for a reply built by hand, as the check's table tests do)."""

    @classmethod
    def of(cls, msg: StunMessage, source: Address, local: Address, rtt: float, attempts: int) -> BindingReply:
        error = (msg.error_code or (0, "")) if msg.cls == ERROR else None
        return cls(source=source, mapped=msg.mapped_address, other_address=msg.other_address,
                   response_origin=msg.response_origin, rtt=rtt, error=error, attempts=attempts, local=local,
                   legacy=error is None and msg.xor_mapped_address is None, software=msg.software, message=msg)

    def raise_for_error(self) -> BindingReply:
        """This reply, or BindingErrorResponse if the server answered with an error."""
        if self.error is not None:
            raise BindingErrorResponse(self)
        return self


class BindingErrorResponse(StunErrorResponse):
    """An error response to a Binding request: StunErrorResponse (code, reason, UNKNOWN-ATTRIBUTES,
    ALTERNATE-SERVER) that also carries the answer as a value, for a caller that keeps error responses."""

    def __init__(self, reply: BindingReply) -> None:
        code, reason = reply.error or (0, "")
        msg = reply.message
        super().__init__(code, reason, msg.unknown_attributes if msg else (), msg.alternate_server if msg else None)
        self.reply = reply


# --- events ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Transmit:
    """Send `data` to `dest` now; then wake at `wake_at` unless a reply came."""

    data: bytes
    dest: Address
    wake_at: float
    attempt: int
    """1 for the first transmission."""


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to send yet (woken early, or the deadline moved): wake at `wake_at`."""

    wake_at: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    """No acceptable reply in time: the transaction failed."""

    reason: str
    attempts: int


class Ignored(enum.Enum):
    """Why a received message did not complete the transaction."""

    FINISHED = "the transaction is already answered or given up"
    OTHER_TRANSACTION = "another transaction id"
    NOT_A_RESPONSE = "not a Binding success or error response"
    WRONG_SOURCE = "from an address this transaction does not accept"
    BAD_FINGERPRINT = "FINGERPRINT does not match (RFC 8489 7.3: not STUN)"


# --- retransmission schedules --------------------------------------------------------------------------------
class Timer(Protocol):
    """One transaction's retransmission schedule (made by a policy's timer())."""

    def sent(self, now: float) -> float | None:
        """A transmission went out at `now`: when the next is due, or None if that was the last."""

    def give_up_at(self) -> float:
        """When silence becomes a timeout; re-read at every wake (the deadline may move)."""

    def answered(self, attempts: int, rtt: float) -> None:
        """The transaction got its reply after `attempts` sends, `rtt` after the last (Karn's rule applies)."""


@dataclass(frozen=True)
class Rfc8489Retransmit:
    """RFC 8489 section 6.2.1 timers; adaptive=True derives a server's RTO from its measured RTT once known."""

    rto: float = 0.5
    rc: int = 7
    rm: int = 16
    adaptive: bool = False
    adaptive_rc: int = 4
    adaptive_rm: int = 4
    min_rto: float = 0.05
    max_rto: float = 3.0

    def _learned(self, server: str, per_server: PerServerRtt | None) -> float | None:
        if not self.adaptive or per_server is None:
            return None
        return per_server.rto(server, self.min_rto, self.max_rto)

    def current_rto(self, server: str, per_server: PerServerRtt | None) -> float:
        """The first RTO a transaction to `server` would use."""
        learned = self._learned(server, per_server)
        return self.rto if learned is None else learned

    def timer(self, server: str = "", per_server: PerServerRtt | None = None,
              deadline: Callable[[], float] | None = None) -> Rfc8489Timer:
        """per_server: the client's estimates (sampled on answers, read in adaptive mode); deadline: an
        extra bound, re-read at every wake."""
        learned = self._learned(server, per_server)
        if learned is None:
            return Rfc8489Timer(self.rto, self.rc, self.rm, server, per_server, deadline)
        return Rfc8489Timer(learned, self.adaptive_rc, self.adaptive_rm, server, per_server, deadline)


class Rfc8489Timer:
    """Sends at 0, RTO, 3 RTO, 7 RTO, ... (the interval doubles), Rc sends, then Rm x RTO for the last reply."""

    __slots__ = ("_deadline", "_end", "_per_server", "_sends", "_server", "_wait", "rc", "rm", "rto")

    def __init__(self, rto: float, rc: int, rm: int, server: str, per_server: PerServerRtt | None,
                 deadline: Callable[[], float] | None) -> None:
        self.rto, self.rc, self.rm = rto, rc, rm
        self._server, self._per_server, self._deadline = server, per_server, deadline
        self._sends = 0
        self._wait = rto
        self._end = math.inf

    def sent(self, now: float) -> float | None:
        self._sends += 1
        if self._sends >= self.rc:
            self._end = now + self.rm * self.rto
            return None
        due = now + self._wait
        self._wait *= 2
        return due

    def give_up_at(self) -> float:
        return self._end if self._deadline is None else min(self._end, self._deadline())

    def answered(self, attempts: int, rtt: float) -> None:
        if attempts == 1 and self._per_server is not None:  # Karn: a reply after a resend is ambiguous
            self._per_server.sample(self._server, rtt)


# --- the transaction -----------------------------------------------------------------------------------------
class State(enum.Enum):
    NEW = "new"
    WAITING = "waiting"
    ANSWERED = "answered"
    FAILED = "failed"


class BindingTransaction:
    """One Binding request to one destination: retransmissions, reply acceptance, RTT (module docstring)."""

    __slots__ = ("_cap", "_first_sent", "_last_sent", "_next_send", "accept", "attempts", "data", "dest", "key",
                 "limit", "local", "reply", "state", "timer")

    def __init__(self, data: bytes, dest: Address, *, timer: Timer, accept: frozenset[Address] | None,
                 limit: float | None = None, local: Address = ("", 0)) -> None:
        """data: the encoded request; accept: sources whose replies count (None: any, the caller judges);
        limit: an overall cap in seconds from start(); local: reported in the reply."""
        if len(data) < 20:
            raise StunError("a STUN request has at least 20 bytes")
        self.data = data
        self.key = data[4:20]
        """Cookie + transaction id (or the RFC 3489 128-bit id): what replies are matched on."""
        self.dest = dest
        self.timer = timer
        self.accept = accept
        self.limit = limit
        self.local = local
        self.state = State.NEW
        self.attempts = 0
        self.reply: BindingReply | None = None
        self._cap = math.inf
        self._first_sent = self._last_sent = 0.0
        self._next_send: float | None = None

    @property
    def finished(self) -> bool:
        return self.state in (State.ANSWERED, State.FAILED)

    def start(self, now: float) -> Transmit:
        if self.state is not State.NEW:
            raise StunError("transaction already started")
        self.state = State.WAITING
        self._first_sent = now
        if self.limit is not None:
            self._cap = now + self.limit
        return self._transmit(now)

    def _transmit(self, now: float) -> Transmit:
        self.attempts += 1
        self._last_sent = now
        self._next_send = self.timer.sent(now)
        return Transmit(self.data, self.dest, self._wake(), self.attempts)

    def _give_up_at(self) -> float:
        return min(self._cap, self.timer.give_up_at())

    def _wake(self) -> float:
        due = math.inf if self._next_send is None else self._next_send
        return min(due, self._give_up_at())

    def on_timer(self, now: float) -> Transmit | Wait | GiveUp:
        """Woken without a reply: resend, wait on, or give up."""
        if self.state is not State.WAITING:
            raise StunError(f"transaction is {self.state.value}, not waiting")
        if now >= self._give_up_at():
            self.state = State.FAILED
            return GiveUp(f"no STUN reply from {self.dest[0]}:{self.dest[1]} after {self.attempts} attempts "
                          f"({now - self._first_sent:.2f}s)", self.attempts)
        if self._next_send is not None and now >= self._next_send:
            return self._transmit(now)
        return Wait(self._wake())

    def receive(self, msg: StunMessage, source: Address, now: float) -> BindingReply | Ignored:
        """A parsed message carrying this transaction's id arrived from `source` at `now`."""
        if self.state is not State.WAITING:
            return Ignored.FINISHED
        if msg.key != self.key:
            return Ignored.OTHER_TRANSACTION
        if msg.method != BINDING or msg.cls not in (SUCCESS, ERROR):
            return Ignored.NOT_A_RESPONSE
        if self.accept is not None and source not in self.accept and not (msg.cls == ERROR and source == self.dest):
            return Ignored.WRONG_SOURCE
        if msg.check_fingerprint() is False:
            return Ignored.BAD_FINGERPRINT
        rtt = max(now - self._last_sent, 0.0)
        self.timer.answered(self.attempts, rtt)
        self.state = State.ANSWERED
        self.reply = BindingReply.of(msg, source, self.local, rtt, self.attempts)
        return self.reply


# --- one question asked as paced tries -------------------------------------------------------------------------
@dataclass(frozen=True)
class PacedTries:
    """The diagnosis policy: every Binding request is a `Question` over one SharedRtt (module docstring)."""

    rtt: SharedRtt


class _SentOnce:
    """A Question's try: sent once, never resent or given up on its own (the Question decides both)."""

    __slots__ = ()

    def sent(self, now: float) -> float | None:
        return None

    def give_up_at(self) -> float:
        return math.inf

    def answered(self, attempts: int, rtt: float) -> None:
        """The Question books the answer (it knows which tries were lost)."""


class Question:
    """One question to one destination, asked as paced tries with fresh transaction ids (module docstring).

    Each try is a BindingTransaction of its own (the one place of the reply rules); the Question decides when
    the next one goes out, when silence is a "no", and books the answer into the SharedRtt: the winning try's
    exact RTT, and the tries unanswered for an RTO as lost."""

    __slots__ = ("_by_key", "_cap", "_deadline", "_first", "_new_id", "_next_at", "accept", "dest", "fingerprint",
                 "limit", "local", "reply", "request", "rtt", "state", "tries")

    def __init__(self, request: StunMessage, dest: Address, *, rtt: SharedRtt, accept: frozenset[Address] | None,
                 deadline: Callable[[], float] | None = None, limit: float | None = None,
                 local: Address = ("", 0), fingerprint: bool = True,
                 new_id: Callable[[], bytes] | None = None) -> None:
        """request: the first try as a message (its id is the first try's; later tries get `new_id()`, 12
        random bytes by default, 16 for an RFC 3489 request); deadline: when silence is a "no" (a value of
        the caller's clock, re-read at every wake; default: first send + rtt.negative_wait(), re-read too);
        limit: an overall cap in seconds from start(); accept, local: as BindingTransaction."""
        self.request = request
        self.dest = dest
        self.rtt = rtt
        self.accept = accept
        self.limit = limit
        self.local = local
        self.fingerprint = fingerprint
        size = len(request.transaction_id)
        self._new_id = new_id or (lambda: os.urandom(size))
        self._deadline = deadline
        self.state = State.NEW
        self.tries: list[tuple[float, BindingTransaction]] = []
        """(send time, the try's transaction), in the order sent."""
        self.reply: BindingReply | None = None
        self._by_key: dict[bytes, BindingTransaction] = {}
        self._first = 0.0
        self._cap = math.inf
        self._next_at = math.inf

    @property
    def finished(self) -> bool:
        return self.state in (State.ANSWERED, State.FAILED)

    @property
    def keys(self) -> tuple[bytes, ...]:
        """Cookie + transaction id of every try sent so far (what replies are matched on)."""
        return tuple(self._by_key)

    def start(self, now: float) -> Transmit:
        if self.state is not State.NEW:
            raise StunError("question already started")
        self.state = State.WAITING
        self._first = now
        if self.limit is not None:
            self._cap = now + self.limit
        return self._ask(now, self.request.transaction_id)

    def _ask(self, now: float, tid: bytes) -> Transmit:
        msg = StunMessage(self.request.method, self.request.cls, tid, list(self.request.attributes))
        txn = BindingTransaction(encode_message(msg, fingerprint=self.fingerprint), self.dest, timer=_SentOnce(),
                                 accept=self.accept, local=self.local)
        if txn.key in self._by_key:
            raise StunError("duplicate transaction id")
        sent = txn.start(now)
        self._by_key[txn.key] = txn
        self.tries.append((now, txn))
        # after the first try an RTO for its answer; then half an RTT between tries (both read now)
        self._next_at = now + (self.rtt.rto if len(self.tries) == 1 else self.rtt.pace())
        return replace(sent, wake_at=self._wake(), attempt=len(self.tries))

    def _give_up_at(self) -> float:
        end = self._deadline() if self._deadline is not None else self._first + self.rtt.negative_wait()
        return min(self._cap, end)

    def _more(self) -> bool:
        return len(self.tries) < self.rtt.tries_for_negative()

    def _wake(self) -> float:
        return min(self._next_at if self._more() else math.inf, self._give_up_at())

    def on_timer(self, now: float) -> Transmit | Wait | GiveUp:
        """Woken without an answer: the next try (a fresh id), wait on, or give up (silence is a "no")."""
        if self.state is not State.WAITING:
            raise StunError(f"question is {self.state.value}, not waiting")
        if now >= self._give_up_at():
            self.state = State.FAILED
            return GiveUp(f"no STUN reply from {self.dest[0]}:{self.dest[1]} after {len(self.tries)} tries "
                          f"({now - self._first:.2f}s)", len(self.tries))
        if self._more() and now >= self._next_at:
            return self._ask(now, self._new_id())
        return Wait(self._wake())

    def receive(self, msg: StunMessage, source: Address, now: float) -> BindingReply | Ignored:
        """A parsed message carrying one of this question's ids arrived from `source` at `now`."""
        if self.state is not State.WAITING:
            return Ignored.FINISHED
        txn = self._by_key.get(msg.key)
        if txn is None:
            return Ignored.OTHER_TRANSACTION
        answer = txn.receive(msg, source, now)
        if not isinstance(answer, BindingReply):
            return answer
        self.rtt.add(answer.rtt)  # sent once: an unambiguous sample
        rto = self.rtt.rto
        lost = sum(1 for at, t in self.tries if t is not txn and now - at >= rto)
        self.rtt.record_answer(lost + 1)
        self.state = State.ANSWERED
        self.reply = replace(answer, attempts=len(self.tries), lost=lost)
        return self.reply
