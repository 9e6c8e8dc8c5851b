"""The demo's check probe: the real `nodereach check --json`, judged fact by fact against the ground truth."""

from __future__ import annotations

import pytest

from nodereach.lab.checkprobe import ADVICE, FOUND, FOUND6, REACHABLE, check_probe
from nodereach.lab.demo import iter_rows
from nodereach.lab.judge import NOT_YET_TESTED, truth_text

pytestmark = pytest.mark.lab


def test_demo_facts_match_ground_truth() -> None:
    from conftest import require_lab

    require_lab()
    rows = list(iter_rows(["cgnat", "p2p-filtered", "cgnat-ipv6"], probes=[check_probe]))
    for row in rows:
        assert row.error is None, row.error
        assert row.match is True, [(f.name, f.truth, f.found) for f in row.mismatches]
        assert {f.name for f in row.facts if f.family == 4 and f.status == "match"} >= {"NAT", "UDP blocked",
                                                                                         "filtered ports"}
        found = row.columns[FOUND]
        if row.truth.filtered_ports:  # same facts; check lists the filtered ports in numeric order
            assert found.split(", ports")[0] == truth_text(row.truth).split(", ports")[0]
        else:
            assert found == truth_text(row.truth)
        assert row.columns[REACHABLE].startswith("unreachable")
    assert rows[0].columns[ADVICE].startswith("Ask your provider for a public IPv4")
    assert rows[1].columns[ADVICE] == "Ask your provider to lift the filter"
    # IPv6 is tested: no IPv6 on the client says `untested` (a match), cgnat-ipv6's facts all match
    assert [(f.name, f.status, f.found) for f in rows[0].facts if f.family == 6] == [("IPv6", "match", "untested")]
    six = [f for f in rows[2].facts if f.family == 6]
    assert [f.name for f in six] == ["IPv6 public address", "IPv6 translation", "IPv6 filtering"]
    assert {f.status for f in six} == {"match"}
    assert rows[2].columns[FOUND6] != NOT_YET_TESTED and "translation: none" in rows[2].columns[FOUND6]
    assert "tcp/v6 path closed" in rows[2].columns[REACHABLE]
