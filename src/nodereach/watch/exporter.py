"""The Prometheus exporter: the detector's declared state as gauges, plus the check-duration histogram, the
error counter, and the process's own CPU and memory (process_*), on `--metrics HOST:PORT`.

The gauges are computed at scrape time from the state of that moment (samples.py): a series whose value is
gone (an old public address) disappears instead of lingering. The HTTP server is prometheus-client's own,
in a thread; the state it reads is an immutable value the watcher replaces, so no lock is needed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from nodereach.errors import UsageError
from nodereach.watch.model import ERROR_KINDS, ErrorKind
from nodereach.watch.samples import GAUGES, Sample

DEFAULT_METRICS_HOST = "127.0.0.1"
DEFAULT_METRICS_PORT = 3481
"""Next to `serve`'s 3478-3480, outside Prometheus' exporter range 9100-9999 (fully allocated since 2023) and
its own 9090-9094, and not a port node software uses (docs/watch.md)."""
CHECK_BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0)


class _StateCollector(Collector):
    def __init__(self, read: Callable[[], list[Sample]]) -> None:
        self.read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            current = self.read()
        except Exception:  # a scrape must never fail because the watcher is between two states
            return []
        families: dict[str, GaugeMetricFamily] = {}
        for s in current:
            fam = families.get(s.name)
            if fam is None:
                fam = families[s.name] = GaugeMetricFamily(s.name, GAUGES[s.name], labels=[k for k, _v in s.labels])
            fam.add_metric([v for _k, v in s.labels], s.value)
        return list(families.values())

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []


class WatchMetrics:
    def __init__(self, read: Callable[[], list[Sample]], *, process: bool = True) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus-client leaves it unannotated; *_created series are noise here
        self.registry = CollectorRegistry()
        self.registry.register(_StateCollector(read))
        self.check_duration = Histogram("nodereach_check_duration_seconds", "Duration of the watcher's full checks",
                                        buckets=CHECK_BUCKETS, registry=self.registry)
        self.errors = Counter("nodereach_watch_errors", "Failed attempts, by kind (a server that did not answer, a "
                              "check that could not tell, an unreadable node RPC, a hook that failed, ...)",
                              ["kind"], registry=self.registry)
        for kind in ERROR_KINDS:
            self.errors.labels(kind)  # every kind exported from the start, so rate() and increase() work at once
        if process:
            ProcessCollector(registry=self.registry)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def error(self, kind: ErrorKind) -> None:
        self.errors.labels(kind).inc()

    def serve(self, host: str, port: int) -> tuple[str, int]:
        """Start the HTTP exporter; returns the bound address. UsageError when the port is taken."""
        from prometheus_client import start_http_server

        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise UsageError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}",
                             "pick another --metrics HOST:PORT, or --metrics off") from None
        bound = self._server.server_address
        return str(bound[0]), int(bound[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
