"""The check's gateway probe (diagnose.adapters over portmap.offers) and its warm-up imports (diagnose.warm),
without a lab: the bounds (a slow part is cut off, quick answers survive it, the rest of the check may extend
it), real PCP / NAT-PMP refusals from a loopback "gateway", and the thread that imports off the main thread.
UPnP's SSDP search is multicast, which must not leave the host: it runs against real miniupnpd and in the plain
scenarios in the lab (tests/test_check_homerouter.py, tests/test_portmap_lab.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import pytest

from nodereach.diagnose import adapters, warm
from nodereach.diagnose.model import PortmapProtocol
from nodereach.diagnose.netinfo import RouteInfo
from nodereach.diagnose.options import CheckOptions
from nodereach.portmap import igd_probe, offers
from nodereach.portmap.base import Method, MethodAvailability
from nodereach.portmap.errors import GatewayTimeout
from nodereach.portmap.gateway import Gateway

LOOPBACK = RouteInfo(source="127.0.0.1", gateway="127.0.0.2", networks=("127.0.0.0/8",))


def fake_ask(delays: dict[str, float], fail: str | None = None) -> object:
    async def ask(name: Method, gw: Gateway, wait: float, http_s: float = 0.5) -> MethodAvailability:
        await asyncio.sleep(delays.get(name, 0.0))
        if name == fail:
            raise RuntimeError("a bug")
        return MethodAvailability(True, "198.51.100.2" if name != "pcp" else None, "ok")

    return ask


async def test_no_gateway_costs_nothing() -> None:
    for route, why in ((None, "no default gateway"), (RouteInfo(source="192.168.1.2"), "no default gateway"),
                       (RouteInfo(gateway="192.168.1.1"), "no source address toward the gateway")):
        result, err = await adapters.portmap(route, bound_s=0.9)
        assert err == why and all(r.reason == why and r.available is None for r in result.values())


async def test_quick_answers_survive_a_slow_part(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offers, "ask", fake_ask({"upnp": 5.0}))
    start = time.monotonic()
    result, err = await adapters.portmap(LOOPBACK, bound_s=0.3, hard_s=3.0)
    assert time.monotonic() - start < 1.0 and err is None
    assert result["natpmp"] == PortmapProtocol(available=True, external_address="198.51.100.2", reason="ok")
    # PCP's ANNOUNCE carries no address: NAT-PMP's, from the same daemon
    assert result["pcp"] == PortmapProtocol(available=True, external_address="198.51.100.2", reason="ok")
    assert result["upnp"].available is None and "no complete answer within 0.3 s" in (result["upnp"].reason or "")


async def test_the_rest_of_the_check_extends_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """While the other probes run, a slow part may finish (up to the hard end); once they are done, it is cut."""
    monkeypatch.setattr(offers, "ask", fake_ask({"upnp": 0.5}))
    others = asyncio.Event()
    result, _ = await adapters.portmap(LOOPBACK, bound_s=0.1, hard_s=3.0, others=others)
    assert result["upnp"].available is True

    monkeypatch.setattr(offers, "ask", fake_ask({"upnp": 5.0}))
    asyncio.get_running_loop().call_later(0.3, others.set)
    start = time.monotonic()
    result, _ = await adapters.portmap(LOOPBACK, bound_s=0.1, hard_s=3.0, others=asyncio.Event())
    assert 2.9 < time.monotonic() - start < 3.5 and result["upnp"].available is None  # the hard end
    start = time.monotonic()
    others = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, others.set)
    result, _ = await adapters.portmap(LOOPBACK, bound_s=0.1, hard_s=3.0, others=others)
    assert 0.25 < time.monotonic() - start < 0.8 and result["upnp"].available is None


async def test_a_bug_is_one_unknown_part(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offers, "ask", fake_ask({}, fail="natpmp"))
    result, err = await adapters.portmap(LOOPBACK, bound_s=0.5)
    assert err is None and result["natpmp"] == PortmapProtocol(reason="probe failed: RuntimeError")
    assert result["upnp"].available is True and result["pcp"].available is True


async def test_waits_for_its_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[float] = []

    async def ask(name: Method, gw: Gateway, wait: float, http_s: float = 0.5) -> MethodAvailability:
        asked.append(time.monotonic())
        return MethodAvailability(False, None, "timeout")

    monkeypatch.setattr(offers, "ask", ask)
    start = time.monotonic()
    result, _ = await adapters.portmap(LOOPBACK, bound_s=1.0, ready=asyncio.sleep(0.2))
    assert len(asked) == 3 and min(asked) - start >= 0.19
    assert all(r.reason == "timeout" for r in result.values())


async def test_loopback_gateway_refuses_pcp_and_natpmp(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real PCP / NAT-PMP exchanges: nothing listens on 127.0.0.2:5351, the kernel's ICMP port unreachable says
    so at once (UPnP's multicast search is replaced: it must not leave the host)."""

    async def no_upnp(gw: Gateway, *, wait: float, http_s: float) -> tuple[str | None, igd_probe.Control]:
        raise GatewayTimeout("UPnP: not searched in this test")

    monkeypatch.setattr(igd_probe, "probe", no_upnp)
    start = time.monotonic()
    result, err = await adapters.portmap(LOOPBACK, bound_s=0.9)
    assert time.monotonic() - start < 0.5 and err is None
    assert (result["pcp"].available, result["pcp"].reason) == (False, "port-unreachable")
    assert (result["natpmp"].available, result["natpmp"].reason) == (False, "port-unreachable")
    assert (result["upnp"].available, result["upnp"].reason) == (False, "timeout")


# --- the warm-up thread ---------------------------------------------------------------------------------


async def test_warmer_imports_in_a_thread_in_order() -> None:
    for name in ("colorsys", "wave", "nodereach_no_such_module"):
        sys.modules.pop(name, None)
    before = sys.getswitchinterval()
    warmer = warm.Warmer([("one", ("colorsys",)), ("two", ("nodereach_no_such_module", "wave"))])
    await warmer.ready("unknown")  # not a group: at once, and it starts nothing
    assert warmer._thread is None
    await warmer.ready("two")  # starts the thread; a module that fails does not stop the group
    assert "colorsys" in sys.modules and "wave" in sys.modules
    await warmer.ready("one")
    assert warmer._thread is not None
    warmer._thread.join(2)
    assert sys.getswitchinterval() == before  # restored once the thread is done


async def test_warmer_without_groups_starts_no_thread() -> None:
    """`nodereach watch`'s checks (warm_imports=False): no thread, so no malloc arena kept for months."""
    warmer = warm.Warmer(())
    warmer.start()
    await warmer.ready("later")
    assert warmer._thread is None


async def test_the_watchers_check_asks_for_no_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    import nodereach.diagnose.engine as engine
    from nodereach.watch.fullcheck import run_full_check

    seen = []

    async def fake_run_check(opts: Any) -> Any:
        seen.append(opts)
        return None

    monkeypatch.setattr(engine, "run_check", fake_run_check)
    await run_full_check(["127.0.0.1"], ["30303/udp"], 3.0)
    assert [(o.warm_imports, o.hold_free_ports) for o in seen] == [(False, False)]
    assert CheckOptions(servers=()).warm_imports is True  # a one-shot check keeps its head start


async def test_warmer_wait_is_bounded() -> None:
    warmer = warm.Warmer([("never", ("colorsys",))])
    warmer._thread = object()  # type: ignore[assignment]  # started, but never signals
    start = time.monotonic()
    await warmer.ready("never", within=0.2)
    assert 0.15 < time.monotonic() - start < 1.0


def test_gateway_probe_imports_no_upnp_client_stack() -> None:
    """The check's gateway probe (offers, igd_probe, the keeper's SSDP search and codec, soap, http1) loads
    neither aiohttp nor async-upnp-client (~0.45 s of CPU); nor do `open`'s drivers any more
    (test_portmap_upnp_actions.py)."""
    code = ("import sys, nodereach.diagnose.engine, nodereach.diagnose.adapters, nodereach.portmap.offers, "
            "nodereach.portmap.igd_probe, nodereach.portmap.ssdp, nodereach.reach.http1; "
            "sys.exit(1 if {'aiohttp', 'async_upnp_client'} & {m.split('.')[0] for m in sys.modules} else 0)")
    assert subprocess.run([sys.executable, "-c", code], timeout=30).returncode == 0
