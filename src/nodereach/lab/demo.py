"""`nodereach demo`: every scenario built, its ground truth verified, and (once the check exists) what
nodereach found — one table.

Structure for the diagnosis to plug into: `iter_rows(scenarios, probes)` builds each scenario, verifies it
and calls every `probe(lab) -> dict[column, text]` (e.g. "found", "reachable", "advice"), yielding one
`DemoRow` per scenario; `render(rows)` prints them. `run_demo` wires the default probes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from nodereach.lab.core import Lab, check_environment
from nodereach.lab.scenarios import SCENARIOS, GroundTruth, get_scenario
from nodereach.lab.verify import Verification, verify

Probe = Callable[[Lab], dict[str, str]]
"""Extra columns for one scenario, computed inside the running lab (e.g. the check's verdict)."""

DEFAULT_PROBES: list[Probe] = []
"""Probes run_demo adds by default; the diagnosis package appends its own here (or passes `probes`)."""


@dataclass
class DemoRow:
    scenario: str
    truth: GroundTruth
    verification: Verification
    seconds: float
    columns: dict[str, str] = field(default_factory=dict)
    error: str | None = None


def truth_text(t: GroundTruth) -> str:
    if not t.nat_present:
        nat = "no NAT" + (", host firewall" if t.firewall else "")
    else:
        nat = f"{t.layers} NAT layer{'s' if t.layers > 1 else ''}{' (CGNAT)' if t.cgnat else ''}"
        nat += f", {_short(t.mapping)} mapping, {_short(t.filtering)} filtering"
    if t.udp_blocked:
        nat += ", UDP blocked"
    if t.filtered_ports:
        nat += f", ports {','.join(map(str, t.filtered_ports))} filtered"
    return nat


def _short(behaviour: str) -> str:
    return {"endpoint-independent": "EI", "address-dependent": "AD", "address-and-port-dependent": "APD"}.get(
        behaviour, behaviour)


def iter_rows(scenarios: Iterable[str], probes: Sequence[Probe] = ()) -> Iterator[DemoRow]:
    for name in scenarios:
        start = time.monotonic()
        scenario = get_scenario(name)
        try:
            with Lab(scenario) as lab:
                verification = verify(lab)
                columns: dict[str, str] = {}
                for probe in probes:
                    lab.flush_conntrack()
                    columns.update(probe(lab))
                yield DemoRow(name, lab.truth, verification, time.monotonic() - start, columns)
        except Exception as exc:  # one broken scenario must not hide the others
            yield DemoRow(name, scenario.truth(), Verification(name), time.monotonic() - start,
                          error=f"{type(exc).__name__}: {exc}")


def render(rows: Sequence[DemoRow], console: Console | None = None) -> None:
    extra = [k for row in rows for k in row.columns if k]
    extra = list(dict.fromkeys(extra))
    table = Table(title="nodereach lab: scenarios and their ground truth")
    table.add_column("scenario", no_wrap=True)
    table.add_column("ground truth")
    table.add_column("public IP", no_wrap=True)
    table.add_column("verified", no_wrap=True)
    for col in extra:
        table.add_column(col)
    table.add_column("s", justify="right")
    for row in rows:
        if row.error:
            status = f"[red]error: {row.error}[/red]"
        elif row.verification.ok:
            status = f"[green]yes ({len(row.verification.checks)} checks)[/green]"
        else:
            status = f"[red]NO: {', '.join(row.verification.failed())}[/red]"
        table.add_row(row.scenario, truth_text(row.truth), row.truth.client_public_ip, status,
                      *[row.columns.get(col, "") for col in extra], f"{row.seconds:.1f}")
    (console or Console()).print(table)


def run_demo(scenarios: list[str], probes: Sequence[Probe] | None = None) -> int:
    """Build, verify and tear down each scenario; print the table. 0 when every scenario proved its truth."""
    names = scenarios or list(SCENARIOS)
    for name in names:
        get_scenario(name)
    check_environment()
    console = Console()
    rows: list[DemoRow] = []
    with console.status("building scenarios...") as status:
        if probes is None:
            from nodereach.diagnose.demo import check_probe  # the diagnosis adds its columns

            probes = [*DEFAULT_PROBES, check_probe]
        for row in iter_rows(names, probes):
            rows.append(row)
            status.update(f"built {len(rows)}/{len(names)} scenarios...")
    render(rows, console)
    return 0 if all(r.verification.ok and not r.error for r in rows) else 1
