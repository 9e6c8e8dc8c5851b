"""The check's scheduler: which probe runs when, within one time budget; then `conclude()` on what they saw.

Timeline (one RTT = r): t=0 netlink (child process), test I to every server from the mapping socket, the
filtering socket's plain + CHANGE-REQUEST tests, STUN over TCP, TTL-limited probes (UDP and TCP), outbound
port-path probes, the gateway's port-mapping probe, the dial-back of every --port. t=r: tests II/III to the
OTHER-ADDRESS, the hairpin request. IPv6 runs beside IPv4 from t=0 with the same probes (not the IPv4-only
ones: the path's NAT layers, port filters, hairpinning, the gateway's mapping, the binding lifetime) on an
RTT and loss estimate of its own (another path). Every wait derives from the measured RTT of its family
(diagnose.budget); nothing outlives --timeout. The probes themselves are in diagnose.probes / ports /
adapters / lifetime; the engine only starts them, feeds each the results it depends on, reports progress,
and collects `Observations`.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from nodereach import routes
from nodereach.diagnose import adapters, lifetime, netinfo, ports, probes, warm
from nodereach.diagnose.budget import Budget, Context
from nodereach.diagnose.observations import (
    FamilyObservations,
    FilteringTests,
    Hairpin,
    LifetimeObservation,
    LocalView,
    MappingTests,
    Observations,
    PathTrace,
    PortmapObservation,
    PortPaths,
    PortProbe,
    ServerAnswer,
    TcpTest,
)
from nodereach.diagnose.options import CheckOptions, Progress, ResolvedServer, ServerRoles, resolve_servers, roles
from nodereach.diagnose.stunio import StunSocket
from nodereach.net import Family, PortSpec, address_kind, socket_family
from nodereach.stun.rtt import SharedRtt
from nodereach.stun.transaction import BindingReply

if TYPE_CHECKING:
    from nodereach.diagnose.model import Report
    from nodereach.node.proofs import ProofPlan

__all__ = ["Budget", "Check", "CheckOptions", "Progress", "run_check"]

T = TypeVar("T")

RESOLVE_MAX_S = 1.5
NODE_BUDGET_S = 0.8
"""The node stage's bound (host scan + one RPC read on this host): a node RPC that hangs costs this much of
a run that targets < 1 s, never more."""
LIFETIME_MARGIN_S = 2.0
"""--lifetime runs past --timeout (it takes about --lifetime-max): this much on top."""
NODE_MODULES = ("nodereach.node.view", "nodereach.node.proofs", "nodereach.node.report",
                "nodereach.node.adapters.rpcio")
LATER_MODULES = ("nodereach.diagnose.conclude", "nodereach.node.listeners", "nodereach.node.advertised")
"""What runs once the probes are done (the conclusion, its advice and the node's judgement)."""


def _warm_groups(opts: CheckOptions) -> list[tuple[str, tuple[str, ...]]]:
    """What the warm-up thread imports, in the order the run needs it: the gateway probe (its first packets),
    h11 (the dial-back's HTTP, once its connection is up), the node stage (after the first RTT sample), the
    conclusion (after the probes)."""
    groups = [("portmap", adapters.MODULES), ("http", ("h11",))]
    if opts.node is not None:
        kind = opts.node.spec.kind if opts.node.spec is not None else None
        groups.append(("node", (*NODE_MODULES, *((f"nodereach.node.adapters.{kind}",) if kind else ()))))
    groups.append(("later", LATER_MODULES))
    return groups


def _noop(step: str, state: str, detail: str) -> None:
    return None


def _print_step(t0: float, step: str, state: str, detail: str) -> None:
    print(f"[{time.monotonic() - t0:6.3f}] {step} {state} {detail}", file=sys.stderr)


def _debug_progress() -> Progress | None:
    """NODEREACH_DEBUG=1: step timings on stderr (for tuning deadlines)."""
    if not os.environ.get("NODEREACH_DEBUG"):
        return None
    return partial(_print_step, time.monotonic())


def _value(task: asyncio.Future[T] | None) -> T | None:
    """A finished stage's value; None for one that did not finish in time (or failed: see `_Run.errors`)."""
    if task is None or not task.done() or task.cancelled() or task.exception() is not None:
        return None
    return task.result()


def _step_state(result: object) -> tuple[str, str]:
    """(state, detail) of a progress step from the value its stage returned."""
    if isinstance(result, FilteringTests):
        return ("done" if result.plain is not None else "failed"), ""
    if isinstance(result, TcpTest):
        return ("done" if result.reply is not None or result.reason == "refused" else "failed"), result.reason or ""
    if isinstance(result, PathTrace):
        return "done", f"{len([h for h in result.hops() if h])} hops answered"
    if isinstance(result, PortPaths):
        return ("skipped", "no nodereach server") if result.skipped else ("done", "")
    if isinstance(result, PortmapObservation):
        return ("done", "") if result.error is None else ("skipped", result.error)
    if isinstance(result, LifetimeObservation):
        return "done", result.explanation
    if isinstance(result, ServerAnswer):
        return ("done" if result.reply is not None else "failed"), ""
    return "done", ""


class _FamilyRun(msgspec.Struct):
    """The running stages of one family's probes (their tasks, until collected)."""

    roles: ServerRoles
    source: str | None = None
    local_port: int | None = None
    binding: list[asyncio.Task[ServerAnswer]] = msgspec.field(default_factory=list)
    mapping: asyncio.Task[MappingTests | None] | None = None
    plain: asyncio.Task[BindingReply | None] | None = None
    filtering: asyncio.Task[FilteringTests] | None = None
    tcp: asyncio.Task[TcpTest] | None = None
    path: asyncio.Task[PathTrace] | None = None
    port_paths: asyncio.Task[PortPaths] | None = None
    ports: list[tuple[PortSpec, asyncio.Task[PortProbe]]] = msgspec.field(default_factory=list)
    hairpin: asyncio.Task[Hairpin] | None = None

    def tasks(self) -> list[asyncio.Task[Any]]:
        """Every stage of this family that was started."""
        staged: list[asyncio.Task[Any] | None] = [*self.binding, self.mapping, self.plain, self.filtering, self.tcp,
                                                  self.path, self.port_paths, *(t for _, t in self.ports),
                                                  self.hairpin]
        return [t for t in staged if t is not None]

    def collect(self) -> FamilyObservations:
        servers = self.roles.servers
        answers = tuple(_value(t) or ServerAnswer(s, None) for s, t in zip(servers, self.binding, strict=False))
        return FamilyObservations(
            self.roles.family, servers, source=self.source, local_port=self.local_port, binding=answers,
            mapping=_value(self.mapping),
            filtering=_value(self.filtering), tcp=_value(self.tcp), path=_value(self.path),
            port_paths=_value(self.port_paths),
            ports=tuple(_value(t) or PortProbe(spec, None) for spec, t in self.ports), hairpin=_value(self.hairpin))


def _step4(four: bool, step: str, detail: str) -> tuple[str | None, str]:
    """A stage's progress step: IPv4's stages each have one; IPv6's are reported together as `ipv6`."""
    return (step, detail) if four else (None, "")


class _Run:
    """The state of one run while its stages are in flight: the shared RTT estimate, sockets, tasks."""

    def __init__(self, opts: CheckOptions, progress: Progress, start: float) -> None:
        self.opts = opts
        self.progress = progress
        self.rtt = SharedRtt()
        self.ctx = Context(self.rtt, Budget(start, opts.timeout, self.rtt))
        self.sockets: list[StunSocket] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.errors: list[str] = []
        self.resolved: tuple[ResolvedServer, ...] = ()
        self.net = netinfo.NetInfo()
        self.warm = warm.Warmer(_warm_groups(opts) if opts.warm_imports else ())
        self.source: str | None = None
        self.primary4: str | None = None
        self.runs: dict[Family, _FamilyRun] = {}
        self.families: dict[Family, FamilyObservations] = {}
        self.portmap: asyncio.Task[PortmapObservation] | None = None
        self.others_done = asyncio.Event()
        """Every probe but the gateway's is done: the gateway probe gets no more time than its own bound."""
        self.lifetime: asyncio.Task[LifetimeObservation] | None = None
        self.node: asyncio.Task[Any] | None = None
        self.plan: asyncio.Future[ProofPlan] | None = None
        """The node stage's choice of proofs, shared by the families' dial-backs."""

    async def observe(self) -> Observations:
        budget = self.ctx.budget
        extra = self.opts.lifetime_max + LIFETIME_MARGIN_S if self.opts.lifetime else 0.0
        timed_out = False
        try:
            async with asyncio.timeout(max(0.2, budget.end - time.monotonic() + 0.1 + extra)):
                await self._schedule()
                await asyncio.gather(*(t for t in self.tasks if t is not self.portmap), return_exceptions=True)
                self.others_done.set()
                await asyncio.gather(*self.tasks, return_exceptions=True)
        except TimeoutError:
            timed_out = True
        finally:
            for task in self.tasks:
                task.cancel()
            for s in self.sockets:
                s.close()
        return self._collect(LocalView(self.source, self.primary4, self.net), timed_out)

    # --- stages ----------------------------------------------------------------------------------------
    def _start(self, coro: Coroutine[Any, Any, T], step: str | None = None, detail: str = "") -> asyncio.Task[T]:
        task = asyncio.ensure_future(coro)
        self.tasks.append(task)
        task.add_done_callback(partial(self._finished, step, getattr(coro, "__qualname__", "a probe")))
        if step is not None:
            self.progress(step, "running", detail)
        return task

    def _finished(self, step: str | None, name: str, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # A probe is written never to raise; if one does, its fields are unknown and the run goes on.
            self.errors.append(f"internal error in {name} ({type(exc).__name__}: {exc}); its results are unknown")
            if step is not None:
                self.progress(step, "failed", type(exc).__name__)
            return
        if step is not None:
            state, detail = _step_state(task.result())
            self.progress(step, state, detail)

    async def _open(self, family: Family, ctx: Context) -> StunSocket:
        sock = await StunSocket(ctx.rtt, socket_family(family)).open()
        self.sockets.append(sock)
        return sock

    async def _schedule(self) -> None:
        try:
            await self._start_stages()
        finally:
            # The rest of the imports in a thread (diagnose.warm), once the probes started here have sent their
            # first packets: a callback runs after the task steps scheduled before it. The gateway probe, created
            # last, starts it in its first step where there is one.
            asyncio.get_running_loop().call_soon(self.warm.start)

    async def _start_stages(self) -> None:
        budget = self.ctx.budget
        if self.opts.node is not None:
            # The node's own view (listeners here, its RPC) in parallel with the probes: local work only.
            self.node = self._start(self._node_stage(), "node", "listeners and the node's RPC")
        self.progress("servers", "running", "resolving")
        self.resolved = await resolve_servers(self.opts.servers, min(RESOLVE_MAX_S, budget.left()))
        usable = [s for s in self.resolved if s.addresses]
        v4, v6 = roles(self.resolved, 4), roles(self.resolved, 6)
        # The kernel's tables (/proc, a millisecond): the gateway is known before the first probe goes out.
        self.net = netinfo.gather([s.address(4) or s.addresses[0] for s in usable])
        self.progress("servers", "done", f"{len(usable)} of {len(self.opts.servers)} usable")
        primary = v4.primary
        if primary is None:
            self.families[4] = FamilyObservations(4, (), unavailable="no usable IPv4 server")
            await self._start_ipv6(v6)
            return
        self.primary4 = primary.address(4)
        self.source, route_error = routes.source_toward(self.primary4)
        if route_error is not None:
            self.families[4] = FamilyObservations(4, v4.servers, unavailable=f"no route to the servers ({route_error})",
                                                  route_error=True)
            await self._start_ipv6(v6)
            return
        try:
            await self._start_family(v4, self.ctx, self.source)
        except OSError as exc:  # no UDP socket for this family: nothing to probe with
            self.families[4] = FamilyObservations(4, v4.servers, unavailable=f"cannot open a UDP socket "
                                                                             f"({exc.strerror or exc})")
            return
        await self._start_ipv6(v6)
        assert self.primary4 is not None
        self.portmap = self._start(adapters.gateway_protocols(self.net, self.primary4, self.ctx,
                                                              self.warm.ready("portmap"), self.others_done),
                                   "portmap", "PCP / NAT-PMP / UPnP on the gateway")
        stun = primary.stun(4)
        if self.opts.lifetime and stun is not None:
            self.lifetime = self._start(lifetime.probe(stun, self.opts.lifetime_max, self.ctx), "lifetime",
                                        f"up to {self.opts.lifetime_max:g} s")

    async def _node_stage(self) -> Any:
        """Started once the first RTT sample is in (bounded wait) and its modules are imported (diagnose.warm):
        its CPU work (a /proc walk) then does not delay the first replies, whose times set every later
        deadline."""
        await self.ctx.first_rtt()
        await self.warm.ready("node")
        from nodereach.node.view import observe

        assert self.opts.node is not None
        return await observe(self.opts.ports, self.opts.node, budget_s=NODE_BUDGET_S,
                             secrets=self.opts.node_secrets, pick=self.opts.port_pick, host=self.opts.host_scan)

    def _may_prove(self, spec: PortSpec) -> bool:
        """False when the node named with --node proves nothing over this transport (geth's TCP port: RLPx)."""
        kind = self.opts.node.spec.kind if self.opts.node is not None and self.opts.node.spec is not None else None
        if kind is None:
            return True
        from nodereach.node.proofs import PROVES

        return spec.transport in PROVES[kind]

    def _proof_plan(self) -> asyncio.Future[ProofPlan] | None:
        """Which proof each of the node's ports gets (nodereach.node.proofs), once the node stage is done: None
        without a node stage (`--node none`), so the dial-back stays as it was."""
        if self.node is None:
            return None
        if self.plan is not None:
            return self.plan
        node = self.node

        async def plan() -> ProofPlan:
            from nodereach.node.proofs import ProofPlan, plan_for

            try:
                obs = await asyncio.shield(node)
            except Exception:  # the node stage failed: its error is reported there
                return ProofPlan()
            return plan_for(obs, own_pid=os.getpid())

        self.plan = asyncio.ensure_future(plan())
        self.tasks.append(self.plan)
        return self.plan

    async def _start_ipv6(self, v6: ServerRoles) -> None:
        """IPv6's probes, when a server has an IPv6 address and this host a route toward it. A host without IPv6
        (no route, only link-local addresses, no socket) is `untested` with the reason, never unreachable."""
        primary = v6.primary
        if primary is None:
            self.families[6] = FamilyObservations(6, ())
            return
        dest = primary.address(6)
        source, route_error = routes.source_toward(dest)
        if route_error is not None or source is None or address_kind(source) == "link-local":
            why = route_error or "only a link-local source address"
            self.families[6] = FamilyObservations(
                6, v6.servers, unavailable=f"no IPv6 connectivity on this host (no route to {dest}: {why})",
                route_error=True)
            return
        # Its own RTT and loss estimate: IPv6 often takes another path (a tunnel, another peering) than IPv4.
        rtt6 = SharedRtt()
        ctx6 = Context(rtt6, Budget(self.ctx.budget.start, self.opts.timeout, rtt6))
        try:
            run = await self._start_family(v6, ctx6, source)
        except OSError as exc:
            self.families[6] = FamilyObservations(6, v6.servers, source=source, unavailable=f"cannot open an IPv6 "
                                                  f"UDP socket ({exc.strerror or exc})")
            return
        self.progress("ipv6", "running", "STUN, filtering and dial-back over IPv6")
        done = self._start(asyncio.wait(run.tasks()))
        done.add_done_callback(partial(self._finished, "ipv6", "IPv6"))

    async def _start_family(self, fam: ServerRoles, ctx: Context, source: str | None) -> _FamilyRun:
        """Every probe over one family toward its primary server. IPv4 adds what only it has (the path's NAT
        layers, outbound port filters, hairpinning); IPv6's progress is one step of its own."""
        primary = fam.primary
        assert primary is not None
        dest = primary.stun(fam.family)
        assert dest is not None
        family = fam.family
        four = family == 4
        m_sock = await self._open(family, ctx)
        f_sock = await self._open(family, ctx)
        run = self.runs[family] = _FamilyRun(fam, source=source, local_port=m_sock.local[1])
        step = partial(_step4, four)
        run.binding = [self._start(probes.test1(m_sock, s, family, ctx)) for s in fam.servers]
        if four:
            self.progress("mapping", "running", "RFC 5780 mapping tests")
            run.binding[0].add_done_callback(partial(self._finished, "mapping", "test1"))
        run.mapping = self._start(probes.mapping_tests(m_sock, dest, asyncio.shield(run.binding[0]), ctx))
        run.plain = self._start(probes.request(f_sock, dest, ctx))
        run.filtering = self._start(probes.filtering_tests(f_sock, dest, asyncio.shield(run.plain), ctx),
                                    *step("filtering", "CHANGE-REQUEST tests (own socket)"))
        run.tcp = self._start(probes.tcp_test(dest, ctx), *step("tcp", "STUN over TCP"))
        if four:
            run.path = self._start(probes.path_trace(dest, dest, ctx), "path", "TTL-limited probes")
            run.port_paths = self._start(ports.port_paths(primary, family, self.opts.ports, ctx), "filters",
                                         "outbound port paths")
        dialer = fam.dialback
        if dialer is not None and self.opts.ports:
            hold = self.opts.hold_free_ports
            plan = self._proof_plan()
            slots = ports.Slots()
            run.ports = [(p, self._start(ports.port_probe(dialer, family, p, ports.dialback_copies(self.opts.ports, p),
                                                          ctx, listen=hold, plan=plan if self._may_prove(p) else None,
                                                          slots=slots)))
                         for p in self.opts.ports]
            if four:
                self.progress("ports", "running", ", ".join(str(p) for p in self.opts.ports))
                done = self._start(asyncio.wait([t for _, t in run.ports]))
                done.add_done_callback(partial(self._finished, "ports", "dial-back"))
        if four:
            run.hairpin = self._start(probes.hairpin(m_sock, f_sock, asyncio.shield(run.binding[0]),
                                                     asyncio.shield(run.plain), ctx), "hairpin")
        return run

    # --- collecting ------------------------------------------------------------------------------------
    def _collect(self, local: LocalView, timed_out: bool) -> Observations:
        families = dict(self.families)
        for family, run in self.runs.items():
            families[family] = run.collect()
        return Observations(options=self.opts, servers=self.resolved, families=families, local=local,
                            portmap=_value(self.portmap), lifetime=_value(self.lifetime), timed_out=timed_out,
                            errors=tuple(self.errors), node=_value(self.node))


class Check:
    """One run of the check: `await Check(opts, progress).run()` gives the report."""

    def __init__(self, opts: CheckOptions, progress: Progress | None = None) -> None:
        self.opts = opts
        self.progress = progress or _debug_progress() or _noop

    async def run(self) -> Report:
        start = time.monotonic()
        run = _Run(self.opts, self.progress, start)
        observations = await run.observe()
        await run.warm.ready("later")  # imported by now, unless the run ended early
        from nodereach.diagnose.conclude import conclude

        report = conclude(observations)
        report.duration_s = round(time.monotonic() - start, 3)
        self.progress("verdict", "done", report.verdict)
        return report


async def run_check(opts: CheckOptions, progress: Progress | None = None) -> Report:
    """Run one check and return its report (the library entry: `nodereach check`, `nodereach watch`).
    `progress(step, state, detail)` is called as probes start and finish; it must not block."""
    return await Check(opts, progress).run()
