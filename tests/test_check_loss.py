"""Loss-aware negative deadlines: how many tries a STUN transaction gets before its silence counts as "no"."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from nodereach.diagnose.engine import Budget
from nodereach.stun.rtt import MAX_TRIES, MIN_TRIES, SharedRtt, paced_wait, tries_for_loss


def test_tries_vs_loss_table() -> None:
    # clean path: today's 4 tries; 19% round-trip loss (10% each way) needs 6; hopeless loss is capped at 8
    assert tries_for_loss(0.0) == 4
    assert tries_for_loss(0.05) == 4
    assert tries_for_loss(0.1) == 5  # 0.1**4 == 1e-4 is not below the target
    assert tries_for_loss(0.19) == 6
    assert tries_for_loss(0.3) == 8
    assert tries_for_loss(0.9) == MAX_TRIES


@given(st.floats(min_value=0.0, max_value=0.99))
def test_tries_meet_target_or_cap(loss: float) -> None:
    n = tries_for_loss(loss)
    assert MIN_TRIES <= n <= MAX_TRIES
    assert loss ** n < 1e-4 or n == MAX_TRIES
    assert n == MIN_TRIES or loss ** (n - 1) >= 1e-4  # fewest tries that meet it


def test_wait_covers_every_try() -> None:
    # tries at 0, rto, rto+pace, rto+2 pace, ...; the last one gets one rto for its reply
    assert abs(paced_wait(0.1, 0.02, 2) - 0.2) < 1e-9
    assert abs(paced_wait(0.1, 0.02, 4) - (0.2 + 2 * 0.02)) < 1e-9
    assert abs(paced_wait(0.1, 0.02, 8) - (0.2 + 6 * 0.02)) < 1e-9


def _estimator(answered: list[int]) -> SharedRtt:
    rtt = SharedRtt.__new__(SharedRtt)  # no event loop needed for the arithmetic
    rtt.srtt, rtt.rttvar, rtt.samples = 0.05, 0.005, 1
    rtt.answered_tries = rtt.lost_tries = 0
    rtt.provisional = False
    for tries in answered:
        rtt.record_answer(tries)
    return rtt


def test_clean_path_keeps_four_tries() -> None:
    rtt = _estimator([1] * 14)  # STUN tests + TCP port-path probes, all answered first time
    assert rtt.tries_for_negative() == 4
    assert abs(rtt.negative_wait() - max(0.12, paced_wait(rtt.rto, rtt.pace(), 4))) < 1e-9


def test_observed_loss_buys_more_tries() -> None:
    # 20 transactions, 5 of them answered only on the 2nd try: ~20% loss per try
    rtt = _estimator([1] * 15 + [2] * 5)
    assert 0.15 < rtt.loss < 0.25
    assert rtt.tries_for_negative() >= 5
    assert rtt.negative_wait() > _estimator([1] * 20).negative_wait()


def test_budget_negative_bounded_by_timeout() -> None:
    rtt = _estimator([3] * 10)  # heavy loss: 8 tries
    assert rtt.tries_for_negative() == MAX_TRIES
    now = time.monotonic()
    budget = Budget(now, 1.0, rtt)
    assert budget.negative(now) <= budget.end
    assert budget.negative(now, rtos=2) == now + 2 * rtt.rto


def test_tries_follow_the_evidence() -> None:
    """E[p^n] over what the evidence allows: thin evidence buys tries, a well-measured clean path keeps 4."""
    from nodereach.stun.rtt import tries_for_evidence

    assert tries_for_evidence(0, 14) == 4  # clean, STUN + TCP port probes answered first time
    assert tries_for_evidence(0, 7) == 5  # clean but thin evidence
    assert tries_for_evidence(3, 17) >= 6  # ~18% loss seen
    assert tries_for_evidence(10, 20) == MAX_TRIES
    for lost in range(0, 10):
        assert tries_for_evidence(lost, 20) <= tries_for_evidence(lost + 1, 20)  # more loss, never fewer tries


# --- one question asked as paced tries (probes.request), against a loopback server that drops ---
class _Dropper:
    """A STUN responder on loopback that ignores the first `drop` requests it gets (or all of them)."""

    def __init__(self, drop: int) -> None:
        import socket

        self.drop = drop
        self.ids: list[bytes] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.addr = self.sock.getsockname()

    def readable(self) -> None:
        from nodereach.stun import attributes as SA
        from nodereach.stun import message as M

        while True:
            try:
                data, source = self.sock.recvfrom(2048)
            except BlockingIOError:
                return
            req = M.parse_message(data)
            self.ids.append(req.transaction_id)
            if len(self.ids) <= self.drop:
                continue
            resp = M.StunMessage(M.BINDING, M.SUCCESS, req.transaction_id)
            resp.add(SA.XOR_MAPPED_ADDRESS, SA.encode_xor_address(source, req.key))
            self.sock.sendto(M.encode_message(resp), source)


async def _ask(drop: int, budget_s: float) -> tuple[object, _Dropper, SharedRtt, float]:
    import asyncio

    from nodereach.diagnose import probes
    from nodereach.diagnose.budget import Budget, Context
    from nodereach.diagnose.stunio import StunSocket

    server = _Dropper(drop)
    loop = asyncio.get_running_loop()
    loop.add_reader(server.sock.fileno(), server.readable)
    rtt = SharedRtt()
    rtt.add(0.05)  # a known path: 50 ms RTT, RTO 0.11
    ctx = Context(rtt, Budget(time.monotonic(), budget_s, rtt))
    sock = await StunSocket(rtt).open()
    start = time.monotonic()
    try:
        reply = await probes.request(sock, server.addr, ctx)
    finally:
        sock.close()
        loop.remove_reader(server.sock.fileno())
        server.sock.close()
    return reply, server, rtt, time.monotonic() - start


async def test_silence_is_no_after_paced_tries() -> None:
    reply, server, rtt, took = await _ask(drop=1000, budget_s=5.0)
    tries = rtt.tries_for_negative()
    assert reply is None
    assert len(set(server.ids)) >= tries  # as many separate transactions as the loss evidence asks for
    assert took < 2 * rtt.rto + tries * 0.025 + 0.3  # paced, not an RTO per try: 0.4 s here, not 2 s


async def test_a_lost_try_is_recovered_and_counted() -> None:
    reply, server, rtt, _took = await _ask(drop=3, budget_s=5.0)
    assert reply is not None and reply.mapped is not None  # type: ignore[attr-defined]
    assert len(set(server.ids)) >= 3
    assert rtt.lost_tries >= 1  # the unanswered try is loss evidence for the next negative answer
