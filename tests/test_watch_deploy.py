"""What ships with `watch`: the alert rules (checked and unit-tested by the real promtool), the Grafana
dashboard (structure and every query), the systemd unit (verified and its sandbox scored by systemd), the
example config, and the metric names the issue fixed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from nodereach.watch.config import Settings, build
from nodereach.watch.samples import GAUGES

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "nodereach-rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "nodereach-rules.test.yml"
DASHBOARD = DEPLOY / "grafana" / "nodereach-watch.json"
UNIT = DEPLOY / "nodereach-watch.service"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

ISSUE_NAMES = {
    "nodereach_reachable", "nodereach_port_reachable", "nodereach_node_peers", "nodereach_public_address_info",
    "nodereach_nat_layers", "nodereach_cgnat", "nodereach_mapping_lease_remaining_seconds",
    "nodereach_check_duration_seconds", "nodereach_last_change_timestamp_seconds", "nodereach_watch_errors_total",
}
EXPORTED = set(GAUGES) | {"nodereach_check_duration_seconds", "nodereach_check_duration_seconds_bucket",
                          "nodereach_check_duration_seconds_sum", "nodereach_check_duration_seconds_count",
                          "nodereach_watch_errors_total"}


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        reason = f"{tool} is not installed (make system-deps installs it)"
        if IN_CI:
            pytest.fail(f"CI must run this test, but: {reason}")
        pytest.skip(reason)
    return path


def test_metric_names_are_the_issues() -> None:
    assert set(GAUGES) | {"nodereach_check_duration_seconds", "nodereach_watch_errors_total"} == ISSUE_NAMES


def test_promtool_checks_the_rules() -> None:
    r = subprocess.run([need("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 7 rules found" in r.stdout


def test_promtool_unit_tests_the_rules() -> None:
    r = subprocess.run([need("promtool"), "test", "rules", RULE_TESTS.name], capture_output=True, text=True,
                       timeout=120, cwd=RULE_TESTS.parent)
    assert r.returncode == 0, r.stdout + r.stderr


def test_rule_tests_fail_when_a_rule_is_loosened(tmp_path: Path) -> None:
    """The unit tests can fail: a mapping alert without its 1 min hold fires on a restart keep-mapped fixed."""
    (tmp_path / RULES.name).write_text(RULES.read_text().replace("for: 1m", "for: 0m", 1))
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    r = subprocess.run([need("promtool"), "test", "rules", RULE_TESTS.name], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode != 0 and "NodereachMappingLost" in r.stdout + r.stderr


def test_rules_cover_the_issues_alerts_and_use_exported_names() -> None:
    text = RULES.read_text()
    for alert in ("NodereachNodeUnreachable", "NodereachPublicAddressChanged", "NodereachMappingLost",
                  "NodereachNoInboundPeers", "NodereachWatchDown"):
        assert f"alert: {alert}" in text
    used = set(re.findall(r"\bnodereach_[a-z_]+", "\n".join(line for line in text.splitlines()
                                                             if "expr:" in line)))
    assert used and used <= EXPORTED, used - EXPORTED
    assert re.search(r"nodereach_reachable == 0\n\s+for: 10m", text)
    assert re.search(r'direction="inbound"\} == 0\n\s+for: 30m', text)


def dashboard_exprs(dash: dict) -> list[str]:
    out = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    out += [a["expr"] for a in dash["annotations"]["list"]]
    out += [v["definition"] for v in dash["templating"]["list"] if "definition" in v]
    return out


def test_dashboard_structure() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "nodereach-watch" and dash["title"] and isinstance(dash["schemaVersion"], int)
    names = {v["name"]: v for v in dash["templating"]["list"]}
    assert names["datasource"]["type"] == "datasource" and names["datasource"]["query"] == "prometheus"
    assert names["instance"]["type"] == "query"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs))
        assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])
    shown = set(re.findall(r"\bnodereach_[a-z_]+", " ".join(dashboard_exprs(dash))))
    assert shown <= EXPORTED, shown - EXPORTED
    assert {"nodereach_reachable", "nodereach_port_reachable", "nodereach_node_peers",
            "nodereach_public_address_info", "nodereach_mapping_lease_remaining_seconds"} <= shown


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Every query of the dashboard, as a recording rule: promtool parses each one."""
    dash = json.loads(DASHBOARD.read_text())
    rules = [{"record": f"dashboard:query{i}", "expr": e.replace("$instance", ".*")}
             for i, e in enumerate(dashboard_exprs(dash)) if not e.startswith("label_values(")]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))  # JSON is YAML
    r = subprocess.run([need("promtool"), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_systemd_unit_verifies_and_is_sandboxed(tmp_path: Path) -> None:
    tool = need("systemd-analyze")
    text = UNIT.read_text()
    for line in ("DynamicUser=yes", "CapabilityBoundingSet=\n", "AmbientCapabilities=\n", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK"):
        assert line in text
    unit = tmp_path / "nodereach-watch.service"
    unit.write_text(text.replace("/opt/nodereach/bin/nodereach", shutil.which("true") or "/bin/true"))
    r = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert "Unknown" not in r.stderr and "Failed" not in r.stderr, r.stderr
    r = subprocess.run([tool, "security", "--offline=yes", str(unit)], capture_output=True, text=True, timeout=60)
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
    assert score is not None, r.stdout[-500:] + r.stderr
    assert float(score.group(1)) <= 2.0, r.stdout[-2000:]


def test_example_config_is_valid() -> None:
    opts = build(Settings(), DEPLOY / "watch.example.toml")
    assert [str(p) for p in opts.ports] == ["30303/tcp", "30303/udp"]
    assert opts.servers == ("reach1.example.net", "reach2.example.net") and opts.metrics == ("127.0.0.1", 3481)
