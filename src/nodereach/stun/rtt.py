"""One RTT and loss estimate shared by every STUN question of a diagnosis, and the loss-aware rule for how often
to ask before silence counts as a negative answer (nodereach check's RFC 5780 tests). The schedule that asks
(stun.transaction.Question: a first try, after an RTO more tries half an RTT apart) reads its gaps, its number
of tries and its give-up time from here."""

from __future__ import annotations

import asyncio

INITIAL_RTO = 0.25
"""Shared-RTT mode: retransmission timeout before any RTT was measured."""
MIN_RTO = 0.03
MIN_PACE = 0.01
MIN_NEGATIVE = 0.12
"""Never call silence "no" sooner than this once the RTT is known (a scheduling hiccup is not an answer)."""
MISS_TARGET = 1e-4
"""A negative answer decides a classification: the chance that every try was lost must stay below this."""
MIN_TRIES, MAX_TRIES = 4, 8


def tries_for_loss(loss: float, target: float = MISS_TARGET, lo: int = MIN_TRIES, hi: int = MAX_TRIES) -> int:
    """Fewest tries n (lo..hi) with loss**n < target: how often to ask before "no answer" means "no"."""
    if loss <= 0.0:
        return lo
    n = lo
    while n < hi and loss ** n >= target:
        n += 1
    return n


PRIOR_LOST, PRIOR_ANSWERED = 0.5, 5.0
"""Beta prior on the loss per try: half a loss in 5 tries (mean 0.1), weak enough that a few samples count."""


def tries_for_evidence(lost: int, tries: int, target: float = MISS_TARGET, lo: int = MIN_TRIES,
                       hi: int = MAX_TRIES) -> int:
    """Fewest tries n (lo..hi) whose chance of all being lost, averaged over what the evidence (`lost` of
    `tries` sends unanswered) says the loss may be, is below `target`: E[p^n] under Beta(a, b) is
    prod_{k<n} (a+k)/(a+b+k). Thin evidence therefore buys extra tries; a clean, well-measured path keeps `lo`."""
    a = PRIOR_LOST + lost
    b = PRIOR_ANSWERED - PRIOR_LOST + (tries - lost)
    n, p_all = 0, 1.0
    while n < hi:
        p_all *= (a + n) / (a + b + n)
        n += 1
        if n >= lo and p_all < target:
            break
    return n


def paced_wait(rto: float, pace: float, tries: int) -> float:
    """How long a question asked as `tries` paced tries takes to become a "no": the first try, an RTO for its
    answer, then the other tries `pace` apart, an RTO for the last one's answer."""
    return 2 * rto + max(0, tries - 2) * pace


class SharedRtt:
    """RFC 6298-style smoothed RTT and a loss estimate shared by every transaction of one diagnosis."""

    def __init__(self) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.samples = 0
        self.answered_tries = 0
        self.lost_tries = 0
        """Tries of answered questions (and answered TCP probes), and how many of them went unanswered."""
        self.first_sample = asyncio.Event()
        self.provisional = False

    def add(self, rtt: float, provisional: bool = False) -> None:
        """Add a sample. A provisional one (a TCP handshake, which may hide a SYN retransmission) only seeds
        the estimate until the first real STUN sample replaces it."""
        if provisional:
            if self.srtt is None:
                self.srtt, self.rttvar, self.provisional = rtt, rtt / 2, True
                self.first_sample.set()
            return
        self.samples += 1
        self.first_sample.set()
        if self.provisional:
            self.srtt, self.provisional = None, False
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt

    def record_answer(self, tries: int) -> None:
        """A question was answered after `tries` tries: tries-1 of them count as lost."""
        self.answered_tries += tries
        self.lost_tries += tries - 1

    @property
    def loss(self) -> float:
        """Round-trip loss per try from answered transactions. A weak prior (half a loss in 5 tries) keeps the
        first lucky samples from claiming a clean path, gives 4 tries on a path that really is clean and lets a
        few observed losses count."""
        return (self.lost_tries + PRIOR_LOST) / (self.answered_tries + PRIOR_ANSWERED)

    def tries_for_negative(self) -> int:
        """How many tries a question needs before its silence is a negative answer (loss-aware)."""
        return tries_for_evidence(self.lost_tries, self.answered_tries)

    @property
    def rto(self) -> float:
        if self.srtt is None:
            return INITIAL_RTO
        return max(MIN_RTO, self.srtt * 1.5 + 2 * self.rttvar + 0.01)

    def pace(self) -> float:
        """The gap between the tries of one question after the first RTO: half an RTT, so that the tries are
        spread over a few RTTs (bursty loss on a real link does not take them all) without waiting an RTO for
        each; before any RTT is known, an RTO."""
        return self.rto if self.srtt is None else max(MIN_PACE, self.srtt / 2)

    def negative_wait(self, rtos: float | None = None) -> float:
        """How long to wait for an answer that may never come: `rtos` retransmission timeouts if given, else
        time for as many paced tries as the loss seen so far requires (4..8; `paced_wait`)."""
        rto = self.rto
        wait = rto * rtos if rtos is not None else paced_wait(rto, self.pace(), self.tries_for_negative())
        return wait if self.srtt is None else max(MIN_NEGATIVE, wait)


class PerServerRtt:
    """RFC 8489 adaptive mode (`Rfc8489Retransmit(adaptive=True)`): one RFC 6298 SRTT/RTTVAR per server IP,
    sampled only from replies to first transmissions (Karn's rule). Unlike SharedRtt, which pools every
    transaction of a diagnosis into one estimate and tracks loss, each server here keeps its own."""

    __slots__ = ("_estimates",)

    def __init__(self) -> None:
        self._estimates: dict[str, tuple[float, float]] = {}
        """server IP -> (srtt, rttvar)"""

    def sample(self, server: str, rtt: float) -> None:
        est = self._estimates.get(server)
        if est is None:
            self._estimates[server] = (rtt, rtt / 2)
            return
        srtt, rttvar = est
        self._estimates[server] = (0.875 * srtt + 0.125 * rtt, 0.75 * rttvar + 0.25 * abs(srtt - rtt))

    def rto(self, server: str, min_rto: float, max_rto: float) -> float | None:
        """SRTT + 4 RTTVAR clamped to [min_rto, max_rto]; None before the server's first sample."""
        est = self._estimates.get(server)
        if est is None:
            return None
        return min(max(est[0] + 4 * est[1], min_rto), max_rto)
