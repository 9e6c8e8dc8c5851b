"""Prometheus metrics of the serve process (one registry per server instance, so tests can run several)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus-client leaves it unannotated; the *_created series double the output and nobody graphs them
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_requests = Counter("nodereach_http_requests", "HTTP requests by endpoint and status",
                                     ["endpoint", "status"], registry=r)
        self.http_seconds = Histogram("nodereach_http_request_seconds", "HTTP request latency", ["endpoint"],
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.probes = Counter("nodereach_probes", "Dial-back probes by protocol and outcome (reason)",
                              ["protocol", "outcome"], registry=r)
        self.probe_seconds = Histogram("nodereach_probe_seconds", "Dial-back probe duration", ["protocol"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.proofs = Counter("nodereach_proofs", "Protocol proofs by protocol and result (ok, failed)",
                              ["protocol", "result"], registry=r)
        self.rejected = Counter("nodereach_probes_rejected", "Probe requests refused, by reason "
                                "(rate-limited-address, rate-limited-network, busy, refused-port, bad-request, ...)",
                                ["reason"], registry=r)
        self.in_flight = Gauge("nodereach_probes_in_flight", "Probes running now", registry=r)
        self.bytes_sent = Counter("nodereach_probe_bytes_sent", "Bytes sent by probes (on-wire estimate)",
                                  registry=r)
        self.tracked = Gauge("nodereach_limiter_tracked", "Addresses and networks the rate limiter remembers",
                             ["kind"], registry=r)
        self.connections = Gauge("nodereach_http_connections", "Open HTTP connections", registry=r)

    def add_collector(self, collector: Collector) -> None:
        self.registry.register(collector)


class StatsCollector(Collector):
    """Exports a stats object's numeric fields (e.g. the STUN server's counters) as Prometheus metrics.

    `read` returns {name: value}; names ending in `_total` or listed in `counters` become counters.
    """

    def __init__(self, prefix: str, read: Callable[[], dict[str, float]], counters: Iterable[str] = ()) -> None:
        self.prefix = prefix
        self.read = read
        self.counters = set(counters)

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        try:
            values = self.read()
        except Exception:  # a metrics scrape must never fail because a component is shutting down
            return []
        out: list[CounterMetricFamily | GaugeMetricFamily] = []
        for name, value in sorted(values.items()):
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            base = name.removesuffix("_total")
            if name.endswith("_total") or name in self.counters:
                out.append(CounterMetricFamily(f"{self.prefix}_{base}", f"{self.prefix} {base}", value=value))
            else:
                out.append(GaugeMetricFamily(f"{self.prefix}_{name}", f"{self.prefix} {name}", value=value))
        return out

    def describe(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        return []


class LabeledCounters(Collector):
    """One counter family from a live {label value: count} dict (counts kept by a component, e.g. the guard)."""

    def __init__(self, name: str, doc: str, label: str, read: Callable[[], dict[str, int]]) -> None:
        self.name, self.doc, self.label, self.read = name, doc, label, read

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.doc, labels=[self.label])
        for value, count in sorted(self.read().items()):
            family.add_metric([value], count)
        return [family]

    def describe(self) -> Iterable[CounterMetricFamily]:
        return []
