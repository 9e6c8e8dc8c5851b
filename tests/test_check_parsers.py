"""Every parser the check applies to outside input: any input parses or raises its one typed error."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nodereach.diagnose.command import parse_port, parse_server
from nodereach.errors import UsageError


@given(st.text(max_size=40))
def test_parse_port_total(text: str) -> None:
    try:
        specs = parse_port(text)
    except UsageError:
        return
    assert specs and all(1 <= s.port <= 65535 and s.protocol in ("tcp", "udp") for s in specs)


@given(st.text(max_size=60))
def test_parse_server_total(text: str) -> None:
    try:
        spec = parse_server(text)
    except UsageError:
        return
    assert spec.host and 1 <= spec.stun_port <= 65535
