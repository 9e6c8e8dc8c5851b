"""Keep port mappings alive: map, renew, notice gateway restarts and address changes, delete on exit.

Renewal at 1/2 of the lease (PCP: a random point between 1/2 and 5/8, RFC 6887 §11.2.1). A cheap poll
between renewals (PCP/NAT-PMP epochs, UPnP GetSpecificPortMappingEntry) notices a gateway that lost its
state, and the mappings are re-created at once, on the same external port where the gateway allows it.
The gateway's own announcements (PCP ANNOUNCE, NAT-PMP notices, UPnP SSDP NOTIFY with a new BOOTID) make
it look at once, and a gateway that stops answering is checked every 2 s for the first minutes, so a
rebooted router has its mappings back within seconds of answering again (issue 12). Failures to renew are
retried with backoff; the lease keeps the mapping alive meanwhile.

Time comes from a Clock (portmap/clock.py): the event loop's by default, a virtual one in tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal

from nodereach.net import Family, Transport
from nodereach.portmap import pcp
from nodereach.portmap.base import METHODS, METHODS6, Driver, Grant, Method, Slot, is_unroutable
from nodereach.portmap.clock import REAL_CLOCK, Clock
from nodereach.portmap.errors import NotAvailable, PortmapError
from nodereach.portmap.gateway import Gateway, find_gateway_async
from nodereach.portmap.layers import external_on_gateway
from nodereach.portmap.probe import MethodAvailability, probe_all

EventKind = Literal["mapped", "renewed", "port-changed", "restarted", "address-changed", "error", "deleted",
                    "unreachable"]

MIN_LEASE = 30
MAX_LEASE = 86400
FAST_RETRY_S = 2.0
"""While the gateway has been unreachable for less than FAST_RETRY_WINDOW_S, check it at least this often:
issue 12 asks for every mapping back within 5 s of a rebooted router answering again."""
FAST_RETRY_WINDOW_S = 300.0
"""A longer outage is no reboot: back off exponentially to the poll interval (bounded cost)."""
NUDGE_GAP_S = 1.0
"""At most one announcement-triggered check per this many seconds (anyone on the LAN can send them)."""


@dataclass(frozen=True, slots=True)
class LiveMapping:
    """A live mapping: `external` is what peers should dial."""

    protocol: Transport
    internal_port: int
    external_address: str | None
    external_port: int
    method: Method
    lifetime: int
    family: Family = 4
    """6: an IPv6 pinhole (the external address is the host's own, the port is not translated)."""

    @property
    def external(self) -> tuple[str | None, int]:
        return self.external_address, self.external_port

    def __str__(self) -> str:
        address = self.external_address or "?"
        return f"[{address}]:{self.external_port}/{self.protocol}" if ":" in address else \
            f"{address}:{self.external_port}/{self.protocol}"


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    message: str
    endpoint: LiveMapping | None = None
    previous: LiveMapping | None = None
    lost: tuple[LiveMapping, ...] = ()
    """`restarted`: the mappings the gateway no longer has (re-created next, each then reported `mapped`)."""


@dataclass(slots=True)
class _State:
    slot: Slot
    renew_at: float = 0.0
    failures: int = 0


class PortMapper:
    """Maps a set of ports through the best protocol the gateway offers and keeps them alive."""

    def __init__(self, ports: list[tuple[int, Transport]], *, method: Method | None = None, lease: int = 3600,
                 gateway: str | None = None, timeout: float = 3.0, poll_interval: float | None = None,
                 preferred: dict[tuple[Transport, int], int] | None = None, clock: Clock = REAL_CLOCK,
                 rng: random.Random | None = None, family: Family = 4) -> None:
        if not ports:
            raise ValueError("no ports to map")
        self.requested = ports
        self.preferred = dict(preferred or {})
        """(protocol, internal port) -> external port to ask for first (e.g. the one of the last run)."""
        self.method = method
        self.lease = max(MIN_LEASE, min(int(lease), MAX_LEASE))
        self.gateway_address = gateway
        self.timeout = timeout
        self.poll_interval = poll_interval if poll_interval is not None else min(30.0, self.lease / 4)
        self.clock = clock
        self.rng = rng or random.Random()
        self.family: Family = family
        """4: port mappings on the NAT; 6: pinholes in the router's IPv6 firewall for this host's address."""
        self.gateway: Gateway | None = None
        self.driver: Driver | None = None
        self.probes: dict[str, MethodAvailability] = {}
        self.states: list[_State] = []
        self.external_address: str | None = None
        self.announcements = 0
        """Unsolicited gateway announcements seen (each triggers an immediate poll)."""
        self.nat_in_front: bool | None = None
        """True when the gateway's external address is private/CGNAT or not on the gateway itself."""
        self._listeners: list[Callable[[Event], None]] = []
        self._queues: list[asyncio.Queue[Event | None]] = []
        self._wake = asyncio.Event()
        self.log: list[Event] = []

    # --- notifications ------------------------------------------------------------------------------
    def on_event(self, callback: Callable[[Event], None]) -> None:
        self._listeners.append(callback)

    async def events(self) -> AsyncIterator[Event]:
        """Every event from now on (async iterator; ends when the mapper closes)."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._queues.append(queue)
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self._queues.remove(queue)

    def _emit(self, kind: EventKind, message: str, endpoint: LiveMapping | None = None,
              previous: LiveMapping | None = None, lost: tuple[LiveMapping, ...] = ()) -> None:
        event = Event(kind, message, endpoint, previous, lost)
        self.log.append(event)
        del self.log[:-200]
        for cb in list(self._listeners):
            cb(event)
        for q in self._queues:
            q.put_nowait(event)

    @property
    def endpoints(self) -> list[LiveMapping]:
        return [e for e in (self._endpoint(s) for s in self.states) if e is not None]

    def _endpoint(self, st: _State) -> LiveMapping | None:
        g = st.slot.grant
        if g is None or self.driver is None:
            return None
        return LiveMapping(g.protocol, g.internal_port, g.external_address, g.external_port, self.driver.method,
                           g.lifetime, self.family)

    # --- lifecycle ----------------------------------------------------------------------------------
    async def start(self, driver: Driver | None = None) -> list[LiveMapping]:
        """Discover the gateway, probe in parallel, map every port with the preferred working protocol.

        `driver` skips discovery (a driver the caller built, e.g. PcpClient for an IPv6 firewall)."""
        if driver is not None:
            self.gateway = Gateway(driver.gateway, "")
            self.probes = {driver.method: MethodAvailability(True, None, "given")}
            drivers: dict[str, Driver] = {driver.method: driver}
            methods: tuple[Method, ...] = (driver.method,)
        else:
            if self.family == 6 and self.method == "natpmp":
                raise PortmapError("NAT-PMP cannot open IPv6 pinholes (RFC 6886 is IPv4 only)",
                                   "use --method pcp or upnp with --family 6, or --family 4")
            self.gateway = await find_gateway_async(self.gateway_address, self.family)
            methods = (self.method,) if self.method else (METHODS if self.family == 4 else METHODS6)
            self.probes, drivers = await probe_all(self.gateway, self.timeout, methods)
        if not drivers:
            raise NotAvailable(self._nothing_message(methods), self._nothing_hint())
        reported = next((p.external_address for p in self.probes.values() if p.external_address), None)
        errors: list[str] = []
        hint: str | None = None
        for name in methods:
            driver = drivers.get(name)
            if driver is None:
                continue
            self.driver = driver
            self.states = [_State(Slot(proto, port, pcp.new_nonce())) for port, proto in self.requested]
            try:
                for st in self.states:
                    await self._create(st, first=True)
            except PortmapError as exc:
                errors.append(f"{name}: {exc.message}")
                await self._delete_all()  # roll back what this protocol did map; the next one is tried
                if self.method:
                    await self._raise_if_nat_in_front(reported, f"{name}: {exc.message}")
                    raise PortmapError(f"could not map through {name}: {exc.message}", exc.hint) from exc
                hint = exc.hint
                continue
            for other in drivers.values():
                if other is not driver:
                    await other.close()
            await self._check_layers()
            return self.endpoints
        await self._raise_if_nat_in_front(reported, "; ".join(errors))
        what = "port-mapping protocol could map the ports" if self.family == 4 else \
            "protocol could open IPv6 pinholes for the ports"
        raise PortmapError(f"no {what}: " + "; ".join(errors), hint or (
            "forward the ports by hand on the router, or run `nodereach check`" if self.family == 4 else
            "allow inbound to the ports in the router's IPv6 firewall by hand, or run `nodereach check`"))

    def _nothing_message(self, methods: tuple[Method, ...]) -> str:
        parts = [f"{m}: {self.probes[m].reason}" for m in methods]
        assert self.gateway is not None
        what = "port mapping" if self.family == 4 else "IPv6 pinholes"
        return f"the gateway {self.gateway.address} offers no {what} ({', '.join(parts)})"

    def _nothing_hint(self) -> str:
        by_hand = "forward the port by hand" if self.family == 4 else \
            "allow inbound to the port in the router's IPv6 firewall by hand"
        if self.method:
            return f"try without --method, enable that protocol on the router, or {by_hand}"
        protocols = "UPnP or NAT-PMP/PCP" if self.family == 4 else "UPnP (IGD v2) or PCP"
        return f"enable {protocols} on the router or {by_hand}; `nodereach check` says whether that would help"

    async def _create(self, st: _State, *, first: bool = False, again: bool = False) -> None:
        assert self.driver is not None
        slot = st.slot
        previous = self._endpoint(st)
        wanted = slot.grant.external_port if slot.grant else self.preferred.get(
            (slot.protocol, slot.internal_port), slot.internal_port)
        grant = await self.driver.map(slot, wanted, self.lease)
        slot.grant = grant
        st.failures = 0
        self._schedule(st, grant)
        ep = self._endpoint(st)
        assert ep is not None
        self._note_address(grant.external_address)
        if first or previous is None:
            self._emit("mapped", f"mapped {slot.internal_port}/{slot.protocol} -> {ep} via {ep.method} "
                       f"(lease {grant.lifetime or 'permanent'} s)", ep)
        elif previous.external_port != ep.external_port:
            self._emit("port-changed", f"{slot.internal_port}/{slot.protocol}: external port changed "
                       f"{previous.external_port} -> {ep.external_port}", ep, previous)
        elif again:
            self._emit("mapped", f"re-created {slot.internal_port}/{slot.protocol} -> {ep} via {ep.method}", ep)

    def _schedule(self, st: _State, grant: Grant) -> None:
        now = self.clock.time()
        life = grant.lifetime or self.lease  # permanent: still re-assert it now and then
        frac = self.rng.uniform(0.5, 0.625) if self.driver and self.driver.method == "pcp" else 0.5
        st.renew_at = now + max(1.0, life * frac)

    def _note_address(self, address: str | None) -> None:
        if address is None or address == self.external_address:
            return
        old, self.external_address = self.external_address, address
        for st in self.states:
            if st.slot.grant is not None:
                st.slot.grant.external_address = address
        if old is not None:
            self._emit("address-changed", f"external address changed {old} -> {address}")
            self._check_reachability()

    def _check_reachability(self) -> None:
        if is_unroutable(self.external_address) and self.family == 6:
            self.nat_in_front = True
            self._emit("unreachable", f"the pinholes are for {self.external_address}, which is not a global IPv6 "
                       "address: peers on the internet cannot reach it through them; run `nodereach check`")
        elif is_unroutable(self.external_address):
            self.nat_in_front = True
            self._emit("unreachable", f"the gateway's external address {self.external_address} is private or "
                       "carrier-grade NAT: another NAT sits in front of it, so this mapping cannot make the node "
                       "reachable from the internet; run `nodereach check` for what to do")

    async def _check_layers(self) -> None:
        """Private/CGNAT external address, or a public one the gateway does not own (learned by STUN)."""
        if is_unroutable(self.external_address):
            self._check_reachability()
            return
        if self.external_address is None or ":" in self.external_address:
            return
        owned, router = await external_on_gateway(self.external_address, wait=min(1.0, self.timeout))
        self.nat_in_front = None if owned is None else not owned
        if owned is False:
            self._emit("unreachable", f"the gateway reports the external address {self.external_address}, but "
                       f"that address is not on the gateway ({router or 'a router'} forwarded a packet sent to it): "
                       "another NAT sits in front (double NAT / CGNAT), so this mapping cannot make the node "
                       "reachable; run `nodereach check` for what to do")

    async def _raise_if_nat_in_front(self, reported: str | None, what: str) -> None:
        """When mapping failed: say so plainly if the gateway is itself behind another NAT."""
        if reported is None or ":" in reported:
            return
        if is_unroutable(reported):
            owned: bool | None = False
        else:
            owned, _ = await external_on_gateway(reported, wait=min(1.0, self.timeout))
        if owned is False:
            self.nat_in_front = True
            assert self.gateway is not None
            raise PortmapError(f"the gateway {self.gateway.address} refused the mappings ({what}), and it sits "
                               f"behind another NAT (its external address {reported} is not its own): port mapping "
                               "on it cannot make this node reachable (double NAT / CGNAT)",
                               "run `nodereach check`: ask the provider for a public address or port forwarding, "
                               "or use a relay")

    async def renew(self, st: _State) -> None:
        assert self.driver is not None
        before = self._endpoint(st)
        await self._create(st)
        after = self._endpoint(st)
        if before is not None and after is not None and before.external_port == after.external_port:
            self._emit("renewed", f"renewed {after} (lease {after.lifetime or 'permanent'} s)", after)

    async def _recreate_all(self, why: str) -> None:
        self._emit("restarted", why, lost=tuple(self.endpoints))
        for st in self.states:
            try:
                await self._create(st, again=True)
            except (PortmapError, OSError) as exc:
                st.failures += 1
                st.renew_at = self.clock.time() + min(30.0, 2.0 ** (st.failures - 1))
                self._emit("error", f"re-creating {st.slot.internal_port}/{st.slot.protocol} failed: "
                           f"{getattr(exc, 'message', exc)}")

    async def poll_once(self) -> None:
        assert self.driver is not None
        poll = await self.driver.poll([s.slot for s in self.states])
        if poll.restarted:
            await self._recreate_all(f"the gateway {self.driver.gateway} lost its mappings (restart); re-creating")
            return
        if poll.missing:
            missing = set(poll.missing)
            lost = [st for st in self.states if st.slot.grant and (st.slot.protocol, st.slot.grant.external_port)
                    in missing]
            self._emit("restarted", "the gateway dropped " + ", ".join(
                f"{st.slot.grant.external_port}/{st.slot.protocol}" for st in lost if st.slot.grant)
                + "; re-creating", lost=tuple(e for e in map(self._endpoint, lost) if e is not None))
            for st in lost:
                await self._create(st, again=True)
        self._note_address(poll.external_address)

    def nudge(self) -> None:
        """The gateway announced a restart or a new address (a hint, never trusted): check it now."""
        self._wake.set()

    async def run(self) -> None:
        """Keepalive loop until cancelled. Never raises a PortmapError: failures become `error` events."""
        listener = await self.driver.watch(self.nudge) if self.driver is not None else None
        try:
            await self._loop()
        finally:
            if listener is not None:
                listener.close()

    def _retry_delay(self, failures: int, outage: float) -> float:
        """Next gateway check after `failures` failed ones, `outage` seconds after the first: every
        FAST_RETRY_S at most while the outage is young (a router reboot), so a gateway that answers again is
        seen within that even without an announcement; exponential up to the poll interval after."""
        delay = 2.0 ** (failures - 1)
        if outage < FAST_RETRY_WINDOW_S:
            delay = min(delay, FAST_RETRY_S)
        return min(self.poll_interval, delay)

    async def _loop(self) -> None:
        clock = self.clock
        next_poll = clock.time() + self.poll_interval
        poll_failures = 0
        outage_since = 0.0
        last_nudge: float | None = None
        quiet = asyncio.Event()  # never set: what the loop waits on while a nudge is held back
        while True:
            now = clock.time()
            nudge_at = now if last_nudge is None else max(now, last_nudge + NUDGE_GAP_S)
            if self._wake.is_set() and now >= nudge_at:
                # The gateway announced a restart or a new address: look now. PCP/NAT-PMP also renew every
                # mapping at once (idempotent), because a restart within ~2 s is invisible to the epoch
                # rules; UPnP's check reads each mapping back, which finds the lost ones.
                self._wake.clear()
                last_nudge = now
                self.announcements += 1
                next_poll = now
                if self.driver is not None and self.driver.method != "upnp":
                    for st in self.states:
                        st.renew_at = min(st.renew_at, now)
            due = min([st.renew_at for st in self.states] + [next_poll])
            if self._wake.is_set():
                due = min(due, nudge_at)  # announcements are spoofable: at most one check per NUDGE_GAP_S
            if due > now:
                await clock.wait(quiet if self._wake.is_set() else self._wake, due)
                continue
            if now >= next_poll:
                try:
                    await self.poll_once()
                    poll_failures = 0
                    next_poll = clock.time() + self.poll_interval
                except (PortmapError, OSError) as exc:
                    poll_failures += 1
                    if poll_failures == 1:
                        outage_since = now
                    self._emit("error", f"gateway check failed: {getattr(exc, 'message', exc)}")
                    next_poll = clock.time() + self._retry_delay(poll_failures, now - outage_since)
            for st in self.states:
                if clock.time() >= st.renew_at:
                    try:
                        await self.renew(st)
                    except (PortmapError, OSError) as exc:
                        st.failures += 1
                        st.renew_at = clock.time() + min(self.poll_interval, 2.0 ** (st.failures - 1))
                        self._emit("error", f"renewing {st.slot.internal_port}/{st.slot.protocol} failed: "
                                   f"{getattr(exc, 'message', exc)}")

    async def _delete_all(self, *, quiet: bool = False) -> None:
        if self.driver is None:
            return
        for st in self.states:
            if st.slot.grant is None:
                continue
            ep = self._endpoint(st)
            try:
                async with asyncio.timeout(self.timeout + 1):
                    await self.driver.unmap(st.slot)
            except (PortmapError, TimeoutError, OSError) as exc:
                if not quiet:
                    self._emit("error", f"deleting {ep} failed: {getattr(exc, 'message', exc)} (the lease "
                               "will expire)")
            st.slot.grant = None
            if not quiet:
                self._emit("deleted", f"deleted {ep}", ep)

    async def close(self) -> None:
        """Delete every mapping (the gateway is told; leases are the backstop if it cannot be reached)."""
        await self._delete_all()
        if self.driver is not None:
            await self.driver.close()
        for q in self._queues:
            q.put_nowait(None)


class PortMapping:
    """What `open_port` yields: the live endpoint plus change notifications."""

    def __init__(self, mapper: PortMapper) -> None:
        self.mapper = mapper

    @property
    def endpoint(self) -> LiveMapping:
        return self.mapper.endpoints[0]

    @property
    def external(self) -> tuple[str | None, int]:
        return self.endpoint.external

    @property
    def method(self) -> Method:
        return self.endpoint.method

    @property
    def reachable(self) -> bool:
        """False when another NAT sits in front of the gateway (private/CGNAT or foreign external address)."""
        return not (self.mapper.nat_in_front or is_unroutable(self.mapper.external_address))

    def changes(self) -> AsyncIterator[Event]:
        return self.mapper.events()

    def on_change(self, callback: Callable[[Event], None]) -> None:
        self.mapper.on_event(callback)


@contextlib.asynccontextmanager
async def open_port(port: int, protocol: Transport = "tcp", *, method: Method | None = None, lease: int = 3600,
                    gateway: str | None = None, timeout: float = 3.0,  # noqa: ASYNC109
                    poll_interval: float | None = None, clock: Clock = REAL_CLOCK,
                    family: Family = 4) -> AsyncIterator[PortMapping]:
    """Map `port` on the gateway for the duration of the block, keeping it alive; deleted on exit.

        async with open_port(30303, "tcp") as mapping:
            print(mapping.external)
            async for change in mapping.changes(): ...
    """
    mapper = PortMapper([(port, protocol)], method=method, lease=lease, gateway=gateway, timeout=timeout,
                        poll_interval=poll_interval, clock=clock, family=family)
    try:
        await mapper.start()
        task = asyncio.create_task(mapper.run(), name=f"nodereach-keepalive-{port}/{protocol}")
        try:
            yield PortMapping(mapper)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        await mapper.close()
