"""Keepalive logic with an in-memory driver (a unit of logic: timing, restarts, failures, cleanup).

External addresses here are private on purpose: the keeper's TTL probe never leaves the machine for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import pytest

from nodereach.portmap.base import Grant, Poll, Slot
from nodereach.portmap.errors import GatewayTimeout
from nodereach.portmap.keeper import Event, PortMapper


class FakeDriver:
    def __init__(self, method: str = "natpmp", lifetime: int = 2) -> None:
        self.method = method
        self.gateway = "10.0.0.1"
        self.lifetime = lifetime
        self.address = "10.1.1.1"
        self.maps: list[tuple[float, int, int]] = []
        self.unmaps: list[int] = []
        self.next_poll = Poll()
        self.fail_maps = 0

    async def map(self, slot: Slot, external_port: int, lifetime: int) -> Grant:
        loop = asyncio.get_running_loop()
        if self.fail_maps:
            self.fail_maps -= 1
            raise GatewayTimeout("gateway gone")
        self.maps.append((loop.time(), slot.internal_port, external_port))
        return Grant(slot.protocol, slot.internal_port, external_port or slot.internal_port, self.address,
                     self.lifetime)

    async def unmap(self, slot: Slot) -> None:
        self.unmaps.append(slot.internal_port)

    async def poll(self, slots: list[Slot]) -> Poll:
        poll, self.next_poll = self.next_poll, Poll()
        poll.external_address = poll.external_address or self.address
        return poll

    async def external_address(self) -> str | None:
        return self.address

    async def close(self) -> None:
        return None


async def _run(mapper: PortMapper, driver: FakeDriver, seconds: float) -> list[Event]:
    await mapper.start(driver=driver)  # type: ignore[arg-type]
    task = asyncio.create_task(mapper.run())
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return list(mapper.log)


async def test_renews_at_half_the_granted_lease() -> None:
    d = FakeDriver(lifetime=2)
    m = PortMapper([(30303, "udp")], poll_interval=60)
    await _run(m, d, 2.3)
    times = [t for t, _p, _e in d.maps]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) >= 3 and all(0.9 < g < 1.25 for g in gaps), gaps
    assert any(e.kind == "renewed" for e in m.log)


async def test_pcp_renews_between_half_and_five_eighths() -> None:
    d = FakeDriver(method="pcp", lifetime=4)
    m = PortMapper([(30303, "udp")], poll_interval=60)
    await _run(m, d, 2.8)
    gap = d.maps[1][0] - d.maps[0][0]
    assert 2.0 <= gap <= 2.5 + 0.2, gap


async def test_restart_recreates_every_mapping_at_once() -> None:
    d = FakeDriver(lifetime=600)
    m = PortMapper([(30303, "udp"), (30304, "tcp")], poll_interval=0.2)
    await m.start(driver=d)  # type: ignore[arg-type]
    task = asyncio.create_task(m.run())
    await asyncio.sleep(0.1)
    d.next_poll = Poll(restarted=True)
    await asyncio.sleep(0.3)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert [p for _t, p, _e in d.maps] == [30303, 30304, 30303, 30304]
    assert any(e.kind == "restarted" for e in m.log)


async def test_missing_entry_recreated_on_its_old_port() -> None:
    d = FakeDriver(method="upnp", lifetime=600)
    m = PortMapper([(30303, "udp")], poll_interval=0.2)
    await m.start(driver=d)  # type: ignore[arg-type]
    d.next_poll = Poll(missing=[("udp", 30303)])
    await m.poll_once()
    assert d.maps[-1][1:] == (30303, 30303)
    assert any(e.kind == "restarted" and "30303/udp" in e.message for e in m.log)


async def test_restarted_event_names_the_lost_mappings() -> None:
    """Observers (the watcher) learn which mappings were lost: all on a restart, only the missing ones else."""
    d = FakeDriver(method="upnp", lifetime=600)
    m = PortMapper([(30303, "udp"), (30304, "tcp")], poll_interval=60)
    await m.start(driver=d)  # type: ignore[arg-type]
    d.next_poll = Poll(missing=[("tcp", 30304)])
    await m.poll_once()
    d.next_poll = Poll(restarted=True)
    await m.poll_once()
    lost = [[(e.protocol, e.internal_port) for e in ev.lost] for ev in m.log if ev.kind == "restarted"]
    assert lost == [[("tcp", 30304)], [("udp", 30303), ("tcp", 30304)]]


async def test_address_change_is_reported() -> None:
    d = FakeDriver(lifetime=600)
    m = PortMapper([(30303, "udp")], poll_interval=60)
    await m.start(driver=d)  # type: ignore[arg-type]
    d.address = "10.1.1.2"
    await m.poll_once()
    ev = [e for e in m.log if e.kind == "address-changed"]
    assert ev and "10.1.1.1 -> 10.1.1.2" in ev[0].message
    assert m.endpoints[0].external_address == "10.1.1.2"
    assert any(e.kind == "unreachable" for e in m.log)  # private external address: another NAT in front


async def test_renewal_failures_retry_with_backoff_and_recover() -> None:
    d = FakeDriver(lifetime=2)
    m = PortMapper([(30303, "udp")], poll_interval=60)
    await m.start(driver=d)  # type: ignore[arg-type]
    d.fail_maps = 2
    task = asyncio.create_task(m.run())
    await asyncio.sleep(4.5)  # renew at 1 s fails, again at 2 s fails, succeeds at 4 s
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    errors = [e for e in m.log if e.kind == "error"]
    assert len(errors) == 2 and "gateway gone" in errors[0].message
    assert len(d.maps) >= 2  # recovered


async def test_close_deletes_everything_and_ends_the_iterator() -> None:
    d = FakeDriver(lifetime=600)
    m = PortMapper([(30303, "udp"), (30304, "tcp")], poll_interval=60)
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
    d = FakeDriver(lifetime=600)
    m = PortMapper([(30303, "udp")], poll_interval=60, preferred={("udp", 30303): 41234})
    await m.start(driver=d)  # type: ignore[arg-type]
    assert d.maps[0][2] == 41234
