import json

from typer.testing import CliRunner

from nodereach.cli import app
from nodereach.diagnose.model import SCHEMA, Report, from_json, json_schema, to_json


def test_cli_help_lists_commands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("check", "serve", "open", "mappings", "lab", "demo"):
        assert command in result.output


def test_report_round_trips_and_has_schema() -> None:
    report = Report(verdict="unreachable", causes=["cgnat"])
    doc = json.loads(to_json(report))
    assert doc["schema"] == SCHEMA == "nodereach.check/2"
    assert doc["nat"]["mapping"] == "unknown"
    assert from_json(to_json(report)) == report
    assert "Report" in json.dumps(json_schema())
