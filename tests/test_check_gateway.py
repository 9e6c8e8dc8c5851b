"""The check's gateway probe (diagnose.adapters + gateway_child): the children's protocol and bounds, without a
lab (a gateway on loopback that answers nothing), and what a child's answer may contain."""

from __future__ import annotations

import asyncio
import time

import pytest

from nodereach.diagnose import adapters
from nodereach.diagnose.model import PortmapProtocol


def test_child_answers_are_checked() -> None:
    got = adapters._convert({"pcp": {"available": True, "external_address": "198.51.100.2", "reason": "ok"},
                             "natpmp": {"available": "yes", "external_address": 5, "reason": "x" * 500}},
                            ("pcp", "natpmp", "upnp"))
    assert got["pcp"] == PortmapProtocol(available=True, external_address="198.51.100.2", reason="ok")
    assert got["natpmp"].available is None and got["natpmp"].external_address is None
    assert len(got["natpmp"].reason or "") == 200
    assert got["upnp"].reason == "not reported"
    assert adapters._convert([1, 2], ("pcp",))["pcp"].reason == "not reported"


LOOPBACK_SAFE = (("pcp", "natpmp"),)
"""Unicast to the gateway only: the UPnP child's SSDP search is multicast, which must not leave the host
(tests/test_check_homerouter.py runs it inside a lab namespace)."""


async def test_children_answer_for_a_silent_gateway() -> None:
    """127.0.0.2 as the gateway: PCP / NAT-PMP get refused (ICMP port unreachable). Every protocol gets an answer
    or a reason, and the child is gone afterwards."""
    probes = adapters.GatewayProbes(LOOPBACK_SAFE)
    start = time.monotonic()
    result, err = await adapters.portmap("127.0.0.2", probes, wait_s=0.25, bound_s=0.9, local_address="127.0.0.1",
                                         networks=("127.0.0.0/8",), hard_s=10.0, ready_s=10.0)
    took = time.monotonic() - start
    assert err is None and set(result) == {"pcp", "natpmp", "upnp"}
    assert (result["pcp"].available, result["natpmp"].available) == (False, False)
    assert result["upnp"].reason == "not probed"
    assert all(r.reason for r in result.values()), result
    assert took < 10.0
    for child in probes.children:
        assert child.ready_at is not None  # it said when its imports were done
        proc = child.spawned.result()
        assert proc.returncode is not None  # and is not left running


async def test_no_gateway_costs_nothing() -> None:
    probes = adapters.GatewayProbes(LOOPBACK_SAFE)
    try:
        result, err = await adapters.portmap(None, probes, wait_s=0.25, bound_s=0.9)
    finally:
        await probes.close()
    assert err == "no default gateway" and all(r.reason == "no default gateway" for r in result.values())


@pytest.mark.parametrize("ready_at, expected", [(None, 2.0), (0.1, 1.0), (0.8, 1.25)])
def test_soft_end_follows_readiness(ready_at: float | None, expected: float) -> None:
    class Child:
        pass

    child = Child()
    child.ready_at = ready_at  # type: ignore[attr-defined]
    end = adapters._soft_end(child, bound_end=1.0, ready_by=2.0)  # type: ignore[arg-type]
    assert end == pytest.approx(expected)


async def test_gave_up_child_is_reported_and_killed() -> None:
    """A bound too short for the children's imports: their parts are `unknown` with the reason, nothing hangs."""
    probes = adapters.GatewayProbes(LOOPBACK_SAFE)
    result, _err = await adapters.portmap("127.0.0.2", probes, wait_s=0.25, bound_s=0.01, local_address="127.0.0.1",
                                          hard_s=0.01, ready_s=0.01)
    await probes.close()
    assert all(result[m].available is None and "within" in (result[m].reason or "") for m in ("pcp", "natpmp"))
    await asyncio.sleep(0)
