"""Gateway restart detection from server epochs, as pure functions (RFC 6887 §8.5, RFC 6886 §3.6).

A gateway that reboots loses its mappings and restarts its epoch counter; clients notice because the epoch
does not advance the way their own clock did, and must re-create every mapping at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class EpochSample:
    """The server's epoch value and the client's monotonic clock (seconds) when it arrived."""

    server_time: int
    client_time: float


def pcp_epoch_valid(prev: EpochSample | None, cur: EpochSample) -> bool:
    """RFC 6887 §8.5: False means the server lost state (restart) since `prev`."""
    if prev is None:
        return True
    if cur.server_time + 1 < prev.server_time:
        return False
    client_delta = cur.client_time - prev.client_time
    server_delta = cur.server_time - prev.server_time
    if client_delta + 2 < server_delta - server_delta / 16:
        return False
    return not server_delta + 2 < client_delta - client_delta / 16


def natpmp_epoch_valid(prev: EpochSample | None, cur: EpochSample) -> bool:
    """RFC 6886 §3.6: the epoch must be at least prev + 7/8 of the client's elapsed time, minus 2 s."""
    if prev is None:
        return True
    expected = prev.server_time + (cur.client_time - prev.client_time) * 7 / 8
    return cur.server_time >= expected - 2


class EpochTracker:
    """Stateful wrapper: feed every reply's epoch; returns False once per detected restart."""

    def __init__(self, rule: Literal["pcp", "natpmp"]) -> None:
        self._check = pcp_epoch_valid if rule == "pcp" else natpmp_epoch_valid
        self._prev: EpochSample | None = None

    def observe(self, server_time: int, client_time: float) -> bool:
        cur = EpochSample(server_time, client_time)
        valid = self._check(self._prev, cur)
        self._prev = cur
        return valid

    def reset(self) -> None:
        self._prev = None
