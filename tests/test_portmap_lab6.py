"""IPv6 pinholes against a real router: miniupnpd (UPnP WANIPv6FirewallControl:1 and PCP) on the IPv6 home
router, whose RFC 6092 firewall drops unsolicited inbound IPv6.

Every claim is proven with traffic from `peer` on the simulated internet to the client's global IPv6 address:
it is dropped before the pinhole, passes while it is open, and is dropped again after the keeper closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab_fixtures import Ipv6HomeRouter
from nodereach import defaults
from nodereach.lab import addresses as A
from nodereach.lab.rules import MINIUPNPD_CHAIN6, TABLE6
from nodereach.portmap.base import Slot
from nodereach.portmap.errors import PortmapError
from nodereach.portmap.gateway import find_gateway_async
from nodereach.portmap.keeper import Event, PortMapper
from nodereach.portmap.upnp_pinhole import UpnpPinholeClient
from portmap_helpers import EPOCH_VISIBLE_S, restart_miniupnpd_losing_state

pytestmark = pytest.mark.lab
NODEREACH = str(Path(sys.executable).parent / "nodereach")


@pytest.fixture
def router6(ipv6_home_router: Callable[..., Ipv6HomeRouter]) -> Iterator[Callable[..., Ipv6HomeRouter]]:
    """ipv6_home_router, and whatever pinholes a failed test left behind closed afterwards (the lab's reset
    leaves miniupnpd's pinholes alone)."""
    used: list[Ipv6HomeRouter] = []

    def get(scenario: str = "ipv6-firewalled") -> Ipv6HomeRouter:
        gw = ipv6_home_router(scenario)
        used.append(gw)
        return gw

    yield get
    for gw in used:
        gw.lab.exec("router", ["nft", "flush", "chain", "inet", TABLE6, MINIUPNPD_CHAIN6], check=False)


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "NODEREACH_STATE_DIR": str(tmp_path)}


def _lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize("scenario", ["ipv6-firewalled", "cgnat-ipv6"])
@pytest.mark.parametrize("method", ["pcp", "upnp"])
async def test_pinholes_open_renew_close(router6: Callable[..., Ipv6HomeRouter], scenario: str,
                                         method: str) -> None:
    gw = router6(scenario)
    port = {"pcp": 46001, "upnp": 46002}[method]
    assert not gw.inbound(port, "udp") and not gw.inbound(port, "tcp")

    async def open_renew() -> tuple[PortMapper, list[Any], list[Any]]:
        m = PortMapper([(port, "udp"), (port, "tcp")], method=method, family=6, lease=600, timeout=2.0)  # type: ignore[arg-type]
        eps = await m.start()
        for st in m.states:
            await m.renew(st)  # PCP: MAP with the same nonce; UPnP: UpdatePinhole on the UniqueID
        return m, eps, m.endpoints

    m, eps, renewed = await gw.lab.run_async("client", open_renew)
    try:
        assert [(e.external_address, e.external_port, e.family, e.method) for e in eps] == \
            [(gw.client_ip6, port, 6, method)] * 2
        assert [e.external_port for e in renewed] == [port, port]
        assert "renewed" in [e.kind for e in m.log]
        assert gw.inbound(port, "udp") and gw.inbound(port, "tcp")
        assert len(gw.pinhole_rules()) == 2
    finally:
        await gw.lab.run_async("client", m.close)
    assert gw.pinhole_rules() == [], [(e.kind, e.message) for e in m.log]
    assert not gw.inbound(port, "udp") and not gw.inbound(port, "tcp")


async def test_upnp_internal_client_must_be_the_callers_address_as_text(
        router6: Callable[..., Ipv6HomeRouter]) -> None:
    """miniupnpd 2.3.1 compares InternalClient with the SOAP caller's address as text: the same address
    written out in full is refused (606), the canonical form nodereach sends is accepted."""
    gw = router6()

    async def body() -> tuple[str, int]:
        g = await find_gateway_async(family=6)
        client = await UpnpPinholeClient.discover(g, wait=2.0)
        expanded = socket.inet_pton(socket.AF_INET6, g.local_address).hex()
        client.internal_client = ":".join(expanded[i:i + 4] for i in range(0, 32, 4))
        try:
            await client.map(Slot("udp", 46003, b""), 46003, 600)
        except PortmapError as exc:
            refused = exc.message
        else:
            refused = "accepted"
        client.internal_client = g.local_address  # the canonical text (what the driver sends)
        slot = Slot("udp", 46003, b"")
        slot.grant = await client.map(slot, 46003, 600)
        pinhole = slot.grant.pinhole_id
        await client.unmap(slot)
        assert pinhole is not None
        return refused, pinhole

    refused, pinhole = await gw.lab.run_async("client", body)
    assert "not authorized (error 606)" in refused
    assert pinhole >= 0 and gw.pinhole_rules() == []


@pytest.mark.parametrize("method", ["pcp", "upnp"])
async def test_pinhole_back_within_5_s_of_the_router_answering(router6: Callable[..., Ipv6HomeRouter],
                                                              method: str) -> None:
    """A router that restarts and forgets its pinholes: with `open`'s defaults (a check every 30 s) the keeper
    opens them again at once: UPnP from the NOTIFYs on ff02::c, PCP from miniupnpd's ANNOUNCE, which it sends
    to 224.0.0.1 only (the IPv6 keeper listens there too on a dual-stack LAN)."""
    gw = router6()
    port = {"pcp": 46011, "upnp": 46012}[method]
    stop = threading.Event()
    ready: list[Any] = []
    stamped: list[tuple[float, Event]] = []

    async def keep() -> None:
        m = PortMapper([(port, "udp")], method=method, family=6)  # type: ignore[arg-type]
        m.on_event(lambda ev: stamped.append((time.monotonic(), ev)))
        ready.append(await m.start())
        task = asyncio.create_task(m.run())
        try:
            await asyncio.to_thread(stop.wait, 60)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await m.close()

    keeper = asyncio.ensure_future(gw.lab.run_async("client", keep))
    try:
        for _ in range(100):
            if ready or keeper.done():
                break
            await asyncio.sleep(0.1)
        assert ready, "the keeper did not open the pinhole"
        assert gw.inbound(port, "udp")
        await asyncio.sleep(EPOCH_VISIBLE_S)  # until the epoch rules can see a restart
        stopped = time.monotonic()
        await asyncio.to_thread(restart_miniupnpd_losing_state, gw.lab)
        answering = time.monotonic()
        assert not gw.pinhole_rules() or any(t >= stopped and e.kind == "mapped" for t, e in stamped)
        back = None
        while time.monotonic() - answering < 8 and back is None:
            back = next((t for t, e in list(stamped) if t >= stopped and e.kind in ("mapped", "renewed")), None)
            await asyncio.sleep(0.05)
        assert back is not None and back - answering < 5.0, "the pinhole was not opened again within 5 s"
        assert gw.inbound(port, "udp")
    finally:
        stop.set()
        await asyncio.wait_for(keeper, 20)
    assert gw.pinhole_rules() == []


async def test_pcp_announcement_on_ff02_1_wakes_the_keeper(router6: Callable[..., Ipv6HomeRouter]) -> None:
    """RFC 6887 §14.1.3: an IPv6 PCP server announces to ff02::1 port 5350 (from its link-local address).
    miniupnpd does not, so the router's own address sends one by hand here."""
    gw = router6()
    port = 46021
    stop = threading.Event()
    mappers: list[PortMapper] = []

    async def keep() -> None:
        m = PortMapper([(port, "udp")], method="pcp", family=6, poll_interval=600)
        await m.start()
        mappers.append(m)
        task = asyncio.create_task(m.run())
        try:
            await asyncio.to_thread(stop.wait, 30)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await m.close()

    keeper = asyncio.ensure_future(gw.lab.run_async("client", keep))
    try:
        for _ in range(100):
            if mappers:
                break
            await asyncio.sleep(0.1)
        assert mappers
        await asyncio.sleep(0.3)  # the listener joins as run() starts
        before = mappers[0].announcements
        announce = bytes([2, 0x80, 0, 0]) + bytes(4) + (5).to_bytes(4, "big") + bytes(12)  # ANNOUNCE, epoch 5
        index = int(gw.lab.exec("router", ["cat", "/sys/class/net/lan/ifindex"]).stdout)
        with contextlib.closing(gw.lab.socket("router", socket.AF_INET6, socket.SOCK_DGRAM)) as s:
            s.bind(("::", 0))  # miniupnpd holds 5351; the keeper checks the source address, not the port
            for _ in range(3):
                s.sendto(announce, ("ff02::1", 5350, 0, index))
                await asyncio.sleep(0.3)
                if mappers[0].announcements > before:
                    break
        assert mappers[0].announcements > before
    finally:
        stop.set()
        await asyncio.wait_for(keeper, 20)


async def test_refused_pinhole_gets_a_clear_message(router6: Callable[..., Ipv6HomeRouter],
                                                   tmp_path: Path) -> None:
    """miniupnpd refuses pinholes below port 1024 (606 over UPnP): one line saying why and what to do."""
    gw = router6()
    r = gw.lab.exec("client", [NODEREACH, "open", "999/udp", "--once", "--family", "6", "--method", "upnp",
                               "--timeout", "2"], env=_env(tmp_path), timeout=30, check=False)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "refused an IPv6 pinhole for 999/udp" in r.stderr and "not authorized" in r.stderr
    assert "1024" in r.stderr and "Traceback" not in r.stderr


async def test_cli_both_families_behind_cgnat(router6: Callable[..., Ipv6HomeRouter],
                                             tmp_path: Path) -> None:
    """Behind CGNAT the IPv4 mapping is refused (said plainly) and the IPv6 pinhole works; `mappings` lists
    it from the record and `mappings --delete` closes it."""
    gw = router6("cgnat-ipv6")
    port = 46031
    r = gw.lab.exec("client", [NODEREACH, "open", f"{port}/udp", "--once", "--json", "--lease", "300"],
                    env=_env(tmp_path), timeout=40, check=False)
    events = _lines(r.stdout)
    assert r.returncode == 1, (r.stdout, r.stderr)  # mapped over one family only
    errors = [e for e in events if e["event"] == "error" and e.get("family") == 4]
    assert errors and "behind another NAT" in errors[0]["message"], events
    mapped = [e for e in events if e["event"] == "mapped"]
    assert [(e["family"], e["external_address"], e["external_port"]) for e in mapped] == [(6, gw.client_ip6, port)]
    assert gw.inbound(port, "udp")

    r = gw.lab.exec("client", [NODEREACH, "mappings", "--json"], env=_env(tmp_path), timeout=30, check=False)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    pinholes = [m for m in doc["mappings"] if m["family"] == 6]
    assert [(m["internal_port"], m["protocol"], m["method"]) for m in pinholes] == [(port, "udp", mapped[0]["method"])]

    r = gw.lab.exec("client", [NODEREACH, "mappings", "--delete", f"{port}/udp"], env=_env(tmp_path), timeout=30,
                    check=False)
    assert r.returncode == 0 and "closed the pinhole" in r.stdout, (r.stdout, r.stderr)
    assert not gw.inbound(port, "udp") and gw.pinhole_rules() == []


def _start_dialback(gw: Ipv6HomeRouter) -> subprocess.Popen[Any]:
    proc = gw.lab.spawn("server", [NODEREACH, "serve", "--address", A.SERVER_IP, "--address", A.SERVER_IP6,
                                   "--no-stun"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with contextlib.closing(gw.lab.socket("peer", socket.AF_INET6, socket.SOCK_STREAM)) as s:
            s.settimeout(0.3)
            if s.connect_ex((A.SERVER_IP6, defaults.HTTP_PORT)) == 0:
                return proc
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("nodereach serve did not come up on IPv6")


async def test_cli_verifies_each_family_from_outside(router6: Callable[..., Ipv6HomeRouter],
                                                    tmp_path: Path) -> None:
    """`open --family both --server V4 --server [V6]`: the mapping is dialed back over IPv4, the pinhole over
    IPv6, each from the server's address of its family."""
    gw = router6("ipv6-firewalled")
    server = await asyncio.to_thread(_start_dialback, gw)
    try:
        r = gw.lab.exec("client", [NODEREACH, "open", "46041/tcp", "--once", "--json", "--family", "both",
                                   "--server", A.SERVER_IP, "--server", f"[{A.SERVER_IP6}]"],
                        env=_env(tmp_path), timeout=40, check=False)
        events = _lines(r.stdout)
        assert r.returncode == 0, (r.stdout, r.stderr)
        verified = sorted((e["family"], e["verified"]) for e in events if e["event"] == "verified")
        assert verified == [(4, True), (6, True)], events
    finally:
        server.terminate()
        server.wait(5)
        gw.lab.exec("client", [NODEREACH, "mappings", "--delete", "46041/tcp"], env=_env(tmp_path), timeout=30,
                    check=False)
    assert gw.pinhole_rules() == []
