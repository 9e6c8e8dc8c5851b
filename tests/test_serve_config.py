"""serve configuration: TOML file, flags on top, validation errors as UsageError (one line, exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from nodereach.cli import app
from nodereach.errors import UsageError
from nodereach.serve import config as cm

FLAGS: dict[str, object] = {"addresses": [], "alt_address": None, "stun_port": None, "alt_port": None,
                            "http_port": None, "no_stun": False, "no_dialback": False, "log_json": False,
                            "trusted_proxies": []}


def build(data: dict[str, object], **flags: object) -> cm.ServeConfig:
    return cm.build(data, **{**FLAGS, **flags})  # type: ignore[arg-type]


def test_defaults_are_the_well_known_ports() -> None:
    cfg = build({}, addresses=["203.0.113.10"], alt_address="203.0.113.11")
    assert (cfg.stun_port, cfg.alt_port, cfg.http_port) == (3478, 3479, 3480)
    assert cfg.run_stun and cfg.run_dialback and cfg.dialback.alt_address == "203.0.113.11"
    assert 25 in cfg.dialback.limits.refused_ports and 30303 not in cfg.dialback.limits.refused_ports


def test_file_then_flags_override(tmp_path: Path) -> None:
    path = tmp_path / "serve.toml"
    path.write_text("""
addresses = ["203.0.113.10"]
http_port = 8080
log_json = true
trusted_proxies = ["10.0.0.0/8"]
[dialback]
probe_timeout = 1.5
address_burst = 3
refused_ports = "25"
[stun]
rate_per_s = 10.0
""")
    data = cm.load(path)
    cfg = build(data)
    assert cfg.addresses == ["203.0.113.10"] and cfg.http_port == 8080 and cfg.log_json
    assert cfg.dialback.probe_timeout == 1.5 and cfg.dialback.limits.address_burst == 3.0
    assert cfg.dialback.limits.refused_ports == {25} and cfg.dialback.trusted_proxies == ("10.0.0.0/8",)
    assert cfg.stun_options == {"rate_per_s": 10.0}
    cfg = build(data, addresses=["198.51.100.1"], http_port=9090, no_stun=True, refused_ports="22-23")
    assert cfg.addresses == ["198.51.100.1"] and cfg.http_port == 9090 and not cfg.run_stun
    assert cfg.dialback.limits.refused_ports == {22, 23}


@pytest.mark.parametrize("data, flags, match", [
    ({"bogus": 1}, {}, "unknown key"),
    ({"dialback": {"bogus": 1}}, {}, "unknown \\[dialback\\]"),
    ({"dialback": {"address_burst": "many"}}, {}, "bad \\[dialback\\] value"),
    ({}, {"addresses": ["example.org"]}, "not an IP address"),
    ({}, {"addresses": ["203.0.113.10"], "alt_address": "203.0.113.10"}, "must differ"),
    ({}, {"addresses": ["2001:db8::1"], "alt_address": "203.0.113.11"}, "same IP family"),
    ({}, {"http_port": 70000}, "out of range"),
    ({}, {"trusted_proxies": ["nope"]}, "trusted-proxy"),
    ({}, {"refused_ports": "1-x"}, "bad \\[dialback\\] value"),
])
def test_bad_config(data: dict[str, object], flags: dict[str, object], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        build(data, **flags)


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        cm.load(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("addresses = [")
    with pytest.raises(UsageError, match="not valid TOML"):
        cm.load(bad)


def test_cli_reports_config_error_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["serve", "--address", "not-an-ip"])
    assert result.exit_code == 2
    assert "not an IP address" in result.output and "Traceback" not in result.output
