"""The watcher's knobs, their defaults and why (docs/watch.md has the same table with the costs).

Detection bound for a cheap fact (public address, listener): a change is seen at the next probe (within
`interval`), then confirmed by `hysteresis - 1` more probes spaced `confirm_interval` apart, so it is declared
at most `interval + (hysteresis - 1) * confirm_interval` after it happened (70 s at the defaults). A fact the
full check decides (a port's reachability, NAT layers) follows a declared cheap change with one check (its
trigger already passed the hysteresis), or else needs `check_confirmations` checks in a row, the second one
`confirm_check_delay` after the first.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_INTERVAL_S = 60.0
"""Cheap probe period. One STUN Binding per server per minute is ~0.1 kB/min toward each server and one
`serve` answers 10,000 watchers with ~170 requests/s; a minute also matches Prometheus' usual scrape period."""
DEFAULT_CONFIRM_INTERVAL_S = 5.0
"""While a change is pending confirmation the probes come this often, so hysteresis costs seconds, not minutes."""
DEFAULT_HYSTERESIS = 3
"""Consecutive probes a new value must hold before it is declared: one lost packet or a restarting node never
pages anyone (a single STUN probe already retransmits 3 times)."""
DEFAULT_CHECK_CONFIRMATIONS = 2
"""Full checks in a row that must agree before a change they alone see (no cheap trigger) is declared."""
DEFAULT_CHECK_PERIOD_S = 900.0
"""A full check every 15 min (+-10% jitter) finds what no cheap probe sees (a provider filter, UPnP switched
off) well within the 10 min + period an alert waits; it costs about one dial-back probe per port."""
DEFAULT_CHECK_JITTER = 0.1
DEFAULT_CONFIRM_CHECK_DELAY_S = 30.0
DEFAULT_MIN_CHECK_GAP_S = 30.0
"""Triggered checks are never closer than this (a flapping line must not turn into a dial-back flood)."""
DEFAULT_GRACE_S = 300.0
"""After start-up, node facts (listener, ports, reachability, peers, advertised address) are exported but
raise no event for 5 min: a node that has just started is still binding its ports and finding peers."""
DEFAULT_INBOUND_ZERO_S = 1800.0
"""Inbound peers at zero for this long (after the grace period) is an event, as the alert rule's 30 min."""
DEFAULT_SERVER_BACKOFF_MAX_S = 900.0
"""A server that stopped answering is asked less and less often (doubling), at least every 15 min."""
BACKOFF_INTERVALS = 15
"""With a shorter interval the cap is 15 intervals: a fast watcher finds its server back as fast, relatively."""


def server_backoff_cap(interval: float) -> float:
    """The longest wait between two probes of a silent server: 15 intervals, at most 15 min (but never less
    than one interval)."""
    return max(interval, min(BACKOFF_INTERVALS * interval, DEFAULT_SERVER_BACKOFF_MAX_S))
DEFAULT_CHECK_TIMEOUT_S = 5.0
DEFAULT_LEASE_S = 3600
"""--keep-mapped asks for an hour, as `nodereach open` does; the keeper renews at half of what is granted."""


@dataclass(frozen=True, slots=True)
class Policy:
    interval: float = DEFAULT_INTERVAL_S
    confirm_interval: float = DEFAULT_CONFIRM_INTERVAL_S
    hysteresis: int = DEFAULT_HYSTERESIS
    check_confirmations: int = DEFAULT_CHECK_CONFIRMATIONS
    check_period: float = DEFAULT_CHECK_PERIOD_S
    check_jitter: float = DEFAULT_CHECK_JITTER
    confirm_check_delay: float = DEFAULT_CONFIRM_CHECK_DELAY_S
    min_check_gap: float = DEFAULT_MIN_CHECK_GAP_S
    grace: float = DEFAULT_GRACE_S
    inbound_zero_after: float = DEFAULT_INBOUND_ZERO_S
    server_backoff_max: float = DEFAULT_SERVER_BACKOFF_MAX_S
    check_timeout: float = DEFAULT_CHECK_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.hysteresis < 1 or self.check_confirmations < 1:
            raise ValueError("hysteresis and check confirmations must be at least 1")
        if self.interval <= 0 or self.confirm_interval <= 0 or self.check_period <= 0:
            raise ValueError("intervals must be positive")
        if not 0 <= self.check_jitter < 1:
            raise ValueError("check jitter must be in [0, 1)")

    @property
    def detection_bound_s(self) -> float:
        """How long after a cheap change it is declared at the latest (servers answering)."""
        return self.interval + (self.hysteresis - 1) * self.confirm_interval

    def server_delay(self, failures: int) -> float:
        """Seconds until a server that failed `failures` probes in a row is asked again.

        Below the hysteresis it is asked at the normal interval (a lost packet is not an outage); from then on
        the wait doubles per failure, capped at `server_backoff_max` (never below the interval).
        """
        if failures < self.hysteresis:
            return self.interval
        cap = max(self.interval, self.server_backoff_max)
        exponent = failures - self.hysteresis + 1
        return min(cap, self.interval * 2.0 ** min(exponent, 30))

    def check_spacing(self, jitter_u: float) -> float:
        """The periodic check's spacing: `check_period` +- `check_jitter`, with `jitter_u` uniform in [0, 1).

        The jitter keeps a fleet of watchers started together (a power cut, a deploy) from checking in step."""
        return self.check_period * (1.0 + self.check_jitter * (2.0 * jitter_u - 1.0))
