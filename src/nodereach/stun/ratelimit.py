"""Per-source token buckets with bounded memory, so one flooding address cannot starve the others."""

from __future__ import annotations

import time
from collections import OrderedDict


class SourceRateLimiter:
    """Token bucket per source IP, at most `max_sources` buckets (least recently seen evicted first).

    Eviction only forgets a source's debt: a spoofed flood that cycles through more than max_sources
    addresses lets an evicted source start again with a full bucket; memory stays bounded regardless.
    Each bucket is a 2-slot list [tokens, last_seen] (~200 bytes per source with the dict slot and key).
    rate_per_s <= 0 disables limiting.
    """

    __slots__ = ("_buckets", "burst", "max_sources", "rate")

    def __init__(self, rate_per_s: float, burst: float, max_sources: int) -> None:
        if max_sources < 1:
            raise ValueError("max_sources must be >= 1")
        self.rate = rate_per_s
        self.burst = max(burst, 1.0)
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def allow(self, source: str, now: float | None = None) -> bool:
        """Take one token for source; False when its bucket is empty."""
        if self.rate <= 0:
            return True
        if now is None:
            now = time.monotonic()
        buckets = self._buckets
        b = buckets.get(source)
        if b is None:
            if len(buckets) >= self.max_sources:
                buckets.popitem(last=False)
            buckets[source] = [self.burst - 1.0, now]
            return True
        buckets.move_to_end(source)
        tokens = b[0] + (now - b[1]) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        b[1] = now
        if tokens < 1.0:
            b[0] = tokens
            return False
        b[0] = tokens - 1.0
        return True

    def __len__(self) -> int:
        return len(self._buckets)
