"""What a node tells the network about where to reach it, in one typed value whatever the source format.

ENRs, enode URLs, multiaddrs, lnd `uris` and Bitcoin Core `localaddresses` all decode to `Advertised`
entries, so the check compares one kind of thing with the measured public endpoint.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from nodereach.net import Family, Transport

HostKind = Literal["ip", "dns", "onion", "i2p", "none"]
"""`none`: the record names a port but no address (an ENR with `tcp` and no `ip`: peers use the address
they see, which is right only if the NAT keeps the port)."""

Source = Literal["enr", "enode", "multiaddr", "lnd", "bitcoin", "syncthing"]
"""`syncthing`: a connection service's `wanAddresses` (`tcp://IP:PORT`), what its discovery announces."""


@dataclass(frozen=True, slots=True)
class Advertised:
    address: str | None
    """Canonical IP text, a DNS name, an .onion / .i2p name, or None (`host_kind == "none"`)."""
    port: int | None
    protocol: Transport
    source: Source
    host_kind: HostKind = "ip"
    family: Family | None = None
    """4 or 6 for IP addresses (and for ENR ports that belong to one family), else None."""
    quic: bool = False
    """A QUIC port (UDP): ENR `quic`/`quic6`, multiaddr `/quic-v1`."""
    field: str = ""
    """Where in the source it came from, for advice: the ENR key (`udp6`), the multiaddr text, the uri."""


def host_kind(host: str) -> HostKind:
    """Classify a host as an advertisement names it (IP text, DNS name, Tor or I2P address)."""
    h = host.strip().lower().rstrip(".")
    if h.endswith(".onion"):
        return "onion"
    if h.endswith(".i2p"):
        return "i2p"
    try:
        ipaddress.ip_address(h.strip("[]").split("%", 1)[0])
    except ValueError:
        return "dns"
    return "ip"
