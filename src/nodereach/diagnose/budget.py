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
        default time for as many paced tries (stun.transaction.Question) as the loss measured so far requires
        for < 1e-4 chance of a wrong "no" (SharedRtt.negative_wait; re-read: it follows the estimate as
        evidence arrives). Before any RTT is known: the blind wait."""
        if self.rtt.srtt is None:
            return min(self.end, sent_at + self.blind)
        return min(self.end, sent_at + self.rtt.negative_wait(rtos))

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

    async def first_rtt(self) -> None:
        """Wait (bounded) until some reply gave an RTT, so later deadlines can derive from it."""
        if self.rtt.srtt is not None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, min(self.budget.blind, self.budget.left()))):
                await self.rtt.first_sample.wait()
