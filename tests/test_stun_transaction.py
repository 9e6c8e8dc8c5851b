"""The Binding transaction and the paced Question on an injected clock: schedules time for time, every byte
sent, the reply rules, RTT bookkeeping (Karn's rule, a Question's exact samples and lost tries), and
properties over arbitrary event sequences."""

from __future__ import annotations

import binascii
import math
import struct

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
from nodereach.stun.rtt import INITIAL_RTO, PerServerRtt, SharedRtt
from nodereach.stun.transaction import (
    BindingErrorResponse,
    BindingReply,
    BindingTransaction,
    GiveUp,
    Ignored,
    Question,
    Rfc8489Retransmit,
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


# --- a question asked as paced tries (PacedTries -> Question) ----------------------------------------------
def estimate(srtt: float, clean: int = 0) -> SharedRtt:
    """A SharedRtt with one RTT sample (rttvar srtt/2) and `clean` questions answered at the first try."""
    rtt = SharedRtt()
    rtt.add(srtt)
    for _ in range(clean):
        rtt.record_answer(1)
    return rtt


IDS = [bytes([k]) * 12 for k in range(1, 40)]


def wire_request(tid: bytes, attrs: bytes = b"") -> bytes:
    """A Binding request with FINGERPRINT, built by hand from RFC 8489 (header, attributes, CRC-32 of what
    precedes the FINGERPRINT attribute XOR 0x5354554E), independent of the encoder under test."""
    head = struct.pack("!HHI", 0x0001, len(attrs) + 8, 0x2112A442) + tid + attrs
    return head + struct.pack("!HHI", 0x8028, 4, binascii.crc32(head) ^ 0x5354554E)


def question(rtt: SharedRtt, accept: frozenset[tuple[str, int]] | None = None, first: bytes = IDS[0],
             **kw: object) -> Question:
    ids = iter(IDS[1:])
    return Question(binding_request(transaction_id=first), SERVER, rtt=rtt, accept=accept,
                    new_id=lambda: next(ids), **kw)  # type: ignore[arg-type]


def run_question(q: Question, start: float = 0.0, until: float = math.inf) -> tuple[list[tuple[float, bytes]], float]:
    """Drive a question nobody answers (until `until`), waking exactly when asked: (time, bytes) of every
    send, and the give-up time (or the time it stopped at)."""
    sends: list[tuple[float, bytes]] = []
    event: Transmit | Wait | GiveUp = q.start(start)
    now = start
    for _ in range(1000):
        if isinstance(event, GiveUp):
            assert q.state is State.FAILED and event.attempts == len(sends)
            return sends, now
        if isinstance(event, Transmit):
            assert event.dest == SERVER and event.attempt == len(sends) + 1
            sends.append((now, event.data))
        if event.wake_at > until:
            return sends, now
        now = event.wake_at
        event = q.on_timer(now)
    raise AssertionError("question never ended")


def test_question_schedule_time_for_time_byte_for_byte() -> None:
    """100 ms RTT, clean evidence: 4 tries, at 0 and after an RTO (0.26 s) three more SRTT/2 apart,
    each a fresh id with its own FINGERPRINT; silence is a "no" at 2 RTO + 2 x SRTT/2 = 0.62 s."""
    rtt = estimate(0.1, clean=20)
    assert (rtt.rto, rtt.pace(), rtt.tries_for_negative()) == pytest.approx((0.26, 0.05, 4))
    sends, gave_up = run_question(question(rtt), start=10.0)
    assert [t - 10.0 for t, _ in sends] == pytest.approx([0.0, 0.26, 0.31, 0.36])
    assert [data for _, data in sends] == [wire_request(tid) for tid in IDS[:4]]
    assert gave_up - 10.0 == pytest.approx(0.62) == pytest.approx(rtt.negative_wait())


def test_question_keeps_the_request_and_changes_only_the_id() -> None:
    """A CHANGE-REQUEST question: every try carries the attribute; a 16-byte RFC 3489 request gets 16-byte ids."""
    rtt = estimate(0.1, clean=20)
    ids = iter(IDS[1:])
    q = Question(binding_request(transaction_id=IDS[0], change_ip=True, change_port=True), SERVER, rtt=rtt,
                 accept=None, new_id=lambda: next(ids))
    sends, _ = run_question(q)
    change = struct.pack("!HHI", 0x0003, 4, 0x06)
    assert [data for _, data in sends] == [wire_request(tid, change) for tid in IDS[:4]]
    assert q.keys == tuple(b"\x21\x12\xa4\x42" + tid for tid in IDS[:4])
    legacy = Question(binding_request(legacy=True, transaction_id=bytes(16)), SERVER, rtt=rtt, accept=None,
                      fingerprint=False)
    sends, _ = run_question(legacy)
    assert len(sends) == 4 and all(len(data) == 20 and data[:4] == b"\x00\x01\x00\x00" for _, data in sends)
    assert len({data[4:20] for _, data in sends}) == 4


def test_question_before_any_rtt() -> None:
    """No sample yet: RTO 0.25 s between every try, and 8 tries (thin evidence); a caller's deadline cuts it."""
    rtt = SharedRtt()
    assert (rtt.rto, rtt.pace(), rtt.tries_for_negative()) == (INITIAL_RTO, INITIAL_RTO, 8)
    sends, gave_up = run_question(question(rtt))
    assert [t for t, _ in sends] == pytest.approx([0.25 * k for k in range(8)]) and gave_up == pytest.approx(2.0)
    sends, gave_up = run_question(question(rtt, deadline=lambda: 1.0))
    assert [t for t, _ in sends] == pytest.approx([0.0, 0.25, 0.5, 0.75]) and gave_up == 1.0


def test_question_overall_limit() -> None:
    sends, gave_up = run_question(question(estimate(0.1, clean=20), limit=0.3))
    assert [t for t, _ in sends] == pytest.approx([0.0, 0.26]) and gave_up == pytest.approx(0.3)


def test_question_follows_the_evidence_while_it_waits() -> None:
    """Loss seen by other questions meanwhile buys this one more tries and a later "no" (both re-read); a
    caller's deadline that tightens ends it."""
    rtt = estimate(0.1, clean=20)
    q = question(rtt)
    sends, now = run_question(q, until=0.27)
    assert len(sends) == 2
    for _ in range(5):
        rtt.record_answer(3)  # heavy loss elsewhere
    assert rtt.tries_for_negative() >= 6
    event = q.on_timer(0.31)
    while not isinstance(event, GiveUp):
        if isinstance(event, Transmit):
            sends.append((now, event.data))
        now = event.wake_at
        event = q.on_timer(now)
    assert len(sends) == rtt.tries_for_negative() and now == pytest.approx(rtt.negative_wait())
    end = [5.0]
    q = question(estimate(0.1, clean=20), deadline=lambda: end[0])
    assert q.start(0.0).wake_at == pytest.approx(0.26)
    end[0] = 0.1
    assert isinstance(q.on_timer(0.1), GiveUp)


def test_question_answer_to_an_earlier_try_is_an_exact_sample() -> None:
    """Four tries out, the last one answered 40 ms after it was sent: RTT 0.04 exactly (its own id), attempts
    4, the first try (unanswered for more than an RTO) booked as lost, the second and third not yet."""
    rtt = estimate(0.1, clean=20)
    before = (rtt.samples, rtt.answered_tries, rtt.lost_tries)
    q = question(rtt, deadline=lambda: 5.0)
    sends, _ = run_question(q, until=0.37)
    assert [t for t, _ in sends] == pytest.approx([0.0, 0.26, 0.31, 0.36])
    reply = q.receive(reply_to(sends[3][1]), SERVER, 0.40)
    assert isinstance(reply, BindingReply) and q.reply is reply and q.state is State.ANSWERED
    assert reply.rtt == pytest.approx(0.04) and reply.attempts == 4 and reply.lost == 1
    assert (rtt.samples, rtt.answered_tries, rtt.lost_tries) == (before[0] + 1, before[1] + 2, before[2] + 1)
    assert rtt.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.04)
    assert q.receive(reply_to(sends[0][1]), SERVER, 0.41) is Ignored.FINISHED  # the late answer to try 1
    # answered at the first try: no loss booked
    q = question(rtt, deadline=lambda: 5.0)
    first = q.start(1.0)
    reply = q.receive(reply_to(first.data), SERVER, 1.05)
    assert isinstance(reply, BindingReply) and (reply.rtt, reply.attempts, reply.lost) == pytest.approx((0.05, 1, 0))


def test_question_reply_rules_are_the_transactions() -> None:
    """A CHANGE-REQUEST question accepts the alternate address only (an error from the destination too); what
    does not count leaves it waiting."""
    rtt = estimate(0.1, clean=20)
    q = question(rtt, accept=frozenset({ALT}), deadline=lambda: 5.0, local=ME)
    sends, _ = run_question(q, until=0.27)
    assert q.receive(reply_to(sends[0][1]), SERVER, 0.3) is Ignored.WRONG_SOURCE  # not from the alternate address
    assert q.receive(reply_to(encode_message(binding_request())), ALT, 0.3) is Ignored.OTHER_TRANSACTION
    assert q.receive(parse_message(sends[1][1]), ALT, 0.3) is Ignored.NOT_A_RESPONSE
    assert q.receive(_corrupt(reply_to(sends[1][1], fingerprint=True)), ALT, 0.3) is Ignored.BAD_FINGERPRINT
    assert q.state is State.WAITING and rtt.answered_tries == 20
    reply = q.receive(reply_to(sends[1][1], cls=ERROR, error=(420, "Unknown Attribute")), SERVER, 0.35)
    assert isinstance(reply, BindingReply) and reply.error == (420, "Unknown Attribute") and reply.local == ME
    assert reply.source == SERVER and reply.rtt == pytest.approx(0.09)


def test_question_misuse_is_a_typed_error() -> None:
    q = question(estimate(0.1))
    with pytest.raises(StunError):
        q.on_timer(0.0)  # not started
    q.start(0.0)
    with pytest.raises(StunError):
        q.start(0.0)
    same = Question(binding_request(transaction_id=IDS[0]), SERVER, rtt=estimate(0.1), accept=None,
                    new_id=lambda: IDS[0])
    same.start(0.0)
    with pytest.raises(StunError):
        same.on_timer(0.3)  # a second try with the first one's id


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
@given(events, st.sampled_from(["rfc", "deadline"]), st.one_of(st.none(), st.floats(0.01, 50)),
       st.sampled_from([None, frozenset({SERVER}), frozenset({ALT})]))
def test_any_event_sequence(seq: list[tuple[object, ...]], policy: str, limit: float | None,
                            accept: frozenset[tuple[str, int]] | None) -> None:
    """Whatever arrives, whenever: no exception, at most one reply and only an acceptable one, sends of
    the same bytes at non-decreasing times, never more than Rc, and no activity after the end."""
    timer = Rfc8489Retransmit().timer() if policy == "rfc" else Rfc8489Retransmit().timer(deadline=lambda: 30.0)
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
        if policy == "deadline":
            bound = min(bound, 30.0)
        if len(sends) == 7:
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


q_events = st.lists(st.one_of(st.tuples(st.just("timer"), st.floats(0, 10)),
                              st.tuples(kinds, st.floats(0, 10), sources, st.integers(0, 9))), max_size=40)


@settings(max_examples=300, deadline=None)
@given(q_events, st.sampled_from([0.02, 0.1, None]), st.integers(0, 6), st.one_of(st.none(), st.floats(0.01, 5)),
       st.sampled_from([None, frozenset({SERVER}), frozenset({ALT})]))
def test_question_any_event_sequence(seq: list[tuple[object, ...]], srtt: float | None, lossy: int,
                                     deadline: float | None, accept: frozenset[tuple[str, int]] | None) -> None:
    """Whatever arrives, whenever: no exception; tries at non-decreasing times, each a new id, never more
    than the evidence allows (8 at most); at most one reply, only to a try sent, acceptable, with that try's
    exact RTT; its loss booked once; no give-up before the deadline and nothing after the end."""
    rtt = SharedRtt() if srtt is None else estimate(srtt, clean=10)
    for _ in range(lossy):
        rtt.record_answer(2)
    q = question(rtt, accept=accept, deadline=None if deadline is None else (lambda: deadline))
    first = q.start(0.0)
    sends: list[tuple[float, bytes]] = [(0.0, first.data)]
    replies: list[BindingReply] = []
    now, gave_up = 0.0, None
    for ev in seq:
        now = max(now, float(ev[1]))  # type: ignore[arg-type]
        if ev[0] == "timer":
            if q.finished:
                continue
            out = q.on_timer(now)
            if isinstance(out, Transmit):
                assert out.attempt == len(sends) + 1 and out.data[4:20] not in {d[4:20] for _, d in sends}
                sends.append((now, out.data))
            elif isinstance(out, GiveUp):
                gave_up = now
            continue
        kind, _, source, index = ev
        data = sends[int(index)][1] if int(index) < len(sends) else encode_message(binding_request())  # type: ignore[call-overload]
        msg = {"ok": reply_to(data), "ok-fp": reply_to(data, fingerprint=True),
               "bad-fp": _corrupt(reply_to(data, fingerprint=True)),
               "error": reply_to(data, cls=ERROR, error=(400, "Bad Request")),
               "request": parse_message(data), "other-id": reply_to(encode_message(binding_request())),
               "other-method": reply_to(data, method=0x003)}[str(kind)]
        booked = (rtt.answered_tries, rtt.lost_tries)
        out = q.receive(msg, source, now)  # type: ignore[arg-type]
        if isinstance(out, BindingReply):
            replies.append(out)
            acceptable = accept is None or source in accept or (kind == "error" and source == SERVER)
            assert acceptable and kind in ("ok", "ok-fp", "error") and gave_up is None
            sent_at = sends[int(index)][0]  # type: ignore[call-overload]
            assert out.rtt == pytest.approx(now - sent_at) and out.attempts == len(sends)
            assert 0 <= out.lost < len(sends) and (rtt.answered_tries, rtt.lost_tries) == (
                booked[0] + out.lost + 1, booked[1] + out.lost)
        else:
            assert (rtt.answered_tries, rtt.lost_tries) == booked
    assert len(replies) <= 1
    times = [t for t, _ in sends]
    assert times == sorted(times) and len(sends) <= 8
    if gave_up is not None:
        assert not replies and q.state is State.FAILED
        if deadline is not None:
            assert gave_up >= deadline
