"""When to probe and when to check: pure functions of the state, the policy and the time (how far to back off
and how to space the checks are the policy's own: `Policy.server_delay`, `Policy.check_spacing`, which the
detector uses; this module reads the detector's state, never the other way round)."""

from __future__ import annotations

from nodereach.watch.policy import Policy
from nodereach.watch.state import WatchState


def probe_delay(state: WatchState, policy: Policy) -> float:
    """The next probe round: the confirm interval while a change waits for confirmation, else the interval."""
    return policy.confirm_interval if state.probe_pending() else policy.interval


def due_servers(state: WatchState, now: float) -> list[str]:
    """Servers to ask in a probe round at `now`: those due, and while a change is pending every healthy one
    (its confirmation needs answers); a server in backoff waits for its own time."""
    pending = state.probe_pending()
    due = []
    for name, h in state.servers.items():
        healthy = h.failures == 0
        if now >= h.next_due or (pending and healthy):
            due.append(name)
    return due


def check_due(state: WatchState, now: float, policy: Policy) -> bool:
    if now >= state.next_check:
        return True
    if not state.check_requested:
        return False
    return state.last_check_end is None or now - state.last_check_end >= policy.min_check_gap


def check_wait(state: WatchState, now: float, policy: Policy) -> float:
    """Seconds until the next full check is due (0 when due now)."""
    at = state.next_check
    if state.check_requested:
        gap_end = now if state.last_check_end is None else state.last_check_end + policy.min_check_gap
        at = min(at, max(now, gap_end))
    return max(0.0, at - now)


def tick_at(state: WatchState, policy: Policy) -> float | None:
    """Monotonic time something becomes due by time alone (the grace period's end, inbound peers at zero long
    enough), or None."""
    times = []
    if not state.grace_over:
        times.append(state.grace_until)
    if state.inbound_zero_since is not None and state.inbound_zero.declared is not True:
        times.append(max(state.inbound_zero_since, state.grace_until) + policy.inbound_zero_after)
    return min(times) if times else None
