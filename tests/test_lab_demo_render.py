"""`nodereach demo` output: readable at 80 columns (blocks) and wide (table), a match per scenario decided on
typed facts, one summary line, non-zero exit when nodereach finds something else than the ground truth."""

from __future__ import annotations

import io
import re

import pytest

from nodereach.lab.checkview import decode_check
from nodereach.lab.demo import ADVICE, FOUND, FOUND6, REACHABLE, DemoRow, render, run_demo, summary
from nodereach.lab.judge import NOT_YET_TESTED, Fact, Finding, found_text, judge, truth_text
from nodereach.lab.scenarios import get_scenario
from nodereach.lab.verify import Verification


def _doc(*, present: bool | None = True, layers: int | None = 1, cgnat: bool = False,
         mapping: str = "endpoint-independent", filtering: str = "address-and-port-dependent",
         udp: bool | None = True, ports: tuple[int, ...] = (), causes: tuple[str, ...] = (),
         extra: str = "") -> bytes:
    """A check document as `nodereach check --json` prints it (schema nodereach.check/2), plus `extra` fields."""
    return (f'{{"schema": "nodereach.check/2", "duration_s": 0.91, "verdict": "unreachable", '
            f'"nat": {{"present": {_j(present)}, "layers": {_j(layers)}, "cgnat": {_j(cgnat)}, '
            f'"mapping": "{mapping}", "filtering": "{filtering}", "hops": []}}, '
            f'"udp": {{"outbound": {_j(udp)}, "blocked_ports": {list(ports)}}}, '
            f'"tcp": {{"outbound": true, "blocked_ports": {list(ports)}}}, '
            f'"public": {{"ipv4": "198.51.100.2", "ipv6": null}}, '
            f'"ports": [{{"port": 30303, "protocol": "udp", "reachable": false}}], '
            f'"causes": {list(causes)!r}, "advice": [], "servers": []{extra}}}').replace("'", '"').encode()


def _j(value: object) -> str:
    return "null" if value is None else "true" if value is True else "false" if value is False else str(value)


DOCS = {
    "cgnat": _doc(layers=2, cgnat=True),
    "udp-blocked": _doc(mapping="unknown", filtering="unknown", udp=False),
    "p2p-filtered": _doc(ports=(30303, 4001, 6881, 8333, 9000)),
    "symmetric": _doc(),  # wrong: symmetric maps address-and-port-dependently
}


def _rows() -> list[DemoRow]:
    rows = []
    for name, doc in DOCS.items():
        truth = get_scenario(name).truth()
        view = decode_check(doc)
        ver = Verification(name, checks={"public-ip": True, "mapping": True})
        columns = {FOUND: found_text(view), REACHABLE: "unreachable (udp no)", ADVICE: "Ask your provider",
                   FOUND6: NOT_YET_TESTED, "check s": "0.91"}
        rows.append(DemoRow(name, truth, ver, 4.2, columns, facts=judge(truth, view)))
    return rows


def _render(width: int) -> str:
    from rich.console import Console

    out = io.StringIO()
    render(_rows(), Console(file=out, width=width, force_terminal=False, color_system=None))
    return out.getvalue()


def _statuses(name: str, doc: bytes) -> dict[str, str]:
    return {f.name: f.status for f in judge(get_scenario(name).truth(), decode_check(doc))}


def test_facts_are_judged_field_by_field() -> None:
    assert set(_statuses("cgnat", DOCS["cgnat"]).values()) == {"match", "untested"}  # IPv6: not yet tested
    assert _statuses("cgnat", _doc(layers=2, cgnat=False))["CGNAT"] == "mismatch"
    assert _statuses("cgnat", _doc(layers=1, cgnat=True))["NAT"] == "mismatch"
    assert _statuses("cgnat", _doc(present=None, layers=None))["NAT"] == "mismatch"
    symmetric = _statuses("symmetric", DOCS["symmetric"])
    assert symmetric["mapping"] == "mismatch" and symmetric["filtering"] == "match"
    # '?' mapping/filtering is the right answer when UDP is blocked (unobservable), and only then
    assert set(_statuses("udp-blocked", DOCS["udp-blocked"]).values()) == {"match", "untested"}
    assert _statuses("port-restricted", _doc(mapping="unknown"))["mapping"] == "mismatch"
    # ports compared as sets, in any order
    assert _statuses("p2p-filtered", _doc(ports=(9000, 30303, 4001, 6881, 8333)))["filtered ports"] == "match"
    assert _statuses("p2p-filtered", _doc(ports=(4001, 6881)))["filtered ports"] == "mismatch"
    assert _statuses("port-restricted", _doc(ports=(4001,)))["filtered ports"] == "mismatch"
    # no NAT: the host firewall is the fact
    open_fw = _statuses("open-firewalled", _doc(present=False, layers=0, causes=("firewall",)))
    assert open_fw["NAT"] == "match" and open_fw["host firewall"] == "match"
    assert _statuses("open", _doc(present=False, layers=0, causes=("firewall",)))["host firewall"] == "mismatch"


def test_ipv6_facts_untested_until_the_check_reports_them() -> None:
    no_v6 = DOCS["cgnat"]
    statuses = {f.name: f for f in judge(get_scenario("ipv6-firewalled").truth(), decode_check(no_v6))}
    assert {statuses[n].status for n in ("IPv6 public address", "IPv6 translation", "IPv6 filtering")} == {"untested"}
    assert statuses["IPv6 public address"].found == NOT_YET_TESTED
    tested = (', "reachability": {"ipv4": "unreachable", "ipv6": "unreachable"}, '
              '"ipv6": {"translation": "none", "filtering": "address-and-port-dependent"}')
    right = _doc(extra=tested).replace(b'"ipv6": null', b'"ipv6": "2001:db8:1:1::10"')
    got = {f.name: f.status for f in judge(get_scenario("ipv6-firewalled").truth(), decode_check(right))}
    assert got["IPv6 public address"] == got["IPv6 translation"] == got["IPv6 filtering"] == "match"
    wrong = right.replace(b'"translation": "none"', b'"translation": "nptv6"')
    got = {f.name: f.status for f in judge(get_scenario("ipv6-firewalled").truth(), decode_check(wrong))}
    assert got["IPv6 translation"] == "mismatch"
    # a host without IPv6: "untested" is right, "unreachable" is wrong
    none_right = _doc(extra=', "reachability": {"ipv4": "unreachable", "ipv6": "untested"}')
    none_wrong = _doc(extra=', "reachability": {"ipv4": "unreachable", "ipv6": "unreachable"}')
    assert [f.status for f in judge(get_scenario("cgnat").truth(), decode_check(none_right)) if f.family == 6] \
        == ["match"]
    assert [f.status for f in judge(get_scenario("cgnat").truth(), decode_check(none_wrong)) if f.family == 6] \
        == ["mismatch"]


def test_decode_rejects_what_is_not_a_check_document() -> None:
    from nodereach.lab.checkview import CheckOutputError

    for bad in (b"", b"not json", b"{}", b'{"schema": "other/1", "verdict": "reachable"}',
                b'{"schema": "nodereach.check/2", "verdict": "maybe"}',
                b'{"schema": "nodereach.check/2", "verdict": "reachable", "nat": {"mapping": "weird"}}',
                b"[" * 2_000_000):
        with pytest.raises(CheckOutputError):
            decode_check(bad)
    assert decode_check(DOCS["cgnat"]).nat.layers == 2


@pytest.mark.parametrize("width", [60, 80, 100, 179])
def test_narrow_output_is_one_block_per_scenario(width: int) -> None:
    text = _render(width)
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines), max(lines, key=len)
    assert all(line == line.rstrip() for line in lines)
    assert "┃" not in text  # no table
    for name in DOCS:
        assert any(line.startswith(f"{name}  ") for line in lines)
    # whole facts on one line, not shredded into 1-2 character cells
    assert width < 80 or "  ground truth  2 NAT layers (CGNAT), EI mapping, APD filtering" in text
    assert re.search(r"^symmetric  ✗", text, re.M) and re.search(r"^cgnat  ✓", text, re.M)
    flat = re.sub(r"\s+", " ", text)
    assert "'?' is right: mapping/filtering are unobservable without UDP" in flat  # why ? is right
    assert "differs mapping: truth APD, found EI" in flat  # the mismatched fact, named
    assert "IPv6 truth none" in flat and f"IPv6 found {NOT_YET_TESTED}" in flat
    assert width < 80 or "  advice        Ask your provider" in text
    assert "  check took    0.91 s" in text


def test_wide_output_is_the_full_table() -> None:
    text = _render(250)
    header = next(line for line in text.splitlines() if "┃ scenario" in line)
    for col in ("ground truth", "public IP", "IPv6", "proven", FOUND, "match", "reachable", "first advice",
                "s (check)"):
        assert col in header
    assert all(len(line) <= 250 for line in text.splitlines())
    assert "2 NAT layers (CGNAT), EI mapping, APD filtering" in text
    assert "symmetric: mapping: truth APD, found EI" in text
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
    untested = [DemoRow(r.scenario, r.truth, Verification(r.scenario, {"x": True}), 1.0,
                        facts=(Fact("IPv6", 6, "none", NOT_YET_TESTED, "untested"),)) for r in _rows()]
    assert summary(untested) == "4/4 scenarios: ground truth verified"  # nothing tested: nothing found


@pytest.mark.lab
def test_run_demo_exits_non_zero_on_a_mismatch(capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import require_lab

    require_lab()

    def probe(lab: object) -> Finding:
        lie = lab.scenario.name == "full-cone"  # type: ignore[attr-defined]
        truth = truth_text(lab.truth)  # type: ignore[attr-defined]
        return Finding(facts=(Fact("filtering", 4, "EI", "APD" if lie else "EI", "mismatch" if lie else "match"),),
                       columns=((FOUND, truth),))

    assert run_demo(["open", "full-cone"], probes=[probe]) == 1
    out, err = capsys.readouterr()
    last = out.rstrip().splitlines()[-1]
    assert re.fullmatch(r"1/2 scenarios: nodereach found the ground truth in \d+ s "
                        r"\(found something else in full-cone\)", last)
    assert "found something else in full-cone" in out
    assert "[2/2] full-cone" in err and "MISMATCH" in err  # progress on stderr
    ok = Finding(facts=(Fact("NAT", 4, "no NAT", "no NAT", "match"),))
    assert run_demo(["open"], probes=[lambda lab: ok]) == 0
    assert "1/1 scenarios: nodereach found the ground truth" in capsys.readouterr().out
