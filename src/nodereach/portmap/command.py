"""`nodereach open` and `nodereach mappings`: parse, run the library, render lines or JSON lines."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from typing import Any

from nodereach.errors import UsageError
from nodereach.net import PortSpec, Transport
from nodereach.portmap import state
from nodereach.portmap.base import METHODS, Method, is_unroutable
from nodereach.portmap.errors import NotAvailable, PortmapError
from nodereach.portmap.gateway import find_gateway_async
from nodereach.portmap.keeper import Event, LiveMapping, PortMapper
from nodereach.portmap.probe import probe_all

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
                           method=endpoint.method, lifetime=endpoint.lifetime)
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
    """Keep the on-disk record in step (PCP nonces, for `nodereach mappings --delete` after --once)."""
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
                                 now + g.lifetime if g.lifetime else 0))
    for st in gone:
        state.remove(mapper.driver.method, mapper.driver.gateway, st.slot.protocol, st.slot.internal_port)
    if live:
        state.upsert(live)


async def _verify(printer: Printer, server: str, endpoints: list[LiveMapping], wait: float) -> bool | None:
    """Dial back from the server; True all reachable, False any unreachable, None when it could not tell."""
    try:
        from nodereach.reach.client import probe_port
    except ImportError:
        for ep in endpoints:
            printer.emit("unverified", f"{ep}: the dial-back client is not available in this build", ep)
        return None
    verdicts: list[bool | None] = []
    for ep in endpoints:
        if ep.external_port != ep.internal_port:
            printer.emit("unverified", f"{ep}: external port differs from the internal one; the dial-back service "
                         "tests the same port number", ep, verified=None)
            verdicts.append(None)
            continue
        result = await probe_port(server, ep.internal_port, ep.protocol, timeout=max(wait, 2.0))
        if result.reachable:
            printer.emit("verified", f"{ep}: reachable from {server} ({result.reason})", ep, verified=True)
        elif result.reachable is False:
            printer.emit("not-reachable", f"{ep}: the gateway accepted the mapping but {server} cannot reach the "
                         f"node through it ({result.reason})", ep, verified=False)
        else:
            printer.emit("unverified", f"{ep}: could not verify from {server} ({result.reason})", ep, verified=None)
        verdicts.append(result.reachable)
    if any(v is False for v in verdicts):
        return False
    return True if verdicts and all(verdicts) else None


async def _open(ports: list[tuple[int, Transport]], method: Method | None, lease: int, once: bool,
                printer: Printer, server: str | None, wait: float) -> int:
    # Ask for the external ports of the last run first: peers that learned them keep finding the node.
    preferred: dict[tuple[Transport, int], int] = {}
    for rec in state.load_all():
        if (rec.internal_port, rec.protocol) in ports:
            preferred[("tcp" if rec.protocol == "tcp" else "udp", rec.internal_port)] = rec.external_port
    mapper = PortMapper(ports, method=method, lease=lease, timeout=wait, preferred=preferred)
    mapper.on_event(printer.event)
    mapper.on_event(lambda _ev: _record(mapper))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        try:
            endpoints = await mapper.start()
        except BaseException:
            await mapper.close()
            raise
        code = EXIT_UNREACHABLE if mapper.nat_in_front or is_unroutable(mapper.external_address) else EXIT_OK
        if server:
            verdict = await _verify(printer, server, endpoints, wait)
            if verdict is False:
                code = EXIT_UNREACHABLE
        else:
            printer.emit("unverified", "not verified from outside (give --server HOST to test the mapping)")
        if once:
            printer.emit("exit", "leaving the mappings in place until their leases expire "
                         "(`nodereach mappings --delete PORT/PROTO` removes them)")
            return code
        keep = asyncio.create_task(mapper.run())
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({keep, waiter}, return_when=asyncio.FIRST_COMPLETED)
        keep.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keep
        waiter.cancel()
        await mapper.close()
        return code
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


def run_open(ports: list[str], method: str | None, lease: int, once: bool, json_out: bool, server: str | None,
             timeout: float, node: str | None = None) -> int:
    """Map the ports and keep them alive in the foreground (Ctrl-C / SIGTERM deletes them). Refuses ports the
    node maps itself (read from its RPC: `--node`, auto-detected by default, `--node none` to skip)."""
    wanted = parse_ports(ports)
    forced = parse_method(method)
    if lease < 0:
        raise UsageError("--lease must be positive")
    if timeout <= 0:
        raise UsageError("--timeout must be positive")
    from nodereach.net import PortSpec
    from nodereach.node.view import NodeChoice, node_mapping_clash

    try:
        choice = NodeChoice.parse(node)
    except ValueError as exc:
        raise UsageError(f"bad --node: {exc}") from None
    clash = asyncio.run(node_mapping_clash([PortSpec(p, t) for p, t in wanted], choice,
                                           budget_s=max(1.0, min(2.0, timeout))))
    if clash is not None:
        raise UsageError(clash)
    return asyncio.run(_open(wanted, forced, lease, once, Printer(json_out), server, timeout))


# --- mappings ------------------------------------------------------------------------------------------
async def _mappings(delete: list[tuple[int, Transport]], method: Method | None, printer: Printer,
                    wait: float) -> int:
    gw = await find_gateway_async()
    methods = (method,) if method else METHODS
    probes, drivers = await probe_all(gw, wait, methods)
    if not drivers:
        reasons = ", ".join(f"{m}: {probes[m].reason}" for m in methods)
        raise NotAvailable(f"the gateway {gw.address} offers no port mapping ({reasons})",
                           "nothing to list; `nodereach check` says what else can make the node reachable")
    rows: list[dict[str, Any]] = []
    records = [r for r in state.load() if r.gateway == gw.address and r.method in ("pcp", "natpmp")]
    recorded = {(r.protocol, r.external_port) for r in records}
    upnp = drivers.get("upnp")
    if upnp is not None:
        from nodereach.portmap.upnp_client import UpnpClient  # loaded already: probe_all made the driver

        assert isinstance(upnp, UpnpClient)
        for entry in await upnp.list_mappings():
            row = {"method": "upnp", "protocol": entry.get("NewProtocol", "").lower(),
                   "external_port": _int(entry.get("NewExternalPort")),
                   "internal_client": entry.get("NewInternalClient"),
                   "internal_port": _int(entry.get("NewInternalPort")),
                   "lease": _int(entry.get("NewLeaseDuration")),
                   "description": entry.get("NewPortMappingDescription", "")[:80],
                   "own": entry.get("NewInternalClient") == gw.local_address}
            desc = str(row["description"])
            if desc.startswith(("PCP ", "NAT-PMP")):
                row["method"] = "pcp" if desc.startswith("PCP") else "natpmp"  # made through the other door
            if (row["protocol"], row["external_port"]) not in recorded:
                rows.append(row)
    for rec in records:
        if rec.method in drivers or upnp is not None:
            rows.append({"method": rec.method, "protocol": rec.protocol, "external_port": rec.external_port,
                         "internal_client": gw.local_address, "internal_port": rec.internal_port,
                         "lease": max(0, int(rec.expires - time.time())), "description": "nodereach",
                         "own": True, "recorded": True})
    if delete:
        return await _delete(delete, rows, drivers, gw.address, printer)
    if printer.json_out:
        sys.stdout.write(json.dumps({"schema": "nodereach.mappings/1", "gateway": gw.address,
                                     "protocols": {k: v.available for k, v in probes.items()},
                                     "mappings": rows}) + "\n")
        return EXIT_OK
    avail = ", ".join(f"{k} {'yes' if v.available else 'no'}" for k, v in probes.items())
    sys.stdout.write(f"gateway {gw.address} ({avail})\n")
    if not rows:
        sys.stdout.write("no mappings found (PCP/NAT-PMP cannot list mappings other hosts made)\n")
    for r in rows:
        mine = " (this host)" if r["own"] else ""
        sys.stdout.write(f"  {r['method']:<6} {r['external_port']}/{r['protocol']} -> {r['internal_client']}:"
                         f"{r['internal_port']}  lease {r['lease'] or 'permanent'}  {r['description']}{mine}\n")
    return EXIT_OK


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and len(value) < 11 else None


async def _delete(delete: list[tuple[int, Transport]], rows: list[dict[str, Any]], drivers: dict[str, Any],
                  gateway: str, printer: Printer) -> int:
    from nodereach.portmap.base import Grant, Slot

    failed = 0
    for port, proto in delete:
        matched = [r for r in rows if r["protocol"] == proto and (r["external_port"] == port
                                                                  or (r["own"] and r["internal_port"] == port))]
        if not matched:
            printer.emit("error", f"no mapping {port}/{proto} found on the gateway")
            failed += 1
            continue
        for r in matched:
            try:
                if not r.get("recorded"):
                    if "upnp" not in drivers:
                        raise PortmapError("only UPnP can delete mappings nodereach did not record")
                    await drivers["upnp"].delete(proto, r["external_port"])
                else:
                    rec = next(x for x in state.load() if x.method == r["method"] and x.protocol == proto
                               and x.internal_port == r["internal_port"] and x.gateway == gateway)
                    slot = Slot(proto, rec.internal_port, bytes.fromhex(rec.nonce),
                                Grant(proto, rec.internal_port, rec.external_port, rec.external_address, 0))
                    if r["method"] not in drivers:
                        raise PortmapError(f"{r['method']} does not answer on the gateway")
                    await drivers[r["method"]].unmap(slot)
                    state.remove(rec.method, rec.gateway, proto, rec.internal_port)
                printer.emit("deleted", f"deleted {r['external_port']}/{proto} ({r['method']})")
            except (PortmapError, StopIteration, ValueError) as exc:
                printer.emit("error", f"deleting {r['external_port']}/{proto}: {getattr(exc, 'message', exc)}")
                failed += 1
    return EXIT_UNREACHABLE if failed else EXIT_OK


def run_mappings(delete: list[str], method: str | None, json_out: bool, timeout: float) -> int:
    """List the gateway's mappings (UPnP: all; PCP/NAT-PMP: the ones nodereach recorded), or delete some."""
    wanted = parse_ports(delete) if delete else []
    return asyncio.run(_mappings(wanted, parse_method(method), Printer(json_out), timeout))
