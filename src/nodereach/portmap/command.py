"""`nodereach open` and `nodereach mappings`: parse, run the library, render lines or JSON lines."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from nodereach.errors import UsageError
from nodereach.net import Family, PortSpec, ResolveError, Transport, resolve
from nodereach.portmap import state
from nodereach.portmap.base import METHODS, Method, is_unroutable
from nodereach.portmap.errors import PortmapError
from nodereach.portmap.gateway import host_families
from nodereach.portmap.keeper import Event, LiveMapping, PortMapper

NODE_READ_S = 5.0
"""How long `open` waits for the node's RPC before mapping (only a slow node costs it; `open` is not timed like
`check`). Transmission answers no RPC while its session thread is busy, port forwarding included
(transmission/transmission#2462): with port forwarding on and a router to talk to, its RPC stalled for up to
3 s in the lab, and a shorter bound mapped the port a second time behind its back."""
EXIT_OK = 0
EXIT_UNREACHABLE = 1


def parse_ports(specs: list[str]) -> list[tuple[int, Transport]]:
    """`30303/tcp`, `30303/udp`, or `30303` (both). Duplicates collapse."""
    out: list[tuple[int, Transport]] = []
    for spec in specs:
        try:
            parsed = PortSpec.parse_many(spec)
        except ValueError as exc:
            raise UsageError(str(exc)) from None  # the message says what a port looks like
        for p in parsed:
            if (p.port, p.transport) not in out:
                out.append((p.port, p.transport))
    if not out:
        raise UsageError("no ports given", "e.g. nodereach open 30303/tcp 30303/udp")
    return out


def parse_method(method: str | None) -> Method | None:
    if method is None:
        return None
    m = method.lower().replace("-", "")
    for known in METHODS:
        if m == known:
            return known
    raise UsageError(f"unknown method {method!r}", "use pcp, natpmp or upnp")


def parse_family(family: str | None) -> tuple[Family, ...] | None:
    """`4`, `6` or `both`; None: every family the host has (decided when it runs)."""
    if family is None:
        return None
    text = family.strip().lower().removeprefix("ipv")
    if text == "4":
        return (4,)
    if text == "6":
        return (6,)
    if text == "both":
        return (4, 6)
    raise UsageError(f"unknown family {family!r}", "use --family 4, 6 or both")


class Printer:
    """Human lines or JSON lines (`nodereach.open/1`), one per event, flushed at once for supervisors."""

    def __init__(self, json_out: bool) -> None:
        self.json_out = json_out

    def emit(self, kind: str, message: str, endpoint: LiveMapping | None = None, **extra: Any) -> None:
        if self.json_out:
            doc: dict[str, Any] = {"schema": "nodereach.open/1", "time": round(time.time(), 3), "event": kind,
                                   "message": message}
            if endpoint is not None:
                doc.update(protocol=endpoint.protocol, internal_port=endpoint.internal_port,
                           external_address=endpoint.external_address, external_port=endpoint.external_port,
                           method=endpoint.method, lifetime=endpoint.lifetime, family=endpoint.family)
            doc.update(extra)
            sys.stdout.write(json.dumps(doc) + "\n")
        else:
            sys.stdout.write(f"{kind:>15}  {message}\n")
        sys.stdout.flush()

    def event(self, ev: Event) -> None:
        extra: dict[str, Any] = {}
        if ev.previous is not None:
            extra["previous_external_port"] = ev.previous.external_port
        self.emit(ev.kind, ev.message, ev.endpoint, **extra)


def _record(mapper: PortMapper) -> None:
    """Keep the on-disk record in step (PCP nonces, UPnP pinhole ids, for `nodereach mappings`)."""
    if mapper.driver is None or mapper.gateway is None:
        return
    now = time.time()
    live, gone = [], []
    for st in mapper.states:
        g = st.slot.grant
        if g is None:
            gone.append(st)
            continue
        live.append(state.Record(mapper.driver.method, mapper.driver.gateway, g.protocol, g.internal_port,
                                 g.external_port, g.external_address, st.slot.nonce.hex(),
                                 now + g.lifetime if g.lifetime else 0, mapper.family, g.pinhole_id))
    for st in gone:
        state.remove(mapper.driver.method, mapper.driver.gateway, st.slot.protocol, st.slot.internal_port)
    if live:
        state.upsert(live)


def _recorder(mapper: PortMapper) -> Callable[[Event], None]:
    return lambda _ev: _record(mapper)


async def _server_for(servers: list[str], family: Family) -> str | None:
    """The first --server that has an address of `family`, as HOST:PORT for that address."""
    from nodereach.reach.client import parse_server

    for server in servers:
        host, http_port = parse_server(server)
        try:
            address = (await resolve(host, http_port, family=family, transport="tcp", timeout=2.0))[0]
        except ResolveError:  # no address of this family (or a literal of the other one): the next server
            continue
        return f"[{address}]:{http_port}" if ":" in address else f"{address}:{http_port}"
    return None


async def _verify(printer: Printer, servers: list[str], endpoints: list[LiveMapping], wait: float) -> bool | None:
    """Dial back from a server over each mapping's family; True all reachable, False any unreachable, None when
    it could not tell."""
    try:
        from nodereach.reach.client import probe_port
    except ImportError:
        for ep in endpoints:
            printer.emit("unverified", f"{ep}: the dial-back client is not available in this build", ep)
        return None
    verdicts: list[bool | None] = []
    for ep in endpoints:
        server = await _server_for(servers, ep.family)
        if server is None:
            printer.emit("unverified", f"{ep}: no --server with an IPv{ep.family} address (give --server once per "
                         "family, or a name with both A and AAAA records)", ep, verified=None)
            verdicts.append(None)
            continue
        if ep.external_port != ep.internal_port:
            printer.emit("unverified", f"{ep}: external port differs from the internal one; the dial-back service "
                         "tests the same port number", ep, verified=None)
            verdicts.append(None)
            continue
        # IPv6: ask from the pinhole's own address, so the server dials back the address the pinhole is for
        local = ep.external_address if ep.family == 6 else None
        result = await probe_port(server, ep.internal_port, ep.protocol, timeout=max(wait, 2.0), local_address=local)
        if result.reachable:
            printer.emit("verified", f"{ep}: reachable from {server} ({result.reason})", ep, verified=True)
        elif result.reachable is False:
            what = "mapping" if ep.family == 4 else "pinhole"
            printer.emit("not-reachable", f"{ep}: the gateway accepted the {what} but {server} cannot reach the "
                         f"node through it ({result.reason})", ep, verified=False)
        else:
            printer.emit("unverified", f"{ep}: could not verify from {server} ({result.reason})", ep, verified=None)
        verdicts.append(result.reachable)
    if any(v is False for v in verdicts):
        return False
    return True if verdicts and all(verdicts) else None


async def _start_all(mappers: dict[Family, PortMapper], printer: Printer,
                     ) -> tuple[dict[Family, list[LiveMapping]], dict[Family, PortmapError]]:
    """Start every family's keeper at once. A family that fails is reported (the same message a lone failure
    would raise) and the others go on; nothing started at all raises."""
    outcomes = await asyncio.gather(*(m.start() for m in mappers.values()), return_exceptions=True)
    started: dict[Family, list[LiveMapping]] = {}
    failed: dict[Family, PortmapError] = {}
    unexpected: BaseException | None = None
    for (family, mapper), outcome in zip(mappers.items(), outcomes, strict=True):
        if isinstance(outcome, PortmapError):
            failed[family] = outcome
        elif isinstance(outcome, OSError):
            failed[family] = PortmapError(f"IPv{family}: {outcome}")
        elif isinstance(outcome, BaseException):
            unexpected = unexpected or outcome
        else:
            started[family] = outcome
            continue
        await mapper.close()
    if unexpected is not None:
        for family in started:
            await mappers[family].close()
        raise unexpected
    if not started:
        if len(failed) == 1:
            raise next(iter(failed.values()))
        first = next(iter(failed.values()))
        raise PortmapError("; ".join(f"IPv{f}: {e.message}" for f, e in failed.items()), first.hint)
    for family, exc in failed.items():
        hint = f" ({exc.hint})" if exc.hint else ""
        printer.emit("error", f"IPv{family}: {exc.message}{hint}", family=family)
    return started, failed


async def _open(ports: list[tuple[int, Transport]], method: Method | None, lease: int, once: bool,
                printer: Printer, servers: list[str], wait: float, families: tuple[Family, ...] | None) -> int:
    if families is None:
        families = await host_families()
        if not families:
            raise PortmapError("this host has neither an IPv4 default gateway nor a global IPv6 address",
                               "connect to a network first")
    # Ask for the external ports of the last run first: peers that learned them keep finding the node.
    preferred: dict[tuple[Transport, int], int] = {}
    for rec in state.load_all():
        if rec.family == 4 and (rec.internal_port, rec.protocol) in ports:
            preferred[("tcp" if rec.protocol == "tcp" else "udp", rec.internal_port)] = rec.external_port
    mappers: dict[Family, PortMapper] = {
        f: PortMapper(ports, method=method, lease=lease, timeout=wait, preferred=preferred if f == 4 else None,
                      family=f) for f in families}
    for mapper in mappers.values():
        mapper.on_event(printer.event)
        mapper.on_event(_recorder(mapper))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        started, failed = await _start_all(mappers, printer)
        running = [mappers[f] for f in started]
        unreachable = any(m.nat_in_front or is_unroutable(m.external_address) for m in running)
        code = EXIT_UNREACHABLE if failed or unreachable else EXIT_OK
        if servers:
            verdict = await _verify(printer, servers, [ep for f in started for ep in started[f]], wait)
            if verdict is False:
                code = EXIT_UNREACHABLE
        else:
            printer.emit("unverified", "not verified from outside (give --server HOST to test the mapping)")
        if once:
            printer.emit("exit", "leaving the mappings in place until their leases expire "
                         "(`nodereach mappings --delete PORT/PROTO` removes them)")
            return code
        keepers = [asyncio.create_task(m.run(), name=f"nodereach-keeper-ipv{m.family}") for m in running]
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({*keepers, waiter}, return_when=asyncio.FIRST_COMPLETED)
        for task in keepers:
            task.cancel()
        for task in keepers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        waiter.cancel()
        for mapper in running:
            await mapper.close()
        return code
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


def run_open(ports: list[str], method: str | None, lease: int, once: bool, json_out: bool,
             server: list[str] | str | None, timeout: float, family: str | None = None,
             node: str | None = None) -> int:
    """Map the ports (IPv4) and open pinholes (IPv6) and keep them alive in the foreground (Ctrl-C / SIGTERM
    deletes them). Refuses ports the node maps itself (read from its RPC: `--node`, auto-detected by default,
    `--node none` to skip)."""
    wanted = parse_ports(ports)
    forced = parse_method(method)
    families = parse_family(family)
    if lease < 0:
        raise UsageError("--lease must be positive")
    if timeout <= 0:
        raise UsageError("--timeout must be positive")
    from nodereach.net import PortSpec
    from nodereach.node.choice import NodeChoice
    from nodereach.node.mapping_clash import node_mapping_clash

    try:
        choice = NodeChoice.parse(node)
    except ValueError as exc:
        raise UsageError(f"bad --node: {exc}") from None
    clash = asyncio.run(node_mapping_clash([PortSpec(p, t) for p, t in wanted], choice, budget_s=NODE_READ_S))
    if clash.refuse is not None:
        raise UsageError(clash.refuse)
    printer = Printer(json_out)
    if clash.unread is not None:
        printer.emit("node-unread", clash.unread)
    servers = [server] if isinstance(server, str) else list(server or [])
    return asyncio.run(_open(wanted, forced, lease, once, printer, servers, timeout, families))
