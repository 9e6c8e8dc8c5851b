"""The watcher's loop on a fake clock: hours of watching in milliseconds, against a scripted world.

What is asserted is the schedule and the story the events tell: probe and check counts when nothing
changes, each change declared once within its documented bound, a dead server backed off and reported
once, the keeper's reports passed through at once, `stopped` last."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

from nodereach.net import Endpoint
from nodereach.watch.loop import Watcher
from nodereach.watch.model import (
    Change,
    CheckObservation,
    MappingObservation,
    PortKey,
    PortReach,
    StunAnswer,
)
from nodereach.watch.policy import Policy

S1 = "203.0.113.10:3478"
A, B = "198.51.100.2", "198.51.100.4"
WALL0 = 1_700_000_000.0


class FakeClock:
    def __init__(self, stop_at: float) -> None:
        self.t = 0.0
        self.stop_at = stop_at
        self.stop = asyncio.Event()

    def mono(self) -> float:
        return self.t

    def wall(self) -> float:
        return WALL0 + self.t

    def random(self) -> float:
        return 0.5

    async def sleep(self, seconds: float, wake: asyncio.Event) -> None:
        for _ in range(5):  # tasks that are ready (a full check, the keeper) run before time moves on
            await asyncio.sleep(0)
        if not wake.is_set():
            self.t += seconds
        if self.t >= self.stop_at:
            self.stop.set()
        await asyncio.sleep(0)


@dataclass
class World:
    """What the probes see at a given time: edit it from a timeline."""

    clock: FakeClock
    public: str = A
    server_up: bool = True
    listening: bool = True
    timeline: list[tuple[float, str, object]] = field(default_factory=list)
    asked: list[float] = field(default_factory=list)
    checks: list[float] = field(default_factory=list)

    def advance(self) -> None:
        while self.timeline and self.timeline[0][0] <= self.clock.t:
            _, attr, value = self.timeline.pop(0)
            setattr(self, attr, value)

    async def probe(self, names: list[str]) -> tuple[StunAnswer, ...]:
        self.advance()
        self.asked.append(self.clock.t)
        if not self.server_up:
            return tuple(StunAnswer(n, 4, None, "timeout") for n in names)
        return tuple(StunAnswer(n, 4, Endpoint(self.public, 40000)) for n in names)

    def listening_ports(self, ports: object) -> frozenset[tuple[int, str]]:
        self.advance()
        return frozenset({(30303, "tcp")}) if self.listening else frozenset()

    async def check(self) -> CheckObservation:
        self.advance()
        self.checks.append(self.clock.t)
        if not self.server_up:
            return CheckObservation(self.clock.t, self.clock.wall(), None, error="no server answered")
        ok = self.listening
        return CheckObservation(self.clock.t, self.clock.wall(), "reachable" if ok else "unreachable",
                                (PortReach(PortKey(30303, "tcp"), ok, None if ok else "nothing-listening"),), 1, False,
                                0.5)


class Listeners:
    def __init__(self, world: World) -> None:
        self.world = world

    def listening(self, ports: object) -> dict[tuple[int, str], frozenset[int]]:
        return {ref: frozenset({4}) for ref in self.world.listening_ports(ports)}


POLICY = Policy()  # the shipped defaults: 60 s probes, 5 s confirmations, hysteresis 3, checks every 900 s


def watch(until: float, timeline: list[tuple[float, str, object]], policy: Policy = POLICY,
          keeper: object = None) -> tuple[list[Change], list[str], World, Watcher]:
    clock = FakeClock(until)
    world = World(clock, timeline=sorted(timeline, key=lambda x: x[0]))
    events: list[Change] = []
    errors: list[str] = []
    make = (lambda report: keeper(report, clock)) if keeper is not None else None  # type: ignore[operator]
    w = Watcher(policy, ports=[(30303, "tcp")], servers=[S1], clock=clock, stun=world, check=world.check,
                emit=events.append, error=errors.append, listeners=Listeners(world), keeper=make)

    async def main() -> None:
        await asyncio.wait_for(w.run(clock.stop), 20)

    asyncio.run(main())
    return events, errors, world, w


def kinds(events: list[Change]) -> list[str]:
    return [e.kind for e in events]


def at(events: list[Change], kind: str) -> float:
    return next(e.wall - WALL0 for e in events if e.kind == kind)


def test_an_hour_of_nothing() -> None:
    events, errors, world, _w = watch(3600, [])
    assert kinds(events) == ["started", "stopped"]
    assert errors == []
    assert world.asked == [60.0 * i for i in range(60)]  # t = 0, 60, ..., 3540 (stopped at 3600)
    assert world.checks == [0, 900, 1800, 2700]


def test_public_address_change_declared_within_the_bound_and_checked() -> None:
    events, _, world, _ = watch(1500, [(1000, "public", B)])
    assert kinds(events) == ["started", "public-address-changed", "stopped"]
    t = at(events, "public-address-changed")
    assert 1000 < t <= 1000 + POLICY.detection_bound_s
    assert [c for c in world.checks if 1000 < c < 1100] == [t]  # the declared change triggers a check at once
    assert [round(a - b, 3) for a, b in zip(world.asked[1:], world.asked, strict=False)
            if 1000 < a < 1100] == [60, 5, 5, 60]  # confirmations come 5 s apart


def test_server_outage_backoff_one_event_each_way() -> None:
    events, errors, world, _ = watch(5000, [(610, "server_up", False), (3000, "server_up", True)])
    assert kinds(events) == ["started", "server-unanswered", "server-answering", "stopped"]
    down = [t for t in world.asked if 610 <= t < 3000]
    gaps = [b - a for a, b in itertools.pairwise(down)]
    assert gaps[:5] == [60, 60, 120, 240, 480] and max(gaps) <= 900
    assert errors.count("server-unanswered") == len(down)
    assert errors.count("check-failed") >= 1  # the periodic check could not tell: no change from it
    assert 3000 <= at(events, "server-answering") <= 3000 + 900
    assert "public-address-changed" not in kinds(events)


def test_listener_gone_then_back_after_grace() -> None:
    events, _, _, _ = watch(2500, [(1000, "listening", False), (2000, "listening", True)])
    assert kinds(events) == ["started", "listener-gone", "reachability-changed", "port-unreachable",
                             "listener-back", "reachability-changed", "port-reachable", "stopped"]
    gone = at(events, "listener-gone")
    assert 1000 < gone <= 1000 + POLICY.detection_bound_s
    assert at(events, "port-unreachable") == gone  # one trusted check right after the declared cause
    assert 2000 < at(events, "port-reachable") <= 2000 + POLICY.detection_bound_s


def test_node_restart_within_grace_is_silent() -> None:
    events, _, _, w = watch(1000, [(100, "listening", False), (200, "listening", True)])
    assert kinds(events) == ["started", "stopped"]
    assert w.state.port_reach[PortKey(30303, "tcp")].declared == "reachable"


class FakeKeeper:
    """Reports what a keeper would: mapped at start, lost at 700 (gateway restart), back 0.3 s later."""

    def __init__(self, report: object, clock: FakeClock) -> None:
        self.report = report
        self.clock = clock

    async def run(self) -> None:
        def obs(present: bool) -> MappingObservation:
            return MappingObservation(self.clock.t, self.clock.wall(), 30303, "tcp", present, "pcp",
                                      f"{A}:30303" if present else None, 3600 if present else None)

        self.report(obs(True))  # type: ignore[operator]
        while self.clock.t < 700:  # noqa: ASYNC110  (the fake clock advances only while this task yields)
            await asyncio.sleep(0)
        self.report(obs(False))  # type: ignore[operator]
        self.report(obs(True))  # type: ignore[operator]
        await asyncio.Event().wait()


def test_keeper_reports_pass_through_at_once() -> None:
    events, _, world, _ = watch(1000, [], keeper=FakeKeeper)
    assert kinds(events) == ["started", "mapping-lost", "mapping-restored", "stopped"]
    lost = at(events, "mapping-lost")
    assert 700 <= lost < 760 and at(events, "mapping-restored") == lost
    assert any(lost <= c <= lost + 30 for c in world.checks)  # a check follows the restored mapping
