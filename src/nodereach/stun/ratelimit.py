"""Per-source token buckets with bounded memory, so one flooding address cannot starve the others."""

from __future__ import annotations

import time
from collections import OrderedDict


class SourceRateLimiter:
    """Token bucket per source IP (as GCRA: one float per source), at most `max_sources` sources tracked,
    least recently seen evicted first.

    GCRA keeps a "theoretical arrival time" instead of (tokens, last): the same admission decisions as a
    bucket of `burst` tokens refilled at `rate_per_s`, with one float per source (~170 bytes per source
    including the dict slot and the address string). Eviction only forgets a source's debt: a spoofed flood
    cycling through more than max_sources addresses lets an evicted source start again with a full bucket;
    memory stays bounded regardless. rate_per_s <= 0 disables limiting.
    """

    __slots__ = ("_interval", "_sources", "_tau", "burst", "max_sources", "rate")

    def __init__(self, rate_per_s: float, burst: float, max_sources: int) -> None:
        if max_sources < 1:
            raise ValueError("max_sources must be >= 1")
        self.rate = rate_per_s
        self.burst = max(burst, 1.0)
        self.max_sources = max_sources
        self._interval = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
        self._tau = (self.burst - 1.0) * self._interval
        self._sources: OrderedDict[str, float] = OrderedDict()

    def allow(self, source: str, now: float | None = None) -> bool:
        """Take one token for source; False when its bucket is empty."""
        if self.rate <= 0:
            return True
        if now is None:
            now = time.monotonic()
        sources = self._sources
        tat = sources.get(source)
        if tat is None:
            if len(sources) >= self.max_sources:
                sources.popitem(last=False)
            sources[source] = now + self._interval
            return True
        sources.move_to_end(source)
        if tat < now:
            tat = now
        if tat - now > self._tau:
            return False
        sources[source] = tat + self._interval
        return True

    def __len__(self) -> int:
        return len(self._sources)
