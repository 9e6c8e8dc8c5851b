"""Abuse limits for the dial-back service: pure logic with an injected clock (tested without sockets).

A dial-back server sends packets on request, so it must never become a scanner or a reflector:
- per-address and per-network (/24 for IPv4, /56 for IPv6) token buckets,
- a cap on distinct ports one address may have probed in a window (port scans through us),
- per-address and global caps on probes in flight,
- a refused port list,
- memory bounded by an LRU cap on tracked addresses and networks (the oldest are forgotten first).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass, field

from nodereach.net import IPAddress, parse_ip, unmap

DEFAULT_REFUSED_PORTS = "0-79,81-442,444-1023"
"""Privileged ports are system services (mail, DNS, SSH...), not P2P nodes; 80 and 443 stay allowed because
some nodes listen there to pass restrictive firewalls."""


def parse_port_ranges(spec: str) -> frozenset[int]:
    """'25,0-79,6000-6010' -> set of ports. Raises ValueError with a readable message."""
    ports: set[int] = set()
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        lo_s, _, hi_s = part.partition("-")
        try:
            lo = int(lo_s)
            hi = int(hi_s) if hi_s else lo
        except ValueError:
            raise ValueError(f"bad port range {part!r}") from None
        if not 0 <= lo <= hi <= 65535:
            raise ValueError(f"bad port range {part!r}")
        ports.update(range(lo, hi + 1))
    return frozenset(ports)


MAX_IN_FLIGHT_PER_ADDRESS = 4
"""Default cap on one address's probes running at once. A client that asks several probes at once (nodereach
check: every --port, TCP ones twice) stays within it, or the last ones are refused as busy."""


@dataclass(frozen=True)
class LimitsConfig:
    address_rate: float = 1.0
    """Probes per second an address earns back (sustained)."""
    address_burst: float = 10.0
    network_rate: float = 4.0
    network_burst: float = 40.0
    max_ports_per_window: int = 16
    """Distinct ports one address may have probed within port_window_s; more looks like a scan."""
    port_window_s: float = 600.0
    max_in_flight_per_address: int = MAX_IN_FLIGHT_PER_ADDRESS
    max_in_flight: int = 64
    max_tracked: int = 100_000
    """Addresses (and separately networks) remembered; beyond that the least recently seen are dropped."""
    refused_ports: frozenset[int] = field(default_factory=lambda: parse_port_ranges(DEFAULT_REFUSED_PORTS))


def network_of(address: IPAddress) -> str:
    """The /24 (IPv4) or /56 (IPv6) a subscriber typically owns: the unit for the network limit."""
    address = unmap(address)
    prefix = 24 if address.version == 4 else 56
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


class _Bucket:
    __slots__ = ("in_flight", "last", "ports", "tokens")

    def __init__(self, burst: float, now: float) -> None:
        self.tokens = burst
        self.last = now
        self.ports: dict[int, float] | None = None
        self.in_flight = 0

    def refill(self, rate: float, burst: float, now: float) -> None:
        self.tokens = min(burst, self.tokens + max(0.0, now - self.last) * rate)
        self.last = now


class Limiter:
    """Decides whether a probe may start; `admit` returns None (go) or the rejection reason."""

    def __init__(self, config: LimitsConfig) -> None:
        self.config = config
        self._addresses: OrderedDict[str, _Bucket] = OrderedDict()
        self._networks: OrderedDict[str, _Bucket] = OrderedDict()
        self.in_flight = 0
        self.evictions = 0

    def _get(self, table: OrderedDict[str, _Bucket], key: str, burst: float, now: float) -> _Bucket:
        bucket = table.get(key)
        if bucket is None:
            bucket = table[key] = _Bucket(burst, now)
            while len(table) > self.config.max_tracked:
                # Never forget an address with probes in flight: its counter must come back to zero.
                old_key, old = next(iter(table.items()))
                if old.in_flight:
                    table.move_to_end(old_key)
                    if next(iter(table.values())).in_flight:
                        break
                    continue
                table.popitem(last=False)
                self.evictions += 1
        else:
            table.move_to_end(key)
        return bucket

    def admit(self, address: IPAddress, port: int, now: float) -> str | None:
        cfg = self.config
        if port in cfg.refused_ports:
            return "refused-port"
        if self.in_flight >= cfg.max_in_flight:
            return "busy"
        addr = self._get(self._addresses, str(address), cfg.address_burst, now)
        if addr.in_flight >= cfg.max_in_flight_per_address:
            return "too-many-in-flight"
        if addr.ports is not None:
            cutoff = now - cfg.port_window_s
            for p in [p for p, t in addr.ports.items() if t < cutoff]:
                del addr.ports[p]
            if port not in addr.ports and len(addr.ports) >= cfg.max_ports_per_window:
                return "too-many-ports"
        addr.refill(cfg.address_rate, cfg.address_burst, now)
        if addr.tokens < 1.0:
            return "rate-limited-address"
        net = self._get(self._networks, network_of(address), cfg.network_burst, now)
        net.refill(cfg.network_rate, cfg.network_burst, now)
        if net.tokens < 1.0:
            return "rate-limited-network"
        addr.tokens -= 1.0
        net.tokens -= 1.0
        if addr.ports is None:
            addr.ports = {}
        addr.ports[port] = now
        addr.in_flight += 1
        self.in_flight += 1
        return None

    def release(self, address: IPAddress) -> None:
        """A probe admitted for this address finished (call exactly once per admitted probe)."""
        self.in_flight -= 1
        bucket = self._addresses.get(str(address))
        if bucket is not None and bucket.in_flight > 0:
            bucket.in_flight -= 1

    def retry_after(self, address: IPAddress) -> float:
        """Seconds until this address earns one probe back (for the Retry-After header)."""
        cfg = self.config
        bucket = self._addresses.get(str(address))
        if bucket is None or bucket.tokens >= 1.0:
            return 1.0
        return max(1.0, (1.0 - bucket.tokens) / cfg.address_rate)

    @property
    def tracked_addresses(self) -> int:
        return len(self._addresses)

    @property
    def tracked_networks(self) -> int:
        return len(self._networks)


def parse_networks(specs: list[str] | tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(s.strip(), strict=False) for s in specs if s.strip())


def client_address(peer: str, forwarded_for: str | None,
                   trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> IPAddress:
    """The address to test. X-Forwarded-For counts only when the TCP peer is a trusted proxy; then the
    right-most entry that is not itself a trusted proxy is the client (entries left of it are client-made).
    Raises ValueError when nothing usable is found."""
    addr = unmap(parse_ip(peer))
    if not forwarded_for or not any(addr in net for net in trusted):
        return addr
    for entry in reversed([e.strip() for e in forwarded_for.split(",")][:32]):
        try:
            hop = unmap(parse_ip(entry))
        except ValueError:
            raise ValueError(f"bad X-Forwarded-For entry {entry[:64]!r}") from None
        if not any(hop in net for net in trusted):
            return hop
    return addr
