"""The Binding transaction state machine on an injected clock: schedules time for time, every byte sent, the
reply rules, RTT bookkeeping (Karn's rule, loss), and properties over arbitrary event sequences."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodereach.stun import attributes as A
from nodereach.stun.errors import StunError, StunErrorResponse
from nodereach.stun.message import (
    BINDING,
    ERROR,
    INDICATION,
    REQUEST,
    SUCCESS,
    StunMessage,
    binding_request,
    encode_message,
    parse_message,
)
from nodereach.stun.rtt import BACKOFF, PerServerRtt, SharedRtt
from nodereach.stun.transaction import (
    BindingErrorResponse,
    BindingReply,
    BindingTransaction,
    GiveUp,
    Ignored,
    Rfc8489Retransmit,
    SharedRttRetransmit,
    State,
    Transmit,
    Wait,
)

SERVER = ("203.0.113.10", 3478)
ALT = ("203.0.113.11", 3479)
ME = ("198.51.100.7", 40000)
TID = bytes(range(1, 13))
REQUEST_BYTES = encode_message(binding_request(transaction_id=TID))


def reply_to(data: bytes, cls: int = SUCCESS, mapped: tuple[str, int] = ME, fingerprint: bool = False,
             method: int = BINDING, error: tuple[int, str] | None = None) -> StunMessage:
    req = parse_message(data)
    msg = StunMessage(method, cls, req.transaction_id)
    if error is not None:
        msg.add(A.ERROR_CODE, A.encode_error_code(*error))
    else:
        msg.add(A.XOR_MAPPED_ADDRESS, A.encode_xor_address(mapped, msg.key))
        msg.add(A.OTHER_ADDRESS, A.encode_address(ALT))
    return parse_message(encode_message(msg, fingerprint=fingerprint))


def run_silent(txn: BindingTransaction, start: float = 0.0) -> tuple[list[float], float]:
    """Drive a transaction nobody answers, waking exactly when asked: send times, give-up time."""
    sends: list[float] = []
    event: Transmit | Wait | GiveUp = txn.start(start)
    now = start
    for _ in range(1000):
        if isinstance(event, GiveUp):
            return sends, now
        if isinstance(event, Transmit):
            assert event.data == txn.data and event.dest == SERVER  # the same bytes every time
            sends.append(now)
        now = event.wake_at
        event = txn.on_timer(now)
    raise AssertionError("transaction never ended")


# --- RFC 8489 schedule ---------------------------------------------------------------------------------------
def test_rfc8489_default_schedule_time_for_time() -> None:
    """RFC 8489 6.2.1: sends at 0, 500 ms, 1.5 s, 3.5 s, 7.5 s, 15.5 s, 31.5 s; failure at 39.5 s."""
    txn = BindingTransaction(REQUEST_BYTES, SERVER, timer=Rfc8489Retransmit().timer(), accept=frozenset({SERVER}))
    sends, gave_up = run_silent(txn, start=100.0)
    assert [t - 100.0 for t in sends] == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert gave_up - 100.0 == pytest.approx(39.5)
    assert txn.state is State.FAILED and txn.attempts == 7


def test_rfc8489_overall_limit_caps_the_schedule() -> None:
    txn = BindingTransaction(REQUEST_BYTES, SERVER, timer=Rfc8489Retransmit().timer(), accept=frozenset({SERVER}),
                             limit=2.0)
    sends, gave_up = run_silent(txn)
    assert sends == [0.0, 0.5, 1.5] and gave_up == 2.0


def test_rfc8489_deadline_is_reread_at_every_wake() -> None:
    end = [10.0]
    txn = BindingTransaction(REQUEST_BYTES, SERVER, timer=Rfc8489Retransmit().timer(deadline=lambda: end[0]),
                             accept=None)
    first = txn.start(0.0)
    assert first.wake_at == 0.5
    end[0] = 0.7  # tightened while waiting
    assert isinstance(txn.on_timer(0.5), Transmit)
    assert isinstance(gave_up := txn.on_timer(0.7), GiveUp) and gave_up.attempts == 2


def test_adaptive_rto_per_server_and_karns_rule() -> None:
    policy = Rfc8489Retransmit(adaptive=True, min_rto=0.03)
    per_server = PerServerRtt()
    assert policy.current_rto(SERVER[0], per_server) == 0.5  # nothing learned yet: the RFC default
    txn = BindingTransaction(REQUEST_BYTES, SERVER, timer=policy.timer(SERVER[0], per_server), accept=None)
    txn.start(0.0)
    reply = txn.receive(reply_to(REQUEST_BYTES), SERVER, 0.02)
    assert isinstance(reply, BindingReply) and reply.rtt == pytest.approx(0.02) and reply.attempts == 1
    assert policy.current_rto(SERVER[0], per_server) == pytest.approx(0.02 + 4 * 0.01)  # SRTT + 4 RTTVAR
    # that server now: RTO 0.06, Rc 4, Rm 4 -> sends at 0, .06, .18, .42, failure at .66
    txn = BindingTransaction(REQUEST_BYTES, SERVER, timer=policy.timer(SERVER[0], per_server), accept=None)
    sends, gave_up = run_silent(txn)
    assert sends == pytest.approx([0.0, 0.06, 0.18, 0.42]) and gave_up == pytest.approx(0.66)
    assert policy.current_rto("203.0.113.99", per_server) == 0.5  # another server: its own estimate
    # Karn: a reply after a retransmission is no sample
    txn = BindingTransaction(REQUEST_BYTES, SERVER, timer=policy.timer(SERVER[0], per_server), accept=None)
    txn.start(0.0)
    txn.on_timer(0.06)
    before = per_server.rto(SERVER[0], 0.0, 10.0)
    assert isinstance(txn.receive(reply_to(REQUEST_BYTES), SERVER, 1.0), BindingReply)
    assert per_server.rto(SERVER[0], 0.0, 10.0) == before


# --- shared-RTT schedule ---------------------------------------------------------------------------------------
def estimate(srtt: float) -> SharedRtt:
    rtt = SharedRtt()
    rtt.add(srtt)
    return rtt


def test_shared_schedule_time_for_time() -> None:
    """A send every RTO of the shared estimate, growing 1.3x, until the deadline callable says stop."""
    rtt = estimate(0.1)
    rto = rtt.rto
    txn = BindingTransaction(REQUEST_BYTES, SERVER, timer=SharedRttRetransmit(rtt).timer(lambda: 2.0), accept=None)
    sends, gave_up = run_silent(txn)
    expect, t, k = [], 0.0, 0
    while t < 2.0:
        expect.append(t)
        t += rto * BACKOFF ** k
        k += 1
    assert sends == pytest.approx(expect) and gave_up == 2.0
    assert rtt.retransmits == len(expect) - 1


def test_shared_default_deadline_follows_measured_loss() -> None:
    """Without a deadline: time for as many tries as the loss evidence asks (negative_wait, re-read)."""
    rtt = estimate(0.1)
    for _ in range(20):
        rtt.record_answer(1)  # a clean path so far: 4 tries
    txn = BindingTransaction(REQUEST_BYTES, SERVER, timer=SharedRttRetransmit(rtt).timer(), accept=None)
    txn.start(0.0)
    clean = rtt.negative_wait()
    assert rtt.tries_for_negative() == 4
    for _ in range(5):
        rtt.record_answer(3)  # meanwhile other transactions saw heavy loss: more tries before "no"
    assert rtt.negative_wait() > clean
    sends, gave_up = [], 0.0
    event: Transmit | Wait | GiveUp = Wait(0.0)
    now = 0.0
    while not isinstance(event, GiveUp):
        now = event.wake_at
        event = txn.on_timer(now)
        if isinstance(event, Transmit):
            sends.append(now)
    gave_up = now
    assert gave_up == pytest.approx(rtt.negative_wait()) and len(sends) + 1 == rtt.tries_for_negative()


def test_shared_loss_bookkeeping_and_karn() -> None:
    rtt = estimate(0.1)
    samples = rtt.samples
    txn = BindingTransaction(REQUEST_BYTES, SERVER, timer=SharedRttRetransmit(rtt).timer(lambda: 5.0), accept=None)
    first = txn.start(0.0)
    second = txn.on_timer(first.wake_at)
    assert isinstance(second, Transmit) and second.attempt == 2
    reply = txn.receive(reply_to(REQUEST_BYTES), SERVER, first.wake_at + 0.12)
    assert isinstance(reply, BindingReply) and reply.attempts == 2 and reply.rtt == pytest.approx(0.12)
    assert (rtt.retransmits, rtt.recovered, rtt.answered_tries, rtt.lost_tries) == (1, 1, 2, 1)
    assert rtt.samples == samples  # Karn: no RTT sample from a retransmitted transaction
    txn = BindingTransaction(REQUEST_BYTES, SERVER, timer=SharedRttRetransmit(rtt).timer(lambda: 5.0), accept=None)
    txn.start(1.0)
    assert isinstance(txn.receive(reply_to(REQUEST_BYTES), SERVER, 1.05), BindingReply)
    assert rtt.samples == samples + 1 and rtt.answered_tries == 3 and rtt.lost_tries == 1


# --- reply rules ---------------------------------------------------------------------------------------------
def waiting(accept: frozenset[tuple[str, int]] | None = frozenset({SERVER}), data: bytes = REQUEST_BYTES
            ) -> BindingTransaction:
    txn = BindingTransaction(data, SERVER, timer=Rfc8489Retransmit().timer(), accept=accept, local=ME)
    txn.start(0.0)
    return txn


def test_success_reply_values() -> None:
    txn = waiting()
    reply = txn.receive(reply_to(REQUEST_BYTES, fingerprint=True), SERVER, 0.25)
    assert isinstance(reply, BindingReply) and txn.state is State.ANSWERED and txn.reply is reply
    assert (reply.source, reply.mapped, reply.other_address, reply.error) == (SERVER, ME, ALT, None)
    assert (reply.rtt, reply.attempts, reply.local, reply.legacy) == (0.25, 1, ME, False)
    assert reply.raise_for_error() is reply
    assert txn.receive(reply_to(REQUEST_BYTES), SERVER, 0.3) is Ignored.FINISHED  # a duplicate


@pytest.mark.parametrize(("case", "expect"), [
    ("other transaction", Ignored.OTHER_TRANSACTION),
    ("request", Ignored.NOT_A_RESPONSE),
    ("indication", Ignored.NOT_A_RESPONSE),
    ("other method", Ignored.NOT_A_RESPONSE),
    ("wrong source", Ignored.WRONG_SOURCE),
    ("error from a third address", Ignored.WRONG_SOURCE),
    ("bad fingerprint", Ignored.BAD_FINGERPRINT),
])
def test_replies_that_do_not_count(case: str, expect: Ignored) -> None:
    txn = waiting()
    msg, source = reply_to(REQUEST_BYTES), SERVER
    if case == "other transaction":
        msg = reply_to(encode_message(binding_request()))
    elif case == "request":
        msg = parse_message(REQUEST_BYTES)
    elif case == "indication":
        msg = reply_to(REQUEST_BYTES, cls=INDICATION)
    elif case == "other method":
        msg = reply_to(REQUEST_BYTES, method=0x003)
    elif case == "wrong source":
        source = ALT
    elif case == "error from a third address":
        msg, source = reply_to(REQUEST_BYTES, cls=ERROR, error=(420, "Unknown Attribute")), ALT
    elif case == "bad fingerprint":
        raw = bytearray(reply_to(REQUEST_BYTES, fingerprint=True).raw)
        raw[-1] ^= 0xFF
        msg = parse_message(bytes(raw))
    assert txn.receive(msg, source, 0.1) is expect
    assert txn.state is State.WAITING and txn.reply is None  # still waiting for the real one


def test_change_request_reply_accepted_only_from_the_expected_address() -> None:
    txn = waiting(accept=frozenset({ALT}))
    assert txn.receive(reply_to(REQUEST_BYTES), SERVER, 0.1) is Ignored.WRONG_SOURCE  # the NAT filtered the alt one
    assert isinstance(txn.receive(reply_to(REQUEST_BYTES), ALT, 0.2), BindingReply)


def test_error_response_from_the_destination_is_a_reply_value() -> None:
    """A server refusing CHANGE-REQUEST answers 420 from where the request went, not from the alt address."""
    txn = waiting(accept=frozenset({ALT}))
    reply = txn.receive(reply_to(REQUEST_BYTES, cls=ERROR, error=(420, "Unknown Attribute")), SERVER, 0.1)
    assert isinstance(reply, BindingReply) and reply.error == (420, "Unknown Attribute") and reply.mapped is None
    assert not reply.legacy
    with pytest.raises(BindingErrorResponse) as info:
        reply.raise_for_error()
    assert info.value.code == 420 and info.value.reply is reply and isinstance(info.value, StunErrorResponse)


def test_any_source_keeps_the_source() -> None:
    txn = waiting(accept=None)
    reply = txn.receive(reply_to(REQUEST_BYTES), ("192.0.2.99", 9), 0.1)
    assert isinstance(reply, BindingReply) and reply.source == ("192.0.2.99", 9)


def test_legacy_request_and_rfc3489_reply() -> None:
    data = encode_message(binding_request(legacy=True, transaction_id=bytes(range(16))))
    txn = waiting(data=data)
    old = StunMessage(BINDING, SUCCESS, bytes(range(16)))
    old.add(A.MAPPED_ADDRESS, A.encode_address(ME))
    reply = txn.receive(parse_message(encode_message(old)), SERVER, 0.1)
    assert isinstance(reply, BindingReply) and reply.legacy and reply.mapped == ME


def test_misuse_is_a_typed_error() -> None:
    txn = BindingTransaction(REQUEST_BYTES, SERVER, timer=Rfc8489Retransmit().timer(), accept=None)
    with pytest.raises(StunError):
        txn.on_timer(0.0)  # not started
    txn.start(0.0)
    with pytest.raises(StunError):
        txn.start(0.0)
    with pytest.raises(StunError):
        BindingTransaction(b"short", SERVER, timer=Rfc8489Retransmit().timer(), accept=None)


def test_early_wake_waits_without_sending() -> None:
    txn = BindingTransaction(REQUEST_BYTES, SERVER, timer=Rfc8489Retransmit().timer(), accept=None)
    txn.start(0.0)
    assert txn.on_timer(0.2) == Wait(0.5)
    assert isinstance(txn.on_timer(0.5), Transmit)


# --- properties over arbitrary event sequences -------------------------------------------------------------
kinds = st.sampled_from(["ok", "ok-fp", "bad-fp", "error", "request", "other-id", "other-method"])
sources = st.sampled_from([SERVER, ALT, ("192.0.2.99", 9)])
events = st.lists(st.one_of(st.tuples(st.just("timer"), st.floats(0, 60)),
                            st.tuples(kinds, st.floats(0, 60), sources)), max_size=30)


@settings(max_examples=300, deadline=None)
@given(events, st.sampled_from(["rfc", "shared"]), st.one_of(st.none(), st.floats(0.01, 50)),
       st.sampled_from([None, frozenset({SERVER}), frozenset({ALT})]))
def test_any_event_sequence(seq: list[tuple[object, ...]], policy: str, limit: float | None,
                            accept: frozenset[tuple[str, int]] | None) -> None:
    """Whatever arrives, whenever: no exception, at most one reply and only an acceptable one, sends of
    the same bytes at non-decreasing times, never more than Rc, and no activity after the end."""
    timer = Rfc8489Retransmit().timer() if policy == "rfc" else SharedRttRetransmit(estimate(0.05)).timer(
        lambda: 30.0)
    txn = BindingTransaction(REQUEST_BYTES, SERVER, timer=timer, accept=accept, limit=limit)
    first = txn.start(0.0)
    sends, replies, now, gave_up = [0.0], [], 0.0, None
    for ev in seq:
        now = max(now, float(ev[1]))  # type: ignore[arg-type]
        if ev[0] == "timer":
            if txn.finished:
                continue
            out = txn.on_timer(now)
            if isinstance(out, Transmit):
                assert out.data == first.data and out.attempt == len(sends) + 1
                sends.append(now)
            elif isinstance(out, GiveUp):
                gave_up = now
        else:
            kind, _, source = ev
            msg = {"ok": reply_to(REQUEST_BYTES), "ok-fp": reply_to(REQUEST_BYTES, fingerprint=True),
                   "bad-fp": _corrupt(reply_to(REQUEST_BYTES, fingerprint=True)),
                   "error": reply_to(REQUEST_BYTES, cls=ERROR, error=(400, "Bad Request")),
                   "request": parse_message(REQUEST_BYTES), "other-id": reply_to(encode_message(binding_request())),
                   "other-method": reply_to(REQUEST_BYTES, method=0x003)}[str(kind)]
            out = txn.receive(msg, source, now)  # type: ignore[arg-type]
            if isinstance(out, BindingReply):
                replies.append(out)
                acceptable = accept is None or source in accept or (kind == "error" and source == SERVER)
                assert acceptable and kind in ("ok", "ok-fp", "error") and gave_up is None
                assert out.attempts == len(sends) and out.rtt >= 0
    assert len(replies) <= 1
    assert sends == sorted(sends) and len(sends) <= 7
    if gave_up is not None:  # never before it had to: the limit, the deadline, or the end of the schedule
        assert not replies and txn.state is State.FAILED
        bound = limit if limit is not None else math.inf
        if policy == "shared":
            bound = min(bound, 30.0)
        elif len(sends) == 7:
            bound = min(bound, sends[-1] + 16 * 0.5)
        assert gave_up >= bound
    assert txn.state is (State.ANSWERED if replies else State.FAILED if gave_up is not None else State.WAITING)


def _corrupt(msg: StunMessage) -> StunMessage:
    raw = bytearray(msg.raw)
    raw[-1] ^= 0xFF
    return parse_message(bytes(raw))


@settings(max_examples=200, deadline=None)
@given(st.floats(0.0, 100.0), st.lists(st.floats(0.0, 5.0), max_size=12))
def test_gives_up_exactly_at_the_limit_when_it_comes_first(limit: float, jitter: list[float]) -> None:
    """However late the driver wakes, a silent transaction fails at its first wake at or after the limit,
    and never sends after it."""
    txn = BindingTransaction(REQUEST_BYTES, SERVER, timer=Rfc8489Retransmit().timer(), accept=None, limit=limit)
    event: Transmit | Wait | GiveUp = txn.start(0.0)
    now = 0.0
    for late in [*jitter, *([0.0] * 20)]:
        if isinstance(event, GiveUp):
            break
        assert event.wake_at <= max(limit, now) + 1e-9
        now = event.wake_at + late
        event = txn.on_timer(now)
        if isinstance(event, Transmit):
            assert now < limit
    assert isinstance(event, GiveUp) and now >= min(limit, 39.5)


def test_request_is_sent_byte_for_byte() -> None:
    data = encode_message(binding_request(transaction_id=TID, change_ip=True), fingerprint=True)
    txn = BindingTransaction(data, SERVER, timer=Rfc8489Retransmit().timer(), accept=None)
    out = txn.start(0.0)
    assert out.data == data == bytes.fromhex("000100102112a442") + TID + bytes.fromhex("0003000400000004") + \
        data[-8:]
    assert parse_message(out.data).check_fingerprint() is True and parse_message(out.data).cls == REQUEST
