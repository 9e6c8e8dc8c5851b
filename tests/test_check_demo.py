"""The demo's diagnosis columns: what check finds matches the ground-truth column word for word."""

from __future__ import annotations

import pytest

from nodereach.diagnose.demo import check_probe
from nodereach.lab.demo import iter_rows, truth_text

pytestmark = pytest.mark.lab


def test_demo_columns_match_ground_truth() -> None:
    from conftest import require_lab

    require_lab()
    rows = list(iter_rows(["cgnat", "p2p-filtered"], probes=[check_probe]))
    for row in rows:
        assert row.error is None, row.error
        found = row.columns["what nodereach found"]
        if row.truth.filtered_ports:  # same facts; check lists the filtered ports in numeric order
            assert found.split(", ports")[0] == truth_text(row.truth).split(", ports")[0]
            assert sorted(found.split("ports ")[1].split(" ")[0].split(",")) == \
                sorted(str(p) for p in row.truth.filtered_ports)
        else:
            assert found == truth_text(row.truth)
        assert row.columns["reachable"].startswith("unreachable")
    assert rows[0].columns["first advice"].startswith("Ask your provider for a public IPv4")
    assert rows[1].columns["first advice"] == "Ask your provider to lift the filter"
