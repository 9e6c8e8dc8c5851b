"""What every port-mapping driver offers the keepalive manager, and the values they exchange."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import msgspec

from nodereach.net import Transport, is_public

Method = Literal["pcp", "natpmp", "upnp"]
METHODS: tuple[Method, ...] = ("pcp", "natpmp", "upnp")
METHODS6: tuple[Method, ...] = ("pcp", "upnp")
"""IPv6 pinholes: PCP MAP for the host's own address, UPnP WANIPv6FirewallControl. NAT-PMP is IPv4 only."""


@dataclass(slots=True)
class Grant:
    """What the gateway granted for one mapping."""

    protocol: Transport
    internal_port: int
    external_port: int
    external_address: str | None
    lifetime: int
    """Seconds; 0 means permanent (UPnP routers that only accept permanent leases)."""
    pinhole_id: int | None = None
    """UPnP IPv6 pinholes: the UniqueID AddPinhole returned (renewals and the delete name it)."""


@dataclass(slots=True)
class Poll:
    """Result of a cheap liveness check of the gateway."""

    restarted: bool = False
    external_address: str | None = None
    missing: list[tuple[Transport, int]] = field(default_factory=list)
    """(protocol, external port) of mappings the gateway no longer has (UPnP)."""


@dataclass(slots=True)
class Slot:
    """The client side of one mapping: what we asked for and the per-mapping secrets (PCP nonce)."""

    protocol: Transport
    internal_port: int
    nonce: bytes
    grant: Grant | None = None


class Listener(Protocol):
    """Something listening in the background (a multicast socket): closed when the keeper stops."""

    def close(self) -> None: ...


class Driver(Protocol):
    method: Method
    gateway: str

    async def map(self, slot: Slot, external_port: int, lifetime: int) -> Grant: ...

    async def unmap(self, slot: Slot) -> None: ...

    async def poll(self, slots: list[Slot]) -> Poll: ...

    async def external_address(self) -> str | None: ...

    async def watch(self, nudge: Callable[[], None]) -> Listener | None:
        """Listen for the gateway's own announcements (a restart, a new address) and call nudge() for each
        one worth a look; None when the protocol has none or the group cannot be joined."""
        ...

    async def close(self) -> None: ...


class MethodAvailability(msgspec.Struct):
    """Whether one protocol answered on the gateway. available=None: could not be tested (no gateway)."""

    available: bool | None
    external_address: str | None = None
    reason: str | None = None
    """`ok`, `timeout`, `port-unreachable`, `unsupported-version`, `refused:NAME`, `malformed`, `not-offered`,
    `no-gateway`, ... (errors.reason_code)"""
    detail: str | None = None


def is_unroutable(address: str | None) -> bool:
    """True when an external address cannot be reached from the internet: private, CGNAT, loopback, ...

    The documentation ranges the lab uses as its internet count as public here.
    """
    if not address:
        return False
    return not is_public(address)
