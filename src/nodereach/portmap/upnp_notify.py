"""Hear a UPnP gateway restart from its SSDP NOTIFYs (239.255.255.250:1900), so the keeper re-creates the
mappings at once instead of at its next poll.

A device that starts sends `ssdp:alive` for each of its devices and services (UDA 1.1 §1.2.2); UDA 1.1
devices carry `BOOTID.UPNP.ORG`, which changes whenever the device rejoins the network, and say
`ssdp:byebye` when they stop cleanly. Measured with miniupnpd 2.3.1 in the lab: a burst of 13 byebyes at
SIGTERM, then at start a burst of 13 alives with a new BOOTID (its value is the start time in seconds, so
a restart within one second keeps it: the byebye before it still tells), repeated 0.25 s later, and
the periodic refresh every `notify_interval` with the same BOOTID.

Like PCP ANNOUNCE, anyone on the LAN can send these: a NOTIFY is only a hint that makes the keeper look
now (at a bounded rate), never a fact. Only datagrams from the gateway's own address (over IPv6 also a
link-local one: miniupnpd sends its ff02::c NOTIFYs from there), naming one of the gateway's own device
UUIDs, count.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from nodereach.portmap.multicast import from_gateway, listen_group
from nodereach.portmap.ssdp_codec import MAX_DATAGRAM, SSDP_GROUP, SSDP_GROUP6, SSDP_PORT, parse, uuid_of
from nodereach.portmap.ssdp_codec import parse_boot_id as parse_boot_id

QUIET_S = 20.0
"""UDA 1.0 devices (no BOOTID): one check per this many seconds of alives (their periodic refresh)."""


@dataclass(slots=True)
class BootTracker:
    """Pure decision: does this NOTIFY mean the gateway (re)started since we last looked?"""

    boot_id: int | None = None
    """The gateway's BOOTID as last seen (from its search reply or a NOTIFY)."""
    gone: bool = False
    """A byebye was seen: the next alive is a start, whatever its BOOTID."""
    last_check: float | None = field(default=None)

    def observe(self, nts: str, boot_id: int | None, now: float) -> bool:
        """True when the keeper should check the gateway now."""
        nts = nts.lower()
        if nts == "ssdp:byebye":
            self.gone = True
            return False
        if nts == "ssdp:update":  # UDA 1.1: the device moves to NEXTBOOTID (it rejoined the network)
            return self._check(now)
        if nts != "ssdp:alive":
            return False
        if self.gone:
            self.gone = False
            if boot_id is not None:
                self.boot_id = boot_id
            return self._check(now)
        if boot_id is not None:
            changed = self.boot_id is not None and boot_id != self.boot_id
            self.boot_id = boot_id
            return self._check(now) if changed else False
        # UDA 1.0: no BOOTID, so any alive may be a restart: one check per burst, bounded by QUIET_S
        if self.last_check is None or now - self.last_check >= QUIET_S:
            return self._check(now)
        return False

    def _check(self, now: float) -> bool:
        self.last_check = now
        return True


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, gateway: str, uuids: frozenset[str], tracker: BootTracker, nudge: Callable[[], None],
                 now: Callable[[], float] = time.monotonic) -> None:
        self.gateway = gateway
        self.uuids = uuids
        self.tracker = tracker
        self.nudge = nudge
        self.now = now

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if len(data) > MAX_DATAGRAM or not from_gateway(str(addr[0]), self.gateway):
            return
        message = parse(data)
        if message is None or not message.is_notify:
            return
        uuid = uuid_of(message.get("usn"))
        if self.uuids and uuid not in self.uuids:
            return  # another UPnP device on the router's address (a media server...): its boots are not ours
        nts = message.get("nts")
        boot_id = parse_boot_id(message.get("bootid.upnp.org"))
        if isinstance(nts, str) and self.tracker.observe(nts, boot_id, self.now()):
            self.nudge()


async def listen(gateway: str, local_address: str, uuids: Iterable[str], boot_id: int | None,
                 nudge: Callable[[], None]) -> asyncio.DatagramTransport | None:
    """Join 239.255.255.250 on the LAN interface; nudge() when the gateway's NOTIFYs say it (re)started.

    IPv6: ff02::c, where the gateway's NOTIFYs come from its link-local address. None when the group cannot
    be joined (port 1900 held without SO_REUSEPORT): the keeper's regular checks still run."""
    tracker = BootTracker(boot_id=boot_id)
    wanted = frozenset(u.lower() for u in uuids)
    group = SSDP_GROUP6 if ":" in local_address else SSDP_GROUP
    return await listen_group(group, SSDP_PORT, local_address, lambda: _Proto(gateway, wanted, tracker, nudge))
