"""Keepalive logic on a virtual clock: renewals, restarts, epoch jumps, address changes, failures, cleanup.

Nothing sleeps for real: FakeClock fires each deadline the keeper waits for and lets it work until it waits
again, so every assertion is about exact times. An in-memory driver stands in for the gateway where only the
keeper's logic is under test; the epoch tests run the real PCP/NAT-PMP drivers against a small gateway on
loopback whose epoch follows the same virtual clock. External addresses are private on purpose: the keeper's
TTL probe never leaves the machine for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import random
import struct
import typing
from collections.abc import AsyncIterator, Callable

import pytest

from fake_clock import FakeClock
from nodereach.portmap import natpmp, pcp
from nodereach.portmap.base import Grant, Poll, Slot
from nodereach.portmap.clock import LoopClock
from nodereach.portmap.errors import GatewayTimeout
from nodereach.portmap.keeper import PortMapper
from nodereach.portmap.natpmp_client import NatPmpClient
from nodereach.portmap.pcp_client import PcpClient

T0 = 1000.0


class FakeDriver:
    def __init__(self, clock: FakeClock, method: str = "natpmp", lifetime: int = 600) -> None:
        self.clock = clock
        self.method = method
        self.gateway = "10.0.0.1"
        self.lifetime = lifetime
        self.address = "10.1.1.1"
        self.maps: list[tuple[float, int, int]] = []
        self.polls: list[float] = []
        self.unmaps: list[int] = []
        self.next_poll = Poll()
        self.fail_maps = 0
        self.fail_polls = 0

    async def map(self, slot: Slot, external_port: int, lifetime: int) -> Grant:
        if self.fail_maps:
            self.fail_maps -= 1
            raise GatewayTimeout("gateway gone")
        self.maps.append((self.clock.time(), slot.internal_port, external_port))
        return Grant(slot.protocol, slot.internal_port, external_port or slot.internal_port, self.address,
                     self.lifetime)

    async def unmap(self, slot: Slot) -> None:
        self.unmaps.append(slot.internal_port)

    async def poll(self, slots: list[Slot]) -> Poll:
        self.polls.append(self.clock.time())
        if self.fail_polls:
            self.fail_polls -= 1
            raise GatewayTimeout("gateway gone")
        poll, self.next_poll = self.next_poll, Poll()
        poll.external_address = poll.external_address or self.address
        return poll

    async def external_address(self) -> str | None:
        return self.address

    async def watch(self, nudge: Callable[[], None]) -> None:
        self.nudge = nudge

    async def close(self) -> None:
        return None


@contextlib.asynccontextmanager
async def running(mapper: PortMapper, driver: object, clock: FakeClock) -> AsyncIterator[None]:
    """The keeper started on `driver` and parked on the clock; cancelled (and must end) on exit."""
    await mapper.start(driver=driver)  # type: ignore[arg-type]
    parks = clock.parks
    task = asyncio.create_task(mapper.run())
    await clock.parked_after(parks)
    try:
        yield
    finally:
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=5)
        assert done, "the keeper did not end when cancelled"
        if not task.cancelled():
            task.result()


def _kinds(mapper: PortMapper) -> list[str]:
    return [e.kind for e in mapper.log]


async def test_renews_at_half_the_granted_lease() -> None:
    clock = FakeClock(T0)
    d = FakeDriver(clock, lifetime=600)
    m = PortMapper([(30303, "udp")], poll_interval=10_000, clock=clock)
    async with running(m, d, clock):
        await clock.advance(1000)
    assert [t for t, _p, _e in d.maps] == [T0, T0 + 300, T0 + 600, T0 + 900]
    assert _kinds(m).count("renewed") == 3


async def test_granted_lease_not_requested_lease_sets_the_schedule() -> None:
    clock = FakeClock(T0)
    d = FakeDriver(clock, lifetime=120)  # the gateway grants less than the 3600 s asked for
    m = PortMapper([(30303, "udp")], lease=3600, poll_interval=10_000, clock=clock)
    async with running(m, d, clock):
        await clock.advance(200)
    assert [t for t, _p, _e in d.maps] == [T0, T0 + 60, T0 + 120, T0 + 180]


async def test_pcp_renews_between_half_and_five_eighths() -> None:
    clock = FakeClock(T0)
    d = FakeDriver(clock, method="pcp", lifetime=800)
    m = PortMapper([(30303, "udp")], poll_interval=10**6, clock=clock, rng=random.Random(7))
    async with running(m, d, clock):
        await clock.advance(800 * 0.625 * 40)
    gaps = [b - a for (a, _, _), (b, _, _) in itertools.pairwise(d.maps)]
    assert len(gaps) >= 40
    assert all(400 <= g <= 500 for g in gaps), gaps  # RFC 6887 §11.2.1
    assert min(gaps) < 420 and max(gaps) > 480  # drawn at random, not one fixed point


async def test_permanent_grant_is_still_reasserted() -> None:
    clock = FakeClock(T0)
    d = FakeDriver(clock, method="upnp", lifetime=0)  # an IGDv1 router that only grants permanent leases
    m = PortMapper([(30303, "tcp")], lease=600, poll_interval=10_000, clock=clock)
    async with running(m, d, clock):
        await clock.advance(650)
    assert [t for t, _p, _e in d.maps] == [T0, T0 + 300, T0 + 600]


async def test_poll_runs_at_its_interval() -> None:
    clock = FakeClock(T0)
    d = FakeDriver(clock, lifetime=86400)
    m = PortMapper([(30303, "udp")], poll_interval=30, clock=clock)
    async with running(m, d, clock):
        await clock.advance(100)
    assert d.polls == [T0 + 30, T0 + 60, T0 + 90]
    assert len(d.maps) == 1


async def test_restart_recreates_every_mapping_at_once() -> None:
    clock = FakeClock(T0)
    d = FakeDriver(clock, lifetime=600)
    m = PortMapper([(30303, "udp"), (30304, "tcp")], poll_interval=30, clock=clock)
    async with running(m, d, clock):
        await clock.advance(10)
        d.next_poll = Poll(restarted=True)
        await clock.advance(25)
    assert [(t, p) for t, p, _e in d.maps] == [(T0, 30303), (T0, 30304), (T0 + 30, 30303), (T0 + 30, 30304)]
    assert "restarted" in _kinds(m)


async def test_announcement_checks_and_renews_at_once() -> None:
    clock = FakeClock(T0)
    d = FakeDriver(clock, lifetime=600)
    m = PortMapper([(30303, "udp"), (30304, "tcp")], poll_interval=30, clock=clock)
    async with running(m, d, clock):
        await clock.advance(12)
        parks = clock.parks
        m.nudge()  # what a PCP ANNOUNCE / NAT-PMP address notice does
        await clock.parked_after(parks)
    assert d.polls == [T0 + 12]
    assert [(t, p) for t, p, _e in d.maps][2:] == [(T0 + 12, 30303), (T0 + 12, 30304)]
    assert m.announcements == 1


async def test_missing_entry_recreated_on_its_old_port() -> None:
    clock = FakeClock(T0)
    d = FakeDriver(clock, method="upnp", lifetime=600)
    m = PortMapper([(30303, "udp")], poll_interval=30, clock=clock, preferred={("udp", 30303): 41234})
    async with running(m, d, clock):
        d.next_poll = Poll(missing=[("udp", 41234)])
        await clock.advance(30)
    assert d.maps == [(T0, 30303, 41234), (T0 + 30, 30303, 41234)]
    assert any(e.kind == "restarted" and "41234/udp" in e.message for e in m.log)


async def test_restarted_event_names_the_lost_mappings() -> None:
    """Observers (the watcher) learn which mappings were lost: all on a restart, only the missing ones else."""
    clock = FakeClock(T0)
    d = FakeDriver(clock, method="upnp", lifetime=600)
    m = PortMapper([(30303, "udp"), (30304, "tcp")], poll_interval=60, clock=clock)
    await m.start(driver=d)  # type: ignore[arg-type]
    d.next_poll = Poll(missing=[("tcp", 30304)])
    await m.poll_once()
    d.next_poll = Poll(restarted=True)
    await m.poll_once()
    lost = [[(e.protocol, e.internal_port) for e in ev.lost] for ev in m.log if ev.kind == "restarted"]
    assert lost == [[("tcp", 30304)], [("udp", 30303), ("tcp", 30304)]]


async def test_address_change_is_reported() -> None:
    clock = FakeClock(T0)
    d = FakeDriver(clock, lifetime=600)
    m = PortMapper([(30303, "udp")], poll_interval=30, clock=clock)
    async with running(m, d, clock):
        d.address = "10.1.1.2"
        await clock.advance(30)
        ev = [e for e in m.log if e.kind == "address-changed"]
        assert len(ev) == 1 and "10.1.1.1 -> 10.1.1.2" in ev[0].message
        assert m.endpoints[0].external_address == "10.1.1.2"
        await clock.advance(60)
    assert len([e for e in m.log if e.kind == "address-changed"]) == 1  # said once, not at every poll
    assert "unreachable" in _kinds(m)  # private external address: another NAT in front


async def test_renewal_failures_retry_with_backoff_and_recover() -> None:
    clock = FakeClock(T0)
    d = FakeDriver(clock, lifetime=600)
    m = PortMapper([(30303, "udp")], poll_interval=10_000, clock=clock)
    async with running(m, d, clock):
        d.fail_maps = 2
        await clock.advance(310)
    # renewal at +300 fails, retried 1 s later (fails), then 2 s later (succeeds)
    assert [t for t, _p, _e in d.maps] == [T0, T0 + 303]
    errors = [e for e in m.log if e.kind == "error"]
    assert len(errors) == 2 and "gateway gone" in errors[0].message
    assert m.states[0].renew_at == T0 + 303 + 300


async def test_gateway_down_is_checked_every_2_s_then_back_at_the_poll_interval() -> None:
    """A rebooting router: checks 1 s, then every 2 s after the first failure, so it is seen within 2 s of
    answering again (issue 12 asks for 5 s); then the normal interval."""
    clock = FakeClock(T0)
    d = FakeDriver(clock, lifetime=86400)
    m = PortMapper([(30303, "udp")], poll_interval=30, clock=clock)
    async with running(m, d, clock):
        d.fail_polls = 4
        await clock.advance(30 + 1 + 2 + 2 + 2 + 30 + 1)
    assert d.polls == [T0 + 30, T0 + 31, T0 + 33, T0 + 35, T0 + 37, T0 + 67]
    assert _kinds(m).count("error") == 4


async def test_long_outage_backs_off_to_the_poll_interval() -> None:
    clock = FakeClock(T0)
    d = FakeDriver(clock, lifetime=86400)
    m = PortMapper([(30303, "udp")], poll_interval=30, clock=clock)
    async with running(m, d, clock):
        d.fail_polls = 10**6
        await clock.advance(30 + 900)
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(d.polls)]
    fast = [g for a, g in zip(d.polls, gaps, strict=False) if a - (T0 + 30) < 300]
    slow = [g for a, g in zip(d.polls, gaps, strict=False) if a - (T0 + 30) >= 300]
    assert fast[0] == 1 and set(fast[1:]) == {2}
    assert slow[:3] == [30, 30, 30]  # 2**n passed the 30 s poll interval long ago: capped there
    assert len(d.polls) < 30 + 300 / 2 + 600 / 30 + 2  # bounded: ~190 checks in 15 min of outage


async def test_announcement_flood_is_one_check_per_second() -> None:
    clock = FakeClock(T0)
    d = FakeDriver(clock, lifetime=86400)
    m = PortMapper([(30303, "udp")], poll_interval=30, clock=clock)
    async with running(m, d, clock):
        await clock.advance(10)
        parks = clock.parks
        m.nudge()
        await clock.parked_after(parks)  # the first one is checked at once
        for _ in range(50):  # then a burst of (spoofable) announcements
            m.nudge()
            await asyncio.sleep(0)
        await clock.advance(0.5)
        m.nudge()
        await clock.advance(3)
    assert d.polls == [T0 + 10, T0 + 11]
    assert m.announcements == 2


async def test_upnp_announcement_checks_without_renewing() -> None:
    """An SSDP NOTIFY makes the keeper read the mappings back (GetSpecificPortMappingEntry): the lost ones
    are re-created, the others are left alone."""
    clock = FakeClock(T0)
    d = FakeDriver(clock, method="upnp", lifetime=3600)
    m = PortMapper([(30303, "udp"), (30304, "tcp")], poll_interval=30, clock=clock)
    async with running(m, d, clock):
        await clock.advance(5)
        d.next_poll = Poll(missing=[("tcp", 30304)])
        parks = clock.parks
        d.nudge()  # through the driver's watch(), as the SSDP listener calls it
        await clock.parked_after(parks)
    assert d.polls == [T0 + 5]
    assert [(t, p) for t, p, _e in d.maps][2:] == [(T0 + 5, 30304)]


async def test_close_deletes_everything_and_ends_the_iterator() -> None:
    clock = FakeClock(T0)
    d = FakeDriver(clock, lifetime=600)
    m = PortMapper([(30303, "udp"), (30304, "tcp")], poll_interval=60, clock=clock)
    await m.start(driver=d)  # type: ignore[arg-type]
    seen: list[str] = []

    async def consume() -> None:
        async for ev in m.events():
            seen.append(ev.kind)

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0)
    await m.close()
    await asyncio.wait_for(consumer, 2)
    assert sorted(d.unmaps) == [30303, 30304]
    assert seen.count("deleted") == 2


def test_lease_is_clamped() -> None:
    assert PortMapper([(1, "tcp")], lease=5).lease == 30
    assert PortMapper([(1, "tcp")], lease=10**9).lease == 86400
    with pytest.raises(ValueError):
        PortMapper([])


def test_state_remembers_external_ports(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from nodereach.portmap import state

    monkeypatch.setenv("NODEREACH_STATE_DIR", str(tmp_path))
    rec = state.Record("pcp", "10.0.0.1", "udp", 30303, 41234, "10.1.1.1", "00" * 12, time.time() + 60)
    state.upsert([rec])
    assert [r.external_port for r in state.load()] == [41234]
    state.remove("pcp", "10.0.0.1", "udp", 30303)
    assert state.load() == []  # no live mapping any more...
    assert [r.external_port for r in state.load_all()] == [41234]  # ...but the port is remembered
    (state.state_path()).write_text("{not json")
    assert state.load_all() == []  # a damaged file is not fatal


async def test_preferred_external_port_is_asked_first() -> None:
    clock = FakeClock(T0)
    d = FakeDriver(clock, lifetime=600)
    m = PortMapper([(30303, "udp")], poll_interval=60, preferred={("udp", 30303): 41234}, clock=clock)
    await m.start(driver=d)  # type: ignore[arg-type]
    assert d.maps[0][2] == 41234


async def test_loop_clock_waits_for_the_deadline_or_the_wake() -> None:
    clock, loop = LoopClock(), asyncio.get_running_loop()
    wake = asyncio.Event()
    start = clock.time()
    await clock.wait(wake, start + 0.05)
    assert clock.time() - start >= 0.05
    loop.call_later(0.01, wake.set)
    start = clock.time()
    await clock.wait(wake, start + 30)
    assert clock.time() - start < 5


# --- epochs: the real PCP/NAT-PMP drivers against a gateway on loopback -----------------------------------
class EpochGateway(asyncio.DatagramProtocol):
    """Answers NAT-PMP and PCP MAP on loopback; its epoch is seconds since `boot` on the virtual clock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.boot = clock.time()
        self.address = "10.1.1.1"
        self.maps: list[tuple[float, int]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def reboot(self) -> None:
        self.boot = self.clock.time()

    def epoch(self) -> int:
        return int(self.clock.time() - self.boot)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.DatagramTransport, transport)  # 3.11's is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        if data[0] == natpmp.VERSION and data[1] == natpmp.OP_EXTERNAL:
            out = struct.pack("!BBHI", 0, 128, 0, self.epoch()) + ipaddress.IPv4Address(self.address).packed
        elif data[0] == natpmp.VERSION:
            self.maps.append((self.clock.time(), struct.unpack_from("!H", data, 4)[0]))
            out = struct.pack("!BBHI", 0, 128 + data[1], 0, self.epoch()) + data[4:6] + data[4:6] + data[8:12]
        else:
            lifetime = struct.unpack_from("!I", data, 4)[0]
            if data[1] == pcp.OP_MAP:
                self.maps.append((self.clock.time(), struct.unpack_from("!H", data, 40)[0]))
            body = data[24:42] + data[40:42] + pcp.to_wire_address(self.address) if data[1] == pcp.OP_MAP else b""
            out = struct.pack("!BBBBII12x", 2, 0x80 | data[1], 0, 0, lifetime, self.epoch()) + body
        self.transport.sendto(out, addr)


@contextlib.asynccontextmanager
async def epoch_gateway(clock: FakeClock) -> AsyncIterator[tuple[EpochGateway, int]]:
    loop = asyncio.get_running_loop()
    transport, gw = await loop.create_datagram_endpoint(lambda: EpochGateway(clock), local_addr=("127.0.0.1", 0))
    try:
        yield gw, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


@pytest.mark.parametrize("method", ["natpmp", "pcp"])
async def test_epoch_that_keeps_pace_is_no_restart(method: str) -> None:
    clock = FakeClock(T0)
    async with epoch_gateway(clock) as (_gw, port):
        cls = NatPmpClient if method == "natpmp" else PcpClient
        driver = cls("127.0.0.1", timeout=2.0, port=port, clock=clock)
        m = PortMapper([(30303, "udp")], lease=3600, poll_interval=30, clock=clock)
        async with running(m, driver, clock):
            await clock.advance(300)
    assert "restarted" not in _kinds(m)
    assert "error" not in _kinds(m)


@pytest.mark.parametrize("method", ["natpmp", "pcp"])
async def test_epoch_jump_back_recreates_at_the_next_poll(method: str) -> None:
    """The gateway reboots between two polls (no announcement heard): its epoch restarts from 0."""
    clock = FakeClock(T0)
    async with epoch_gateway(clock) as (gw, port):
        cls = NatPmpClient if method == "natpmp" else PcpClient
        driver = cls("127.0.0.1", timeout=2.0, port=port, clock=clock)
        m = PortMapper([(30303, "udp"), (30304, "tcp")], lease=3600, poll_interval=30, clock=clock)
        async with running(m, driver, clock):
            await clock.advance(100)  # polls at +30, +60, +90: the epoch kept pace
            assert "restarted" not in _kinds(m)
            gw.reboot()  # at +100
            before = len(gw.maps)
            await clock.advance(25)  # the next poll, at +120, sees epoch 20 where ~110 was due
    restarts = [e for e in m.log if e.kind == "restarted"]
    assert len(restarts) == 1
    recreated = gw.maps[before:]
    assert {p for _t, p in recreated} == {30303, 30304}
    assert all(t == T0 + 120 for t, _p in recreated)


async def test_natpmp_epoch_too_slow_is_a_restart() -> None:
    """RFC 6886 §3.6: an epoch that advanced much less than our clock means the gateway lost its state."""
    clock = FakeClock(T0)
    async with epoch_gateway(clock) as (gw, port):
        driver = NatPmpClient("127.0.0.1", timeout=2.0, port=port, clock=clock)
        m = PortMapper([(30303, "udp")], lease=3600, poll_interval=30, clock=clock)
        async with running(m, driver, clock):
            await clock.advance(60)
            gw.boot += 25  # the gateway's clock lost 25 s: its epoch is now 35 where ~60 was due
            await clock.advance(30)
    assert [e.kind for e in m.log].count("restarted") == 1


async def test_stop_with_a_reply_in_flight_ends_the_keeper(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hang of test_wan_address_change_reported[natpmp]: a stop that lands in the loop iteration where a
    gateway reply arrives must still end the keeper. asyncio.wait_for on 3.11 returned the reply and dropped
    the cancel (CPython gh-86296); the keeper then ran on and `open_port`'s exit waited for it forever."""
    from nodereach.portmap import udp

    clock = FakeClock(T0)
    armed: list[asyncio.Task[None]] = []
    received = udp._Proto.datagram_received

    def reply_then_stop(self: udp._Proto, data: bytes, addr: tuple[str, int]) -> None:
        received(self, data, addr)  # the reply is queued for the waiting keeper ...
        while armed:
            armed.pop().cancel()  # ... and the stop comes in the same iteration

    monkeypatch.setattr(udp._Proto, "datagram_received", reply_then_stop)
    async with epoch_gateway(clock) as (_gw, port):
        m = PortMapper([(30303, "udp")], lease=3600, poll_interval=30,
                       clock=clock)
        await m.start(driver=NatPmpClient("127.0.0.1", timeout=2.0, port=port, clock=clock))
        parks = clock.parks
        task = asyncio.create_task(m.run())
        await clock.parked_after(parks)
        armed.append(task)
        m.nudge()  # check the gateway now: its reply arrives together with the stop
        done, _ = await asyncio.wait([task], timeout=5)
        if not done:
            task.cancel()
            await asyncio.wait([task], timeout=5)
        assert done, "the keeper swallowed the stop and kept running"
        assert task.cancelled()
