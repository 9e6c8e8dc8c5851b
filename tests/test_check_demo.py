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
    # IPv6: until the check tests it, the facts say "not yet tested" instead of failing or passing
    six = [f for f in rows[2].facts if f.family == 6]
    assert six and {f.status for f in six} in ({"untested"}, {"match"})
    assert (rows[2].columns[FOUND6] == NOT_YET_TESTED) == (six[0].status == "untested")
