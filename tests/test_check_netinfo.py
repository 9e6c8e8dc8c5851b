"""netinfo from a child interpreter (pyroute2's import off the check's GIL) gives what the in-process call gives."""

from __future__ import annotations

import asyncio

import pytest

from nodereach.diagnose import netinfo


def test_json_roundtrip() -> None:
    info = netinfo.NetInfo(addresses=frozenset({"10.0.0.2", "::1"}), default_gateway4="10.0.0.1",
                           routes={"203.0.113.10": netinfo.RouteInfo(source="10.0.0.2", gateway="10.0.0.1",
                                                                     interface="eth0", index=2,
                                                                     networks=("10.0.0.0/24",))})
    assert netinfo.from_json(netinfo.to_json(info)) == info


@pytest.mark.parametrize("bad", [b"", b"{}", b"[1]", b'{"routes": 1}', b"\xff"])
def test_malformed_child_output_is_a_typed_error(bad: bytes) -> None:
    with pytest.raises(ValueError):
        netinfo.from_json(bad)


def test_child_matches_in_process() -> None:
    """Loopback only: the route toward 127.0.0.1 and the host's addresses, asked both ways."""
    child = asyncio.run(netinfo.gather_async(["127.0.0.1"], wait_s=10.0))
    here = netinfo.gather(["127.0.0.1"])
    assert child == here
    assert child.routes["127.0.0.1"].interface == "lo"
    assert "127.0.0.1" in child.addresses
