"""A virtual Clock for the port-mapping keeper: tests move time forward; nothing sleeps for real.

`advance(s)` walks through every deadline the keeper waits for, in order, and after each one lets the keeper
do its work until it waits on the clock again (`parks`), so a test sees exactly what happened by then.
"""

from __future__ import annotations

import asyncio

SETTLE_S = 5.0
"""Real seconds the keeper may take to park again after a wake-up (its work is in-memory or loopback)."""


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.parks = 0
        """How many times the keeper has started waiting on this clock."""
        self._timers: list[tuple[float, asyncio.Future[None]]] = []
        self._parked = asyncio.Event()

    def time(self) -> float:
        return self.now

    async def wait(self, wake: asyncio.Event, deadline: float) -> None:
        if wake.is_set() or deadline <= self.now:
            return
        timer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (deadline, timer)
        self._timers.append(entry)
        self.parks += 1
        self._parked.set()
        woken = asyncio.ensure_future(wake.wait())
        try:
            await asyncio.wait([timer, woken], return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            self._timers.remove(entry)

    @property
    def next_deadline(self) -> float | None:
        return min((d for d, _ in self._timers), default=None)

    async def parked_after(self, parks: int) -> None:
        """Until the keeper waits on the clock again (after `parks` earlier waits): its work is done."""
        loop = asyncio.get_running_loop()
        end = loop.time() + SETTLE_S
        while self.parks <= parks:
            self._parked.clear()
            remaining = end - loop.time()
            if remaining <= 0:
                raise AssertionError("the keeper did not wait on the clock again (crashed or busy)")
            try:
                async with asyncio.timeout(remaining):
                    await self._parked.wait()
            except TimeoutError:
                continue

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, firing each deadline in order and letting the keeper react."""
        target = self.now + seconds
        while True:
            due = [entry for entry in self._timers if entry[0] <= target and not entry[1].done()]
            if not due:
                self.now = max(self.now, target)
                await asyncio.sleep(0)
                return
            deadline, timer = min(due, key=lambda e: e[0])
            self.now = max(self.now, deadline)
            parks = self.parks
            timer.set_result(None)
            await self.parked_after(parks)
