"""When to probe, when to check, how far to back off: pure functions of the state, the policy and the time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nodereach.watch.policy import Policy

if TYPE_CHECKING:
    from nodereach.watch.detect import WatchState


def server_delay(failures: int, policy: Policy) -> float:
    """Seconds until a server that failed `failures` probes in a row is asked again.

    Below the hysteresis it is asked at the normal interval (a lost packet is not an outage); from then on
    the wait doubles per failure, capped at `server_backoff_max` (never below the interval).
    """
    if failures < policy.hysteresis:
        return policy.interval
    cap = max(policy.interval, policy.server_backoff_max)
    exponent = failures - policy.hysteresis + 1
    return min(cap, policy.interval * 2.0 ** min(exponent, 30))


def check_period(policy: Policy, jitter_u: float) -> float:
    """The periodic check's spacing: `check_period` +- `check_jitter`, with `jitter_u` uniform in [0, 1).

    The jitter keeps a fleet of watchers started together (a power cut, a deploy) from checking in step."""
    return policy.check_period * (1.0 + policy.check_jitter * (2.0 * jitter_u - 1.0))


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
