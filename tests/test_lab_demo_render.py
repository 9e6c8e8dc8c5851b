"""`nodereach demo` output: readable at 80 columns (blocks) and wide (table), a match per scenario, one
summary line, non-zero exit when nodereach finds something else than the ground truth."""

from __future__ import annotations

import io
import re

import pytest

from nodereach.lab.demo import FOUND, DemoRow, found_matches, render, run_demo, summary, truth_text
from nodereach.lab.scenarios import get_scenario
from nodereach.lab.verify import Verification

ROWS_SPEC = {
    "cgnat": ("2 NAT layers (CGNAT), EI mapping, APD filtering", "Ask your provider for a public IPv4 address"),
    "udp-blocked": ("1 NAT layer, ? mapping, ? filtering, UDP blocked", "Ask your provider to lift the filter"),
    "p2p-filtered": ("1 NAT layer, EI mapping, APD filtering, ports 4001,6881,8333,9000,30303 filtered",
                     "Ask your provider to lift the filter"),
    "symmetric": ("1 NAT layer, EI mapping, APD filtering", "Forward the node's ports on your router"),  # wrong
}


def _rows() -> list[DemoRow]:
    rows = []
    for name, (found, advice) in ROWS_SPEC.items():
        ver = Verification(name, checks={"public-ip": True, "mapping": True})
        rows.append(DemoRow(name, get_scenario(name).truth(), ver, 4.2,
                            {FOUND: found, "reachable": "unreachable (udp no, tcp no)", "first advice": advice,
                             "check s": "0.91"}))
    return rows


def _render(width: int) -> str:
    from rich.console import Console

    out = io.StringIO()
    render(_rows(), Console(file=out, width=width, force_terminal=False, color_system=None))
    return out.getvalue()


def test_found_matches_ground_truth() -> None:
    cgnat, udp, p2p = (get_scenario(n).truth() for n in ("cgnat", "udp-blocked", "p2p-filtered"))
    assert found_matches(cgnat, truth_text(cgnat))
    assert found_matches(cgnat, "[green]2 NAT layers (CGNAT), EI mapping, APD filtering[/green]")
    assert not found_matches(cgnat, "2 NAT layers, EI mapping, APD filtering")
    assert not found_matches(cgnat, "NAT unknown")
    assert found_matches(udp, "1 NAT layer, ? mapping, ? filtering, UDP blocked")  # unobservable without UDP
    assert found_matches(udp, truth_text(udp))
    assert not found_matches(get_scenario("port-restricted").truth(), "1 NAT layer, ? mapping, ? filtering")
    assert found_matches(p2p, "1 NAT layer, EI mapping, APD filtering, ports 9000,30303,4001,6881,8333 filtered")
    assert not found_matches(p2p, "1 NAT layer, EI mapping, APD filtering, ports 4001,6881 filtered")


@pytest.mark.parametrize("width", [60, 80, 100, 179])
def test_narrow_output_is_one_block_per_scenario(width: int) -> None:
    text = _render(width)
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines), max(lines, key=len)
    assert all(line == line.rstrip() for line in lines)
    assert "┃" not in text  # no table
    for name in ROWS_SPEC:
        assert any(line.startswith(f"{name}  ") for line in lines)
    # whole facts on one line, not shredded into 1-2 character cells
    assert width < 80 or "  ground truth  2 NAT layers (CGNAT), EI mapping, APD filtering" in text
    assert re.search(r"^symmetric  ✗", text, re.M) and re.search(r"^cgnat  ✓", text, re.M)
    assert "'?' is right: mapping/filtering are unobservable without UDP" in re.sub(r"\s+", " ", text)  # why ?
    assert width < 80 or "  advice        Ask your provider for a public IPv4 address" in text
    assert "  check took    0.91 s" in text


def test_wide_output_is_the_full_table() -> None:
    text = _render(250)
    header = next(line for line in text.splitlines() if "┃ scenario" in line)
    for col in ("ground truth", "public IP", "proven", FOUND, "match", "reachable", "first advice", "s (check)"):
        assert col in header
    assert all(len(line) <= 250 for line in text.splitlines())
    assert "2 NAT layers (CGNAT), EI mapping, APD filtering" in text
    assert all(len(line) <= 180 for line in _render(180).splitlines())  # narrowest table: shared, not cropped


def test_summary_line() -> None:
    rows = _rows()
    assert summary(rows[:3], 33.4) == "3/3 scenarios: nodereach found the ground truth in 33 s"
    assert summary(rows) == "3/4 scenarios: nodereach found the ground truth (found something else in symmetric)"
    rows[0].verification.checks["mapping"] = False
    rows[1].error = "LabError: boom"
    line = summary(rows)
    assert line.startswith("1/4 scenarios")
    assert "ground truth did not hold in cgnat" in line and "error in udp-blocked" in line
    bare = [DemoRow(r.scenario, r.truth, Verification(r.scenario, {"x": True}), 1.0) for r in _rows()]
    assert summary(bare) == "4/4 scenarios: ground truth verified"


@pytest.mark.lab
def test_run_demo_exits_non_zero_on_a_mismatch(capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import require_lab

    require_lab()

    def probe(lab: object) -> dict[str, str]:
        truth = lab.truth  # type: ignore[attr-defined]
        lie = lab.scenario.name == "full-cone"  # type: ignore[attr-defined]
        return {FOUND: "2 NAT layers, EI mapping, EI filtering" if lie else truth_text(truth)}

    assert run_demo(["open", "full-cone"], probes=[probe]) == 1
    out, err = capsys.readouterr()
    last = out.rstrip().splitlines()[-1]
    assert re.fullmatch(r"1/2 scenarios: nodereach found the ground truth in \d+ s "
                        r"\(found something else in full-cone\)", last)
    assert "found something else in full-cone" in out
    assert "[2/2] full-cone" in err and "MISMATCH" in err  # progress on stderr
    assert run_demo(["open"], probes=[lambda lab: {FOUND: truth_text(lab.truth)}]) == 0  # type: ignore[attr-defined]
    assert "1/1 scenarios: nodereach found the ground truth" in capsys.readouterr().out
