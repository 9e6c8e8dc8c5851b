"""The keeper's sense of time: a small seam so tests drive renewals and restarts on a virtual clock.

The keeper and the PCP/NAT-PMP drivers read time only through a Clock (epoch checks compare the gateway's
clock with ours) and wait only through `Clock.wait`. Production uses the event loop's monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Monotonic seconds."""
        ...

    async def wait(self, wake: asyncio.Event, deadline: float) -> None:
        """Return when `wake` is set or time() reaches `deadline`, whichever comes first."""
        ...


class LoopClock:
    """The running event loop's clock (loop.time(), monotonic)."""

    def time(self) -> float:
        return asyncio.get_running_loop().time()

    async def wait(self, wake: asyncio.Event, deadline: float) -> None:
        if wake.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await wake.wait()


REAL_CLOCK: Clock = LoopClock()
