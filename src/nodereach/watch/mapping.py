"""`--keep-mapped`: the portmap keeper (the same one `nodereach open` runs) inside the watcher.

The keeper maps, renews and re-creates; this adapter only turns what it reports into `MappingObservation`s.
If no gateway offers a mapping the watcher keeps running and tries again with backoff (30 s doubling to
15 min): one `mapping-failed` event, one error count per attempt.

The gateway is asked for PCP first, then NAT-PMP, and only then with the keeper's full parallel probe (which
includes UPnP): a watcher on a PCP or NAT-PMP router never loads the UPnP drivers (defusedxml, h11's client;
the drivers no longer use aiohttp / async-upnp-client, which cost ~12 MiB here until 2026-11-30). It costs a
few seconds once, at start-up, on a router that answers neither (most answer at once with an ICMP error). On
stop the mappings are deleted, as `open` does (their leases are the backstop if the gateway cannot be told).

One keeper per address family, as `nodereach open` runs them (`KeptFamilies`): IPv4 port mappings, and IPv6
pinholes for the host's global address (PCP MAP or UPnP WANIPv6FirewallControl; NAT-PMP is IPv4 only). A
family the host has no route or global address in is not a failure: its keeper waits quietly, looking at the
routing table now and then (a prefix that arrives after start-up, by SLAAC, gets its pinholes then).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from nodereach.net import FAMILIES, Family, Transport
from nodereach.portmap.base import Method
from nodereach.portmap.errors import PortmapError
from nodereach.portmap.gateway import find_gateway_async
from nodereach.portmap.keeper import Event, LiveMapping, PortMapper
from nodereach.watch.model import ErrorKind, MappingObservation
from nodereach.watch.policy import DEFAULT_LEASE_S

START_ORDER: dict[Family, tuple[Method | None, ...]] = {4: ("pcp", "natpmp", None), 6: ("pcp", None)}
"""None: the keeper's own choice after probing every method of the family in parallel (UPnP included)."""
RETRY_FIRST_S = 30.0
RETRY_MAX_S = 900.0
ABSENT_RECHECK_S = 60.0
"""A family the host does not have (no default route, IPv6: no global address) is looked for this often:
reading the routing table from /proc costs microseconds."""


async def has_family(family: Family) -> bool:
    """Can this host map in `family`: a default gateway, and for IPv6 a global address (`open`'s rule)."""
    try:
        await find_gateway_async(family=family)
    except PortmapError:
        return False
    return True


def external_text(m: LiveMapping) -> str:
    address = m.external_address or "?"
    return f"[{address}]:{m.external_port}" if ":" in address else f"{address}:{m.external_port}"


class KeptMappings:
    """The keeper of one address family."""

    def __init__(self, ports: list[tuple[int, Transport]], report: Callable[[MappingObservation], None],
                 error: Callable[[ErrorKind], None], *, sleep: Callable[[float], Awaitable[None]],
                 mono: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 lease: int = DEFAULT_LEASE_S, timeout: float = 3.0,
                 make_mapper: Callable[..., PortMapper] = PortMapper, family: Family = 4,
                 wait_for_family: bool = False,
                 family_present: Callable[[Family], Awaitable[bool]] = has_family) -> None:
        self.family: Family = family
        self.wait_for_family = wait_for_family
        """True: the host does not have this family yet; wait quietly until it does, then keep."""
        self.family_present = family_present
        self.ports = ports
        self.report = report
        self.error = error
        self.sleep = sleep
        self.mono = mono
        self.wall = wall
        self.lease = lease
        self.timeout = timeout
        self.make_mapper = make_mapper
        self.mapper: PortMapper | None = None

    async def run(self) -> None:
        """Map, keep, retry; until cancelled (then the mappings are deleted)."""
        while self.wait_for_family and not await self.family_present(self.family):
            await self.sleep(ABSENT_RECHECK_S)
        failures = 0
        while True:
            started = await self._start()
            if isinstance(started, str):
                failures += 1
                for port, proto in self.ports:
                    self._observe(port, proto, False, error=started)
                await self.sleep(min(RETRY_MAX_S, RETRY_FIRST_S * 2.0 ** (failures - 1)))
                continue
            mapper, live = started
            failures = 0
            self.mapper = mapper
            for m in live:
                self._present(m, renewed=True)
            mapper.on_event(self._on_event)
            try:
                await mapper.run()
            except Exception as exc:  # a keeper that fails must not end the keeping: report, start over
                failures += 1
                self.error("mapping")
                for port, proto in self.ports:
                    self._observe(port, proto, False, error=f"the keeper stopped ({type(exc).__name__}: {exc})")
            finally:
                self.mapper = None
                await mapper.close()
            await self.sleep(min(RETRY_MAX_S, RETRY_FIRST_S * 2.0 ** (max(failures, 1) - 1)))

    async def _start(self) -> tuple[PortMapper, list[LiveMapping]] | str:
        """A started keeper and its mappings, or why none could be started (the last, fullest reason)."""
        why = "no gateway"
        for method in START_ORDER[self.family]:
            mapper = self.make_mapper(self.ports, method=method, lease=self.lease, timeout=self.timeout,
                                      family=self.family)
            try:
                return mapper, await mapper.start()
            except (PortmapError, OSError) as exc:
                why = getattr(exc, "message", None) or str(exc)
            except Exception as exc:  # a driver's bug is one failed attempt, never the end of the keeping
                why = f"the keeper failed ({type(exc).__name__}: {exc})"
            with contextlib.suppress(Exception):
                await mapper.close()
        return why

    def _on_event(self, ev: Event) -> None:
        if ev.kind in ("mapped", "renewed", "port-changed") and ev.endpoint is not None:
            self._present(ev.endpoint, renewed=True)
        elif ev.kind == "restarted":
            for m in ev.lost:
                self._observe(m.internal_port, m.protocol, False, method=m.method)
        elif ev.kind == "address-changed" and self.mapper is not None:
            for m in self.mapper.endpoints:
                self._present(m, renewed=False)
        elif ev.kind == "error":
            self.error("mapping")

    def _present(self, m: LiveMapping, *, renewed: bool) -> None:
        self._observe(m.internal_port, m.protocol, True, method=m.method, external=external_text(m),
                      lifetime=m.lifetime if renewed else None)

    def _observe(self, port: int, proto: Transport, present: bool, *, method: str | None = None,
                 external: str | None = None, lifetime: int | None = None, error: str | None = None) -> None:
        self.report(MappingObservation(self.mono(), self.wall(), port, proto, present, method, external, lifetime,
                                       error, self.family))


class KeptFamilies:
    """--keep-mapped: a keeper per address family, all at once (a family that fails never holds up another).

    `families` None: every family the host has at start (IPv4 with a default gateway, IPv6 with one and a
    global address, as `open --family`'s default); the others wait quietly for the host to get them. A host
    with neither starts the IPv4 keeper anyway, which reports why nothing could be mapped."""

    def __init__(self, families: tuple[Family, ...] | None,
                 make: Callable[[Family, bool], KeptMappings],
                 family_present: Callable[[Family], Awaitable[bool]] = has_family) -> None:
        self.families = families
        self.make = make
        self.family_present = family_present
        self.keepers: list[KeptMappings] = []

    async def run(self) -> None:
        if self.families is not None:
            plan = [(f, False) for f in self.families]
        else:
            present = [f for f in FAMILIES if await self.family_present(f)] or [4]
            plan = [(f, f not in present) for f in FAMILIES]
        self.keepers = [self.make(family, waiting) for family, waiting in plan]
        async with asyncio.TaskGroup() as group:
            for keeper in self.keepers:
                group.create_task(keeper.run(), name=f"nodereach-keeper-ipv{keeper.family}")
