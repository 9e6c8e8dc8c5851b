"""The watcher's loop: thin. It asks the probes, feeds the detector, hands on what the detector declares.

Everything it waits for goes through an injected `Clock`, so the unit tests drive hours of watching in
milliseconds with a fake clock and scripted probes. Nothing here decides anything (detect.py and
schedule.py do); an unexpected failure of a probe or a check is counted and reported once per ten minutes
on stderr, and the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from nodereach.net import Transport
from nodereach.watch import detect, schedule
from nodereach.watch.listeners import ListenerSource
from nodereach.watch.model import (
    Change,
    CheckObservation,
    ErrorKind,
    MappingObservation,
    NodeView,
    ProbeObservation,
    StunAnswer,
)
from nodereach.watch.nodeview import NodeSource
from nodereach.watch.policy import Policy

COMPLAIN_EVERY_S = 600.0


class Clock(Protocol):
    def mono(self) -> float: ...

    def wall(self) -> float: ...

    def random(self) -> float: ...

    async def sleep(self, seconds: float, wake: asyncio.Event) -> None:
        """Return after `seconds`, or earlier when `wake` is set."""


class RealClock:
    def __init__(self) -> None:
        self._rng = random.Random()

    def mono(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def random(self) -> float:
        return self._rng.random()

    async def sleep(self, seconds: float, wake: asyncio.Event) -> None:
        if seconds <= 0 or wake.is_set():
            await asyncio.sleep(0)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await wake.wait()


class StunProbe(Protocol):
    async def probe(self, names: list[str]) -> tuple[StunAnswer, ...]: ...


class Keeper(Protocol):
    async def run(self) -> None: ...


class Watcher:
    def __init__(self, policy: Policy, *, ports: list[tuple[int, Transport]], servers: list[str], clock: Clock,
                 stun: StunProbe, check: Callable[[], Awaitable[CheckObservation]],
                 emit: Callable[[Change], None], error: Callable[[ErrorKind], None],
                 listeners: ListenerSource | None = None, node: NodeSource | None = None,
                 keeper: Callable[[Callable[[MappingObservation], None]], Keeper] | None = None,
                 checked: Callable[[CheckObservation], None] | None = None, started_message: str = "watching") -> None:
        self.policy = policy
        self.ports = ports
        self.clock = clock
        self.stun = stun
        self.check = check
        self.emit = emit
        self.error = error
        self.listeners = listeners
        self.node = node
        self.make_keeper = keeper
        self.checked = checked
        self.state, self._started = detect.start(policy, mono=clock.mono(), wall=clock.wall(), ports=ports,
                                                 servers=servers, message=started_message)
        self._mapping: list[MappingObservation] = []
        self._wake = asyncio.Event()
        self._complained: dict[str, float] = {}
        self.rounds = 0
        self.checks = 0

    # --- what the exporter reads ------------------------------------------------------------------------
    def snapshot(self) -> detect.WatchState:
        return self.state

    # --- the loop ---------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        self.emit(self._started)
        keeper_task = None
        if self.make_keeper is not None:
            keeper_task = asyncio.create_task(self.make_keeper(self._on_mapping).run(), name="nodereach-keeper")
        stopper = asyncio.create_task(self._relay(stop))
        check_task: asyncio.Task[CheckObservation] | None = None
        next_probe = self.clock.mono()
        try:
            while not stop.is_set():
                self._wake.clear()
                self._drain_mapping()
                now = self.clock.mono()
                self._apply(detect.on_tick(self.state, now, self.clock.wall(), self.policy))
                if check_task is not None and check_task.done():
                    self._apply_check(check_task)
                    check_task = None
                if now >= next_probe:
                    # Rounds are spaced from their start: a slow round does not push the next one back.
                    await self._probe_round(now)
                    next_probe = now + schedule.probe_delay(self.state, self.policy)
                    self._drain_mapping()
                if stop.is_set():
                    break
                if check_task is None and schedule.check_due(self.state, self.clock.mono(), self.policy):
                    # The full check runs beside the probes: a check that takes seconds delays no probe.
                    check_task = asyncio.create_task(self._check(), name="nodereach-check")
                    check_task.add_done_callback(lambda _t: self._wake.set())
                now = self.clock.mono()
                wait = next_probe - now
                if check_task is None:
                    wait = min(wait, schedule.check_wait(self.state, now, self.policy))
                tick = schedule.tick_at(self.state, self.policy)
                if tick is not None:
                    wait = min(wait, tick - now)
                if self._mapping or stop.is_set() or (check_task is not None and check_task.done()):
                    continue
                await self.clock.sleep(max(0.0, wait), self._wake)
        finally:
            stopper.cancel()
            for task in (check_task, keeper_task):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            self._drain_mapping()
            self.emit(detect.stop(self.state, self.clock.wall()))

    async def _relay(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    def _on_mapping(self, obs: MappingObservation) -> None:
        self._mapping.append(obs)
        self._wake.set()

    def _drain_mapping(self) -> None:
        pending, self._mapping = self._mapping, []
        for obs in pending:
            self._apply(detect.on_mapping(self.state, obs))

    def _apply(self, step: detect.Step) -> None:
        self.state = step.state
        for kind in step.errors:
            self.error(kind)
        for change in step.changes:
            self.emit(change)

    async def _probe_round(self, now: float) -> None:
        self.rounds += 1
        names = schedule.due_servers(self.state, now)
        stun_job = self._stun(names)
        node_job = self._node()
        answers, node = await asyncio.gather(stun_job, node_job)
        listening = None
        families = None
        if self.listeners is not None:
            try:
                families = self.listeners.listening(self.ports)
            except Exception as exc:  # unreadable table: counted by the detector as listeners-unreadable
                self._complain("listeners", exc)
            listening = frozenset(families) if families is not None else None
        elif not self.ports:
            listening = frozenset()
        obs = ProbeObservation(self.clock.mono(), self.clock.wall(), answers, listening, node, families)
        self._apply(detect.on_probe(self.state, obs, self.policy))

    async def _stun(self, names: list[str]) -> tuple[StunAnswer, ...]:
        if not names:
            return ()
        try:
            return await self.stun.probe(names)
        except Exception as exc:
            self._complain("stun", exc)
            return tuple(StunAnswer(n, 4, None, f"probe failed: {exc}") for n in names)

    async def _node(self) -> NodeView | None:
        if self.node is None:
            return None
        try:
            return await self.node.read()
        except Exception as exc:
            self._complain("node", exc)
            return NodeView(error=str(exc))

    async def _check(self) -> CheckObservation:
        self.checks += 1
        start = self.clock.mono()
        try:
            return await self.check()
        except Exception as exc:  # a bug in the check must not end the watching
            self._complain("check", exc)
            return CheckObservation(self.clock.mono(), self.clock.wall(), None, duration_s=self.clock.mono() - start,
                                    error=str(exc))

    def _apply_check(self, task: asyncio.Task[CheckObservation]) -> None:
        obs = task.result()
        if self.checked is not None and obs.verdict is not None:
            self.checked(obs)
        self._apply(detect.on_check(self.state, obs, self.policy, self.clock.random()))

    def _complain(self, source: str, exc: BaseException) -> None:
        now = self.clock.mono()
        last = self._complained.get(source)
        if last is not None and now - last < COMPLAIN_EVERY_S:
            return
        self._complained[source] = now
        print(f"nodereach watch: {source} failed: {exc.__class__.__name__}: {exc} (further failures of the {source} "
              "are only counted, in nodereach_watch_errors_total, for the next 10 min)", file=sys.stderr, flush=True)
