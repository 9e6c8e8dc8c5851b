"""Typed TOML configuration (nodereach.tomlconfig) and the two files that use it (serve, check --config):
strict types, unknown keys refused, and every mistake one line naming the file, the key and what is expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodereach import tomlconfig
from nodereach.diagnose.command import CheckFile, load_config
from nodereach.errors import UsageError
from nodereach.serve.config import ServeFile


@pytest.mark.parametrize("text, message", [
    ("servers = 5", "c.toml: key servers: expected array, got int"),
    ('timeout = "soon"', "c.toml: key timeout: expected float, got str"),
    ("[check]\ntimeout = 1000", "c.toml: key check.timeout: expected float <= 300.0"),
    ('[check]\nservers = ["a"]\nbogus = 1', "c.toml: unknown key check.bogus"),
    ('server = ["a"]', "c.toml: unknown key server"),  # a typo is named, not ignored
    ("ports = [30303]", "c.toml: key ports[0]: expected str, got int"),
    ('"a\\nb" = 1', 'c.toml: unknown key "a\\nb"'),  # quoted as TOML writes it: still one line
    ('"\\n`" = 1', 'c.toml: unknown key "\\n`"'),  # a backtick in the key (msgspec quotes it with backticks)
])
def test_check_config_mistakes_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(UsageError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{tmp_path}/{message}") and "\n" not in str(err.value)


def test_check_config_shared_file(tmp_path: Path) -> None:
    """Under [check], other commands' tables may sit in the same file; without it the keys are the check's."""
    path = tmp_path / "nodereach.toml"
    path.write_text('[check]\nports = ["30303/udp"]\ntimeout = 3\n[watch]\ninterval = 60\n')
    assert load_config(path) == CheckFile(ports=["30303/udp"], timeout=3.0)
    path.write_text('servers = ["203.0.113.10"]\nstun_servers = ["203.0.113.30:3478"]\n')
    assert load_config(path) == CheckFile(servers=["203.0.113.10"], stun_servers=["203.0.113.30:3478"])


TOML_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8)
KEYS = st.sampled_from(["addresses", "alt_address", "stun_port", "run_stun", "log_level", "dialback", "stun",
                        "probe_timeout", "address_burst", "refused_ports", "servers", "ports", "timeout", "check",
                        "bogus"])


@settings(deadline=None)
@given(st.dictionaries(KEYS | st.text(max_size=70),
                       TOML_VALUE | st.dictionaries(KEYS | st.text(), TOML_VALUE, max_size=3), max_size=4),
       st.sampled_from([ServeFile, CheckFile]))
def test_any_data_gives_the_struct_or_one_usage_error(data: dict[str, Any], into: type[Any]) -> None:
    try:
        value = tomlconfig.convert(data, into, "x.toml")
    except UsageError as exc:
        assert str(exc).startswith("x.toml: ") and "\n" not in str(exc)
        return
    assert isinstance(value, into)
