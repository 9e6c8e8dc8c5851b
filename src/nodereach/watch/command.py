"""`nodereach watch`: build the options, wire the probes, detector, exporter, events and hooks, run until
SIGTERM/SIGINT (then the mappings it kept are deleted and a `stopped` event is written). Exit 0."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from nodereach.watch.config import Settings, WatchOptions, build
from nodereach.watch.events import EventWriter, to_event
from nodereach.watch.exporter import WatchMetrics
from nodereach.watch.hooks import HookSink, command_deliver, webhook_deliver
from nodereach.watch.listeners import HostListeners
from nodereach.watch.loop import RealClock, Watcher
from nodereach.watch.model import Change, CheckObservation, ErrorKind, MappingObservation
from nodereach.watch.nodeview import NodeSource, open_node
from nodereach.watch.probes import StunProber
from nodereach.watch.samples import samples

HOOK_DRAIN_S = 3.0


def run_watch(flags: Settings, config: Path | None) -> int:
    opts = build(flags, config)
    node = open_node(opts.node) if opts.node else None
    return asyncio.run(_main(opts, node))


def describe(opts: WatchOptions, metrics_at: tuple[str, int] | None) -> str:
    ports = ", ".join(str(p) for p in opts.ports) or "no ports (public address and NAT only)"
    servers = ", ".join(s.label for s in opts.stun_servers)
    parts = [f"watching {ports} through {servers} every {opts.policy.interval:g} s",
             f"full check every {opts.policy.check_period:g} s (+-{opts.policy.check_jitter:.0%})"]
    if opts.builtin_servers:
        parts.append("no nodereach server given: public STUN only, reachability not proven from outside")
    if opts.keep_mapped:
        fams = opts.keep_mapped_families
        which = "every family the host has" if fams is None else " and ".join(f"IPv{f}" for f in fams)
        parts.append(f"keeping the ports mapped ({which})")
    if metrics_at:
        host, port = metrics_at
        parts.append(f"metrics on http://{'[' + host + ']' if ':' in host else host}:{port}/metrics")
    return "; ".join(parts)


async def _main(opts: WatchOptions, node: NodeSource | None) -> int:
    clock = RealClock()
    pol = opts.policy
    holder: list[Watcher] = []
    metrics = WatchMetrics(lambda: samples(holder[0].snapshot(), clock.mono()) if holder else [])
    metrics_at = metrics.serve(*opts.metrics) if opts.metrics else None
    writer = EventWriter()
    sinks: list[HookSink] = []
    closers = []
    if opts.on_change:
        sinks.append(HookSink("on-change", command_deliver(opts.on_change), metrics.error, timeout=opts.hook_timeout))
    if opts.webhook:
        deliver, close = webhook_deliver(opts.webhook)
        sinks.append(HookSink("webhook", deliver, metrics.error, timeout=opts.hook_timeout))
        closers.append(close)
    for sink in sinks:
        sink.start()

    def emit(change: Change) -> None:
        event = to_event(change)
        line = writer.write(event)
        for sink in sinks:
            sink.put(change.kind, line)

    def error(kind: ErrorKind) -> None:
        metrics.error(kind)

    stun = StunProber(list(opts.stun_servers))
    server_texts = list(opts.servers)
    port_texts = [str(p) for p in opts.ports]

    async def check() -> CheckObservation:
        from nodereach.watch.fullcheck import observe_report, run_full_check

        report = await run_full_check(server_texts, port_texts, pol.check_timeout)
        return observe_report(report, mono=clock.mono(), wall=clock.wall())

    def checked(obs: CheckObservation) -> None:
        metrics.check_duration.observe(obs.duration_s)

    keeper = None
    if opts.keep_mapped:
        from nodereach.net import Family
        from nodereach.watch.mapping import KeptFamilies, KeptMappings

        ports = [(p.port, p.transport) for p in opts.ports]

        def keeper(report: Callable[[MappingObservation], None]) -> KeptFamilies:
            def one(family: Family, waiting: bool) -> KeptMappings:
                return KeptMappings(ports, report, error, sleep=asyncio.sleep, lease=opts.lease, family=family,
                                    wait_for_family=waiting)
            return KeptFamilies(opts.keep_mapped_families, one)

    watcher = Watcher(pol, ports=[(p.port, p.transport) for p in opts.ports],
                      servers=[s.label for s in opts.stun_servers], clock=clock, stun=stun, check=check, emit=emit,
                      error=error, listeners=HostListeners() if opts.ports else None, node=node, keeper=keeper,
                      checked=checked, started_message=describe(opts, metrics_at))
    holder.append(watcher)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if metrics_at:
        print(f"nodereach watch: {describe(opts, metrics_at)}", file=sys.stderr, flush=True)
    try:
        await watcher.run(stop)
    finally:
        for sink in sinks:
            await sink.drain(HOOK_DRAIN_S)
            await sink.close()
        for close in closers:
            await close()
        await stun.close()
        if node is not None:
            with contextlib.suppress(Exception):
                await node.close()
        metrics.close()
    return 0

