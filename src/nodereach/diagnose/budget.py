"""Time for the check's probes: one RTT and loss estimate for the whole run, deadlines derived from it,
none past the run's hard end.

Every probe gets a `Context` (the shared estimate and the budget) as an argument: no probe waits a fixed
time, and a deadline is a callable re-read after every wait, so it tightens as the RTT becomes known and
widens as loss is seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from functools import partial

import msgspec

from nodereach.stun.rtt import SharedRtt

END_MARGIN_S = 0.15
"""The probes stop this long before --timeout: the verdict and the output still fit."""
BLIND_MIN_S, BLIND_MAX_S, BLIND_SHARE = 0.5, 2.0, 0.4
"""How long to wait for a first answer from anybody (no RTT known yet): a share of --timeout, bounded."""
MIN_PACE_S = 0.01
MIN_NEGATIVE_S = 0.12
"""Never call silence "no" sooner than this (a scheduling hiccup on a busy host is not an answer)."""


def paced_wait(rto: float, srtt: float, tries: int) -> float:
    """How long a question asked `tries` times takes to become a "no" (diagnose.probes.ask): the first try,
    an RTO for its answer, then the other tries SRTT/2 apart, an RTO for the last one's answer."""
    return 2 * rto + max(0, tries - 2) * pace(srtt)


def pace(srtt: float) -> float:
    """The gap between the repeated tries of one question: half an RTT, so that the tries are spread over a
    few RTTs (bursty loss on a real link does not take them all) without waiting an RTO for each."""
    return max(MIN_PACE_S, srtt / 2)


class Budget:
    """Deadlines from the shared RTT estimate, never past the hard end of the run."""

    def __init__(self, start: float, timeout: float, rtt: SharedRtt) -> None:
        self.start = start
        self.end = start + max(0.3, timeout - END_MARGIN_S)
        self.rtt = rtt
        self.blind = min(BLIND_MAX_S, max(BLIND_MIN_S, timeout * BLIND_SHARE))
        """How long to wait for a first answer from anybody (no RTT known yet)."""

    def negative(self, sent_at: float, rtos: float | None = None) -> float:
        """Deadline for an answer to a question first asked at `sent_at` that may never come: `rtos` RTOs, or by
        default time for as many paced tries (probes.ask) as the loss measured so far requires for < 1e-4
        chance of a wrong "no" (re-read: it follows the estimate as evidence arrives)."""
        srtt = self.rtt.srtt
        if srtt is None:
            return min(self.end, sent_at + self.blind)
        if rtos is not None:
            return min(self.end, sent_at + self.rtt.negative_wait(rtos))
        wait = max(MIN_NEGATIVE_S, paced_wait(self.rtt.rto, srtt, self.rtt.tries_for_negative()))
        return min(self.end, sent_at + wait)

    def negative_from_now(self, rtos: float | None = None) -> partial[float]:
        """`negative` for a request sent now, as the callable a STUN transaction re-reads."""
        return partial(self.negative, time.monotonic(), rtos)

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())


class Context(msgspec.Struct, frozen=True):
    """What every probe of one run shares: the RTT/loss estimate and the time budget."""

    rtt: SharedRtt
    budget: Budget

    def rto(self) -> float:
        """The current retransmission timeout (a callable for probes that re-read it)."""
        return self.rtt.rto

    def pace(self) -> float:
        """The gap between repeated tries of one question (see `pace`); before any RTT: an RTO."""
        return pace(self.rtt.srtt) if self.rtt.srtt is not None else self.rtt.rto

    def tries(self) -> int:
        """How often a question is asked before its silence counts as "no" (from the loss seen so far)."""
        return self.rtt.tries_for_negative()

    def record_lost(self, tries: int) -> None:
        """Loss evidence from tries that were never answered while a later one was (SharedRtt counts an
        answered transaction's own unanswered sends; these were separate transactions)."""
        self.rtt.answered_tries += tries
        self.rtt.lost_tries += tries

    async def first_rtt(self) -> None:
        """Wait (bounded) until some reply gave an RTT, so later deadlines can derive from it."""
        if self.rtt.srtt is not None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, min(self.budget.blind, self.budget.left()))):
                await self.rtt.first_sample.wait()
