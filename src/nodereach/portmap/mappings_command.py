"""`nodereach mappings`: list the gateway's port mappings and the IPv6 pinholes nodereach made, or delete some.

UPnP lists every IPv4 mapping on the router; PCP and NAT-PMP cannot list, and UPnP has no action that lists
IPv6 pinholes, so those come from nodereach's own record (state.py) of what it made.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from nodereach.net import Transport
from nodereach.portmap import state
from nodereach.portmap.base import METHODS, METHODS6, Grant, Method, Slot
from nodereach.portmap.command import EXIT_OK, EXIT_UNREACHABLE, Printer, parse_method, parse_ports
from nodereach.portmap.errors import NotAvailable, PortmapError
from nodereach.portmap.gateway import Gateway, find_gateway_async
from nodereach.portmap.probe import probe_all


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isascii() and value.isdigit() and len(value) < 11 else None


def _recorded_row(rec: state.Record, local: str) -> dict[str, Any]:
    return {"method": rec.method, "protocol": rec.protocol, "external_port": rec.external_port,
            "internal_client": local, "internal_port": rec.internal_port,
            "lease": max(0, int(rec.expires - time.time())) if rec.expires else 0,
            "description": "nodereach pinhole" if rec.family == 6 else "nodereach", "own": True, "recorded": True,
            "family": rec.family, "external_address": rec.external_address}


async def _rows4(method: Method | None, wait: float) -> tuple[Gateway, dict[str, Any], list[dict[str, Any]],
                                                             dict[str, Any]]:
    """IPv4: every UPnP mapping on the router plus the PCP/NAT-PMP ones nodereach recorded."""
    gw = await find_gateway_async()
    methods = (method,) if method else METHODS
    probes, drivers = await probe_all(gw, wait, methods)
    if not drivers:
        reasons = ", ".join(f"{m}: {probes[m].reason}" for m in methods)
        raise NotAvailable(f"the gateway {gw.address} offers no port mapping ({reasons})",
                           "nothing to list; `nodereach check` says what else can make the node reachable")
    rows: list[dict[str, Any]] = []
    records = [r for r in state.load() if r.gateway == gw.address and r.family == 4 and r.method in ("pcp", "natpmp")]
    recorded = {(r.protocol, r.external_port) for r in records}
    upnp = drivers.get("upnp")
    if upnp is not None:
        from nodereach.portmap.upnp_client import UpnpClient  # loaded already: probe_all made the driver

        assert isinstance(upnp, UpnpClient)
        for entry in await upnp.list_mappings():
            row: dict[str, Any] = {
                "method": "upnp", "protocol": entry.get("NewProtocol", "").lower(),
                "external_port": _int(entry.get("NewExternalPort")),
                "internal_client": entry.get("NewInternalClient"),
                "internal_port": _int(entry.get("NewInternalPort")),
                "lease": _int(entry.get("NewLeaseDuration")),
                "description": entry.get("NewPortMappingDescription", "")[:80],
                "own": entry.get("NewInternalClient") == gw.local_address, "family": 4}
            desc = str(row["description"])
            if desc.startswith(("PCP ", "NAT-PMP")):
                row["method"] = "pcp" if desc.startswith("PCP") else "natpmp"  # made through the other door
            if (row["protocol"], row["external_port"]) not in recorded:
                rows.append(row)
    for rec in records:
        if rec.method in drivers or upnp is not None:
            rows.append(_recorded_row(rec, gw.local_address))
    return gw, {k: v.available for k, v in probes.items()}, rows, drivers


async def _rows6() -> tuple[Gateway, list[dict[str, Any]]] | None:
    """IPv6: the pinholes nodereach recorded for this host's address behind its IPv6 gateway."""
    try:
        gw = await find_gateway_async(family=6)
    except PortmapError:
        return None  # no IPv6 here: nothing of ours can be open
    records = [r for r in state.load() if r.family == 6 and r.gateway == gw.address]
    return gw, [_recorded_row(r, gw.local_address) for r in records]


async def _mappings(delete: list[tuple[int, Transport]], method: Method | None, printer: Printer,
                    wait: float) -> int:
    v6 = await _rows6()
    try:
        gw, protocols, rows, drivers = await _rows4(method, wait)
    except PortmapError:
        if not v6 or not v6[1]:
            raise
        gw, protocols, rows, drivers = None, {}, [], {}  # IPv4 offers nothing, but our pinholes are listed
    pinholes = v6[1] if v6 else []
    if delete:
        failed = 0
        for port, proto in delete:
            if not _matching(rows, port, proto) and not [r for r in pinholes if (r["internal_port"], r["protocol"])
                                                         == (port, proto)]:
                printer.emit("error", f"no mapping or pinhole {port}/{proto} found")
                failed += 1
        if gw is not None:
            failed += await _delete(delete, rows, drivers, gw.address, printer)
        if v6 is not None and pinholes:
            failed += await _delete_pinholes(delete, pinholes, v6[0], method, wait, printer)
        return EXIT_UNREACHABLE if failed else EXIT_OK
    if printer.json_out:
        sys.stdout.write(json.dumps({"schema": "nodereach.mappings/1", "gateway": gw.address if gw else None,
                                     "gateway6": v6[0].address if v6 else None, "protocols": protocols,
                                     "mappings": rows + pinholes}) + "\n")
        return EXIT_OK
    if gw is not None:
        avail = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in protocols.items())
        sys.stdout.write(f"gateway {gw.address} ({avail})\n")
        if not rows:
            sys.stdout.write("no mappings found (PCP/NAT-PMP cannot list mappings other hosts made)\n")
    for r in rows:
        mine = " (this host)" if r["own"] else ""
        sys.stdout.write(f"  {r['method']:<6} {r['external_port']}/{r['protocol']} -> {r['internal_client']}:"
                         f"{r['internal_port']}  lease {r['lease'] or 'permanent'}  {r['description']}{mine}\n")
    if v6 is not None:
        sys.stdout.write(f"IPv6 gateway {v6[0].address}: {len(pinholes)} pinhole(s) nodereach opened "
                         "(UPnP and PCP cannot list pinholes)\n")
        for r in pinholes:
            sys.stdout.write(f"  {r['method']:<6} [{r['internal_client']}]:{r['internal_port']}/{r['protocol']}  "
                             f"lease {r['lease']}  pinhole\n")
    return EXIT_OK


def _matching(rows: list[dict[str, Any]], port: int, proto: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["protocol"] == proto and (r["external_port"] == port
                                                           or (r["own"] and r["internal_port"] == port))]


async def _delete(delete: list[tuple[int, Transport]], rows: list[dict[str, Any]], drivers: dict[str, Any],
                  gateway: str, printer: Printer) -> int:
    """Delete the IPv4 mappings that match; a port with none is reported by the caller (it may be a pinhole)."""
    failed = 0
    for port, proto in delete:
        for r in _matching(rows, port, proto):
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
    return failed


async def _delete_pinholes(delete: list[tuple[int, Transport]], pinholes: list[dict[str, Any]], gw: Gateway,
                           method: Method | None, wait: float, printer: Printer) -> int:
    """Close recorded IPv6 pinholes: PCP with the mapping's nonce, UPnP by its UniqueID (from our address)."""
    wanted = [r for r in pinholes if (r["internal_port"], r["protocol"]) in delete]
    if not wanted:
        return 0
    methods = tuple(m for m in ((method,) if method else METHODS6) if m in METHODS6)
    _probes, drivers = await probe_all(gw, wait, methods)
    failed = 0
    for r in wanted:
        rec = next((x for x in state.load() if x.family == 6 and x.gateway == gw.address and x.method == r["method"]
                    and x.protocol == r["protocol"] and x.internal_port == r["internal_port"]), None)
        label = f"[{r['internal_client']}]:{r['internal_port']}/{r['protocol']} ({r['method']})"
        driver = drivers.get(r["method"])
        try:
            if rec is None:
                raise PortmapError("no longer recorded")
            if driver is None:
                raise PortmapError(f"{r['method']} does not answer on the IPv6 gateway {gw.address}")
            proto: Transport = "tcp" if rec.protocol == "tcp" else "udp"
            slot = Slot(proto, rec.internal_port, bytes.fromhex(rec.nonce),
                        Grant(proto, rec.internal_port, rec.external_port, rec.external_address, 0,
                              pinhole_id=rec.pinhole_id))
            await driver.unmap(slot)
            state.remove(rec.method, rec.gateway, rec.protocol, rec.internal_port)
            printer.emit("deleted", f"closed the pinhole {label}")
        except (PortmapError, ValueError) as exc:
            printer.emit("error", f"closing the pinhole {label}: {getattr(exc, 'message', exc)}")
            failed += 1
    for driver in drivers.values():
        await driver.close()
    return failed


def run_mappings(delete: list[str], method: str | None, json_out: bool, timeout: float) -> int:
    """List the gateway's mappings (UPnP: all; PCP/NAT-PMP: the ones nodereach recorded) and the IPv6 pinholes
    nodereach recorded, or delete some (both families)."""
    wanted = parse_ports(delete) if delete else []
    return asyncio.run(_mappings(wanted, parse_method(method), Printer(json_out), timeout))
