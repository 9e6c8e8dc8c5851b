"""`nodereach demo`: every scenario built, its ground truth verified, and what nodereach found next to it.

`iter_rows(scenarios, probes)` builds each scenario, verifies its ground truth with raw sockets and calls
every `probe(lab) -> Finding` (the default one, checkprobe.check_probe, runs the real `nodereach check
--json` in the client and judges its JSON fact by fact against the ground truth), yielding one `DemoRow` per
scenario; `render(rows)` prints them (a full table when the output is wide enough, one block per scenario
otherwise: CI logs and pipes are 80 columns), `summary(rows)` is the closing line. `run_demo` wires the
default probe, shows progress on stderr and exits non-zero when any scenario's ground truth did not hold or
nodereach found something else. Whether nodereach "found the ground truth" is decided on typed facts
(judge.py), never on rendered text.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from rich.console import Console
from rich.errors import MarkupError
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from nodereach.lab.core import Lab, check_environment
from nodereach.lab.judge import Fact, Finding, truth_text, truth_text6, verdict
from nodereach.lab.scenarios import SCENARIOS, GroundTruth, get_scenario
from nodereach.lab.verify import Verification, verify

__all__ = ["ADVICE", "FOUND", "FOUND6", "REACHABLE", "DemoRow", "Fact", "Finding", "Probe", "iter_rows", "render",
           "run_demo", "summary", "truth_text"]

Probe = Callable[[Lab], "Finding | dict[str, str]"]
"""What nodereach finds in one running scenario: judged facts and columns (a plain dict: columns only)."""

Progress = Callable[[str, str], None]
"""progress(scenario, step): step is "build", "verify" or "probe" (what the demo is doing right now)."""

FOUND = "what nodereach found"
"""The column with what the check found about IPv4, in the ground truth's words."""
FOUND6 = "IPv6 found"
REACHABLE = "reachable"
ADVICE = "first advice"
FULL_TABLE_MIN_WIDTH = 180
"""Below this many columns the full table wraps its cells to shreds: one block per scenario instead."""


@dataclass
class DemoRow:
    scenario: str
    truth: GroundTruth
    verification: Verification
    seconds: float
    columns: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    facts: tuple[Fact, ...] = ()
    """Every probe's facts, judged against the ground truth."""

    @property
    def match(self) -> bool | None:
        """Did nodereach find the ground truth? None when no probe tested any fact."""
        return verdict(self.facts)

    @property
    def mismatches(self) -> list[Fact]:
        return [f for f in self.facts if not f.ok]

    @property
    def ok(self) -> bool:
        return self.error is None and self.verification.ok and self.match is not False


def iter_rows(scenarios: Iterable[str], probes: Sequence[Probe] = (), *,
              progress: Progress | None = None) -> Iterator[DemoRow]:
    step = progress or (lambda scenario, what: None)
    for name in scenarios:
        start = time.monotonic()
        scenario = get_scenario(name)
        try:
            step(name, "build")
            with Lab(scenario) as lab:
                step(name, "verify")
                verification = verify(lab)
                columns: dict[str, str] = {}
                facts: list[Fact] = []
                for probe in probes:
                    step(name, "probe")
                    lab.flush_conntrack()
                    found = probe(lab)
                    if isinstance(found, Finding):
                        columns.update(found.columns)
                        facts += found.facts
                    else:
                        columns.update(found)
                yield DemoRow(name, lab.truth, verification, time.monotonic() - start, columns, facts=tuple(facts))
        except Exception as exc:  # one broken scenario must not hide the others
            yield DemoRow(name, scenario.truth(), Verification(name), time.monotonic() - start,
                          error=f"{type(exc).__name__}: {exc}")


# --- rendering ----------------------------------------------------------------------------------------
def _marks(console: Console) -> tuple[str, str]:
    utf = (console.encoding or "").lower().replace("-", "").startswith("utf")
    return ("✓", "✗") if utf else ("ok", "MISMATCH")


def _verified(row: DemoRow) -> str:
    if row.error:
        return f"[red]error: {escape(row.error)}[/red]"
    if row.verification.ok:
        return f"[green]yes ({len(row.verification.checks)} checks)[/green]"
    return f"[red]NO: {', '.join(row.verification.failed())}[/red]"


def _match_cell(row: DemoRow, marks: tuple[str, str]) -> str:
    if row.match is None:
        return "-"
    return f"[green]{marks[0]}[/green]" if row.match else f"[red]{marks[1]}[/red]"


def _extra_columns(rows: Sequence[DemoRow]) -> list[str]:
    return list(dict.fromkeys(k for row in rows for k in row.columns if k))


def _proven(row: DemoRow, marks: tuple[str, str]) -> str:
    """Short form of `_verified` for the table."""
    if row.error:
        return f"[red]error: {escape(row.error)}[/red]"
    if row.verification.ok:
        return f"[green]{marks[0]}[/green] {len(row.verification.checks)}"
    return f"[red]{marks[1]} {', '.join(row.verification.failed())}[/red]"


def render_table(rows: Sequence[DemoRow], console: Console) -> None:
    """All columns side by side (wide outputs); facts keep a readable width, the rest wraps."""
    marks = _marks(console)
    extra = _extra_columns(rows)
    timing = [c for c in extra if c.endswith(" s")]  # e.g. "check s": shown as "total (check)" seconds
    table = Table(title="nodereach demo: ground truth vs what nodereach found", title_justify="left")
    table.add_column("scenario", no_wrap=True)
    table.add_column("ground truth", ratio=3)
    table.add_column("public IP", no_wrap=True)
    table.add_column("IPv6", ratio=2)
    table.add_column("proven", no_wrap=True)
    for col in extra:
        if col == FOUND:
            table.add_column(col, ratio=3)
            table.add_column("match", no_wrap=True, justify="center")
        elif col not in timing:
            table.add_column(col, ratio=2)
    table.add_column("s" + "".join(f" ({c[:-2]})" for c in timing), justify="right", no_wrap=True)
    for row in rows:
        cells = []
        for col in extra:
            if col == FOUND:
                cells += [escape(row.columns.get(col, "")), _match_cell(row, marks)]
            elif col not in timing:
                cells.append(escape(row.columns.get(col, "")))
        seconds = f"{row.seconds:.1f}" + "".join(f" ({row.columns.get(c, '-')})" for c in timing)
        table.add_row(row.scenario, escape(truth_text(row.truth)), row.truth.client_public_ip,
                      escape(truth_text6(row.truth)), _proven(row, marks), *cells, seconds)
    # Natural widths when they fit; otherwise share the width by ratio (facts 3 : other columns 2) instead of
    # rich's default of shrinking the widest columns, which are the facts.
    table.expand = console.measure(table).maximum > console.width
    console.print(table)
    for row in rows:
        for fact in row.mismatches:
            console.print(f"{row.scenario}: {fact.name}: truth {fact.truth}, found {fact.found}", style="red",
                          highlight=False, markup=False)
    console.print(f"proven: the ground truth held under raw-socket probes (number of checks); "
                  f"match: what nodereach found {'=' if marks[0] == '✓' else 'equals'} the ground truth, "
                  f"fact by fact", style="dim", highlight=False)


def render_blocks(rows: Sequence[DemoRow], console: Console) -> None:
    """One block per scenario: readable at 80 columns (CI logs, `| less`)."""
    marks = _marks(console)
    console.print("[bold]nodereach demo: ground truth vs what nodereach found[/bold]")
    extra = [c for c in _extra_columns(rows) if c not in (FOUND, FOUND6, REACHABLE, ADVICE)]
    for row in rows:
        head = Text.assemble((f"{row.scenario}", "bold"), "  ")
        if row.match is not None:
            head.append_text(Text.from_markup(_match_cell(row, marks)))
            head.append("  ")
        if REACHABLE in row.columns:
            head.append(row.columns[REACHABLE])
            head.append("  ")
        head.append(f"{row.seconds:.1f} s", "dim")
        console.print()
        console.print(head)
        _field(console, "ground truth", escape(truth_text(row.truth)))
        _field(console, "verified", f"{_verified(row)}, public IP {row.truth.client_public_ip}")
        if FOUND in row.columns:
            _field(console, "found", escape(row.columns[FOUND]))
        for note in dict.fromkeys(f.note for f in row.facts if f.note and f.ok):
            _field(console, "note", escape(note))
        for fact in row.mismatches:
            _field(console, "differs", f"[red]{escape(fact.name)}: truth {escape(fact.truth)}, "
                                       f"found {escape(fact.found)}[/red]")
        _field(console, "IPv6 truth", escape(truth_text6(row.truth)))
        if FOUND6 in row.columns:
            _field(console, "IPv6 found", escape(row.columns[FOUND6]))
        if ADVICE in row.columns:
            _field(console, "advice", escape(row.columns[ADVICE]))
        for col in extra:
            value = row.columns.get(col, "")
            if col.endswith(" s"):
                _field(console, f"{col[:-2]} took", f"{value} s")
            else:
                _field(console, col, escape(value))
    console.print()


_LABEL = 14


def _field(console: Console, label: str, markup: str) -> None:
    """`  label        value`, the value wrapped under itself (no padding, no trailing spaces)."""
    try:
        value = Text.from_markup(markup)
    except MarkupError:
        value = Text(markup)
    width = max(20, console.width - _LABEL - 2)
    for i, line in enumerate(value.wrap(console, width, justify="default", overflow="fold")):
        line.rstrip()
        head = Text(f"  {label:<{_LABEL - 1}} ", style="dim") if i == 0 else Text(" " * (_LABEL + 2))
        console.print(Text.assemble(head, line), highlight=False)


def render(rows: Sequence[DemoRow], console: Console | None = None) -> None:
    console = console or Console()
    if console.width >= FULL_TABLE_MIN_WIDTH:
        render_table(rows, console)
    else:
        render_blocks(rows, console)


def summary(rows: Sequence[DemoRow], seconds: float | None = None) -> str:
    """One line: how many scenarios nodereach got right (or, without a diagnosis, proved), and which not."""
    n = len(rows)
    took = f" in {seconds:.0f} s" if seconds is not None else ""
    errors = [r.scenario for r in rows if r.error]
    unverified = [r.scenario for r in rows if not r.error and not r.verification.ok]
    mismatched = [r.scenario for r in rows if r.match is False and not r.error]
    problems = []
    if mismatched:
        problems.append(f"found something else in {', '.join(mismatched)}")
    if unverified:
        problems.append(f"ground truth did not hold in {', '.join(unverified)}")
    if errors:
        problems.append(f"error in {', '.join(errors)}")
    if any(r.match is not None for r in rows):
        good = sum(1 for r in rows if r.ok and r.match)
        line = f"{good}/{n} scenarios: nodereach found the ground truth{took}"
    else:
        good = sum(1 for r in rows if r.ok)
        line = f"{good}/{n} scenarios: ground truth verified{took}"
    return line + (f" ({'; '.join(problems)})" if problems else "")


# --- the command --------------------------------------------------------------------------------------
STEP_TEXT = {"build": "building the lab", "verify": "verifying its ground truth", "probe": "running nodereach check"}


class _Progress:
    """Something moving on stderr while labs build (~4-5 s per scenario): a spinner on a terminal, one line
    per scenario otherwise (CI logs, pipes)."""

    def __init__(self, total: int) -> None:
        self.console = Console(stderr=True)
        self.total = total
        self.done = 0
        self.start = time.monotonic()
        self.text = "starting"
        self.status = self.console.status(self) if self.console.is_terminal else None

    def __rich__(self) -> Text:
        """Re-rendered on every spinner refresh: the elapsed time counts up within a step."""
        return Text(f"{self.text} ({time.monotonic() - self.start:.0f} s)")

    def __enter__(self) -> _Progress:
        if self.status is not None:
            self.status.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.__exit__(None, None, None)

    def step(self, scenario: str, what: str) -> None:
        prefix = f"[{self.done + 1}/{self.total}] {scenario}"
        if self.status is not None:
            self.text = f"{prefix}: {STEP_TEXT.get(what, what)}"
        elif what == "build":
            self.console.file.write(f"demo {prefix}: building, verifying, diagnosing ... ")
            self.console.file.flush()

    def finished(self, row: DemoRow) -> None:
        self.done += 1
        marks = ("ok", "MISMATCH")
        verdict = "error" if row.error else marks[0] if row.ok else marks[1] if row.match is False else "NOT verified"
        if self.status is not None:
            self.console.print(f"[{self.done}/{self.total}] {row.scenario}: {verdict} ({row.seconds:.1f} s)",
                               highlight=False, markup=False)
        else:
            self.console.file.write(f"{verdict} ({row.seconds:.1f} s)\n")
            self.console.file.flush()


def run_demo(scenarios: list[str], probes: Sequence[Probe] | None = None) -> int:
    """Build, verify and tear down each scenario; print the rows and a summary line. 0 when every scenario
    proved its ground truth and nodereach found it."""
    names = scenarios or list(SCENARIOS)
    for name in names:
        get_scenario(name)
    check_environment()
    console = Console()
    if probes is None:
        from nodereach.lab.checkprobe import check_probe  # runs `nodereach check --json`; imports no check code

        probes = [check_probe]
    rows: list[DemoRow] = []
    start = time.monotonic()
    with _Progress(len(names)) as progress:
        for row in iter_rows(names, probes, progress=progress.step):
            rows.append(row)
            progress.finished(row)
    render(rows, console)
    console.print(summary(rows, time.monotonic() - start), highlight=False, markup=False, soft_wrap=True)
    return 0 if all(r.ok for r in rows) else 1
