"""The full check, seen from the watcher: run it (the check's library entry, `run_check`, with the options
`check --server ... --port ...` would build) and reduce its report to a `CheckObservation`.

A check that reached no server says nothing about the node (the watcher's own line may be down, or the
servers): its verdict is None and it changes nothing. The watcher's checks never listen on a port nothing
holds (CheckOptions.hold_free_ports=False): a node starting that second must get its port. A port where
nodereach did listen (a report from elsewhere) is not reachable: peers' first packets would reach no program
of the node (reason `nothing-listening`); when no tested port is reachable the node is `unreachable`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from nodereach.diagnose.model import Report
from nodereach.net import Family
from nodereach.watch.model import CheckObservation, PortKey, PortReach


async def run_full_check(servers: list[str], ports: list[str], timeout: float) -> Report:  # noqa: ASYNC109
    from nodereach.diagnose.command import build_options
    from nodereach.diagnose.engine import run_check

    opts = build_options(servers, ports, timeout, False, 120.0, None)
    # Never hold a free node port: the watcher checks beside a node that may be starting this very second.
    # No warm-up thread: its ~0.1 s matters to a one-shot check, its malloc arena to a process that runs for months.
    return await run_check(dataclasses.replace(opts, hold_free_ports=False, warm_imports=False))


def observe_report(report: Report, *, mono: float, wall: float) -> CheckObservation:
    if not any(s.answered for s in report.servers):
        reasons = "; ".join(f"{s.address}: {s.reason}" for s in report.servers if s.reason) or "no server answered"
        return CheckObservation(mono, wall, None, duration_s=report.duration_s, error=reasons)
    ports = tuple(_port(p) for p in report.ports)
    verdict = str(report.verdict)
    if verdict == "reachable" and ports and not any(p.reachable for p in ports):
        # The path is open but the node listens on none of its ports: peers reach no program of the node
        # (issue 10's verdict; the check said `reachable` for the path while nodereach listened itself).
        verdict = "unreachable"
    return CheckObservation(mono, wall, verdict, ports, report.nat.layers, report.nat.cgnat, report.duration_s)


FAMILY_UNUSED = ("ipv4-only", "ipv6-only")
"""The check's reasons for a port entry of a family the node does not listen on: not unreachable (the check's
verdict leaves that family out and advises `use-ipv6`)."""


def _port(p: Any) -> PortReach:
    family: Family = 6 if p.family == 6 else 4
    key = PortKey(p.port, p.protocol, family)
    if p.reachable and p.listener == "nodereach":
        return PortReach(key, False, "nothing-listening")
    if not p.reachable and p.reason in FAMILY_UNUSED:
        return PortReach(key, False, p.reason, family_unused=True)
    return PortReach(key, p.reachable, p.reason)
