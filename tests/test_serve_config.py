"""serve configuration: TOML file (msgspec, strict), flags on top, validation errors as UsageError (one line
naming the file and the key, exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from nodereach.cli import app
from nodereach.errors import UsageError
from nodereach.reach.limits import LimitsConfig
from nodereach.reach.service import DialbackConfig
from nodereach.serve import config as cm

FLAGS: dict[str, object] = {"addresses": [], "alt_addresses": [], "stun_port": None, "alt_port": None,
                            "http_port": None, "no_stun": False, "no_dialback": False, "log_json": False,
                            "trusted_proxies": []}


def build(data: dict[str, object], **flags: object) -> cm.ServeConfig:
    return cm.build(cm.parse(data, "serve.toml"), **{**FLAGS, **flags})  # type: ignore[arg-type]


def test_defaults_are_the_well_known_ports() -> None:
    cfg = build({}, addresses=["203.0.113.10"], alt_addresses=["203.0.113.11"])
    assert (cfg.stun_port, cfg.alt_port, cfg.http_port) == (3478, 3479, 3480)
    assert cfg.run_stun and cfg.run_dialback and cfg.dialback.alt_addresses == ("203.0.113.11",)
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
    cfg = cm.build(data, **FLAGS)  # type: ignore[arg-type]
    assert cfg.addresses == ["203.0.113.10"] and cfg.http_port == 8080 and cfg.log_json
    assert cfg.dialback.probe_timeout == 1.5 and cfg.dialback.limits.address_burst == 3.0
    assert cfg.dialback.limits.refused_ports == {25} and cfg.dialback.trusted_proxies == ("10.0.0.0/8",)
    assert cfg.stun_options == {"rate_per_s": 10.0}
    cfg = cm.build(data, **{**FLAGS, "addresses": ["198.51.100.1"], "http_port": 9090,  # type: ignore[arg-type]
                            "no_stun": True, "refused_ports": "22-23"})
    assert cfg.addresses == ["198.51.100.1"] and cfg.http_port == 9090 and not cfg.run_stun
    assert cfg.dialback.limits.refused_ports == {22, 23}


@pytest.mark.parametrize("data, flags, match", [
    ({"bogus": 1}, {}, "^serve.toml: unknown key bogus \\(known keys in the top level: addresses, "),
    ({"dialback": {"bogus": 1}}, {}, "^serve.toml: unknown key dialback.bogus \\(known keys in \\[dialback\\]: "),
    ({"dialback": {"address_burst": "many"}}, {}, "^serve.toml: key dialback.address_burst: expected float, got str$"),
    ({"run_stun": "yes"}, {}, "^serve.toml: key run_stun: expected bool, got str$"),  # no bool("yes") coercion
    ({"run_dialback": 0}, {}, "^serve.toml: key run_dialback: expected bool, got int$"),
    ({"http_port": "3480"}, {}, "^serve.toml: key http_port: expected int, got str$"),
    ({"stun_port": 70000}, {}, "^serve.toml: key stun_port: expected int <= 65535$"),
    ({"log_level": "loud"}, {}, "key log_level: invalid value 'loud' \\(use one of: 'debug', 'info', 'warning', "),
    ({"addresses": ["203.0.113.10", 7]}, {}, "^serve.toml: key addresses\\[1\\]: expected str, got int$"),
    ({"dialback": 5}, {}, "^serve.toml: key dialback: expected table, got int$"),
    ({"dialback": {"probe_timeout": 0}}, {}, "key dialback.probe_timeout: expected float > 0"),
    ({"dialback": {"max_in_flight": -1}}, {}, "key dialback.max_in_flight: expected int >= 0"),
    ({}, {"addresses": ["example.org"]}, "not an IP address"),
    ({}, {"addresses": ["203.0.113.10"], "alt_addresses": ["203.0.113.10"]}, "must differ"),
    ({}, {"addresses": ["2001:db8::1"], "alt_addresses": ["2001:DB8:0::1"]}, "must differ"),  # compared canonical
    ({}, {"addresses": ["2001:db8::1"], "alt_addresses": ["203.0.113.11"]}, "same IP family"),
    ({}, {"alt_addresses": ["203.0.113.11"]}, "needs an --address of the same IP family"),
    ({}, {"addresses": ["0.0.0.0"], "alt_addresses": ["203.0.113.11"]}, "not a wildcard"),
    ({}, {"addresses": ["203.0.113.10", "203.0.113.12"]}, "--address given twice for IPv4"),
    ({}, {"addresses": ["203.0.113.10"], "alt_addresses": ["203.0.113.11", "203.0.113.12"]}, "given twice"),
    ({}, {"addresses": ["::ffff:203.0.113.10"]}, "IPv4-mapped"),
    ({"alt_address": "203.0.113.11", "alt_addresses": ["203.0.113.11"]}, {"addresses": ["203.0.113.10"]},
     "both alt_address and alt_addresses"),
    ({"alt_addresses": "203.0.113.11"}, {}, "^serve.toml: key alt_addresses: expected array, got str$"),
    ({}, {"http_port": 70000}, "out of range"),
    ({}, {"trusted_proxies": ["nope"]}, "trusted proxy"),
    ({}, {"refused_ports": "1-x"}, "refused ports '1-x'"),
    ({"dialback": {"refused_ports": "80-70"}}, {}, "refused ports '80-70'"),
])
def test_bad_config(data: dict[str, object], flags: dict[str, object], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        build(data, **flags)


def test_dialback_table_covers_every_limit() -> None:
    """A new field of LimitsConfig or a configurable DialbackConfig field cannot be forgotten in [dialback]."""
    table = set(cm.DialbackTable.__struct_fields__)
    assert set(LimitsConfig.__dataclass_fields__) - {"refused_ports"} <= table
    assert set(DialbackConfig.__dataclass_fields__) >= table - set(LimitsConfig.__dataclass_fields__)
    defaults = build({}).dialback
    assert defaults.limits == LimitsConfig() and defaults.probe_timeout == DialbackConfig().probe_timeout


def test_shipped_example_is_valid() -> None:
    """deploy/serve.example.toml is what operators copy: it must pass the strict check as shipped."""
    example = cm.load(Path(__file__).parents[1] / "deploy" / "serve.example.toml")
    assert example.addresses and example.dialback.address_burst == 10.0 and example.stun
    cfg = cm.build(example, **FLAGS)  # type: ignore[arg-type]
    assert cfg.listen == ["203.0.113.10", "2001:db8:203::10"]  # dual-stack, a second address per family
    assert (cfg.alt_for(4), cfg.alt_for(6)) == ("203.0.113.11", "2001:db8:203::11")


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
    path = tmp_path / "serve.toml"
    path.write_text('addresses = ["203.0.113.10"]\n[dialback]\naddress_burst = "many"\n')
    result = CliRunner().invoke(app, ["serve", "--config", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{path}: key dialback.address_burst: expected float, got str" in lines[0]


def test_dual_stack_by_default_and_one_second_address_per_family() -> None:
    cfg = build({})
    assert cfg.addresses == [] and cfg.listen == ["0.0.0.0", "::"]  # no --address: both families, every address
    cfg = build({}, addresses=["203.0.113.10", "2001:DB8:203::10"],
                alt_addresses=["2001:db8:203:0::11", "203.0.113.11"])
    assert cfg.listen == ["203.0.113.10", "2001:db8:203::10"]  # canonical text (RFC 5952)
    assert (cfg.alt_for(4), cfg.alt_for(6)) == ("203.0.113.11", "2001:db8:203::11")
    assert cfg.dialback.alt_addresses == ("2001:db8:203::11", "203.0.113.11")
    cfg = build({}, addresses=["203.0.113.10", "2001:db8:203::10"], alt_addresses=["2001:db8:203::11"])
    assert (cfg.alt_for(4), cfg.alt_for(6)) == (None, "2001:db8:203::11")  # RFC 5780 over IPv6 only


def test_config_file_keys_for_both_families(tmp_path: Path) -> None:
    path = tmp_path / "serve.toml"
    path.write_text('addresses = ["203.0.113.10", "2001:db8:203::10"]\n'
                    'alt_addresses = ["203.0.113.11", "2001:db8:203::11"]\n')
    cfg = cm.build(cm.load(path), **FLAGS)  # type: ignore[arg-type]
    assert cfg.alt_addresses == ["203.0.113.11", "2001:db8:203::11"]
    path.write_text('addresses = ["203.0.113.10"]\nalt_address = "203.0.113.11"\n')  # the one-string key of before
    assert cm.build(cm.load(path), **FLAGS).alt_addresses == ["203.0.113.11"]  # type: ignore[arg-type]
    # flags replace the file's list as a whole (as --address does)
    flags = {**FLAGS, "addresses": ["2001:db8::1"], "alt_addresses": ["2001:db8::2"]}
    assert cm.build(cm.load(path), **flags).alt_addresses == ["2001:db8::2"]  # type: ignore[arg-type]


def test_cli_takes_an_alt_address_per_family(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["serve", "--address", "203.0.113.10", "--alt-address", "203.0.113.11",
                                      "--alt-address", "2001:db8::11"])
    assert result.exit_code == 2
    assert "--alt-address 2001:db8::11 needs an --address of the same IP family (IPv6)" in result.output
