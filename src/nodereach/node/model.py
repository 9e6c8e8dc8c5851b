"""The `node` block of the check's report (schema `nodereach.check/2`): field names are a public contract.

    node.software, node.version, node.peers.inbound, node.peers.outbound,
    node.listening[{port, protocol, address, family, process}],
    node.advertised[{address, port, protocol, source}],
    node.problems[{code, detail}]

msgspec Structs, so `diagnose.model.Report` embeds them and the generated JSON Schema documents them.
"""

from __future__ import annotations

import msgspec

from nodereach.net import Family, Transport


class NodePeers(msgspec.Struct, kw_only=True):
    inbound: int | None = None
    """Peers that connected in, as the node counts them (None: its RPC was not read or does not say)."""
    outbound: int | None = None


class NodeListening(msgspec.Struct, kw_only=True):
    port: int
    protocol: Transport
    address: str
    """The socket's local address (`0.0.0.0`, `::`, `127.0.0.1`, ...)."""
    family: Family
    process: str | None = None
    """`name (pid N)`, or None when this user may not see who owns the socket."""
    ipv4_too: bool | None = None
    """For a `::` socket: it takes IPv4 too (IPV6_V6ONLY off). None: not a `::` socket, or unknown."""


class NodeAdvertised(msgspec.Struct, kw_only=True):
    address: str | None
    """What the node tells peers to dial (None: a port without an address, e.g. an ENR without `ip`)."""
    port: int | None = None
    protocol: Transport | None = None
    source: str
    """Where it comes from: `enr`, `enode`, `multiaddr`, `lnd`, `bitcoin`, `syncthing`."""


class NodeProblem(msgspec.Struct, kw_only=True):
    code: str
    """`nothing-listening`, `loopback-only`, `wrong-interface`, `ipv6-only`, `ipv4-only`,
    `container-port-not-published`, `advertises-private-address`, `advertises-no-address`,
    `advertised-address-mismatch`, `advertised-port-mismatch`, `no-inbound-peers`, `node-maps-ports`,
    `rpc-unavailable`, `protocol-check-failed` (a port is open from outside, but what answered there did not
    answer in the node's own protocol)."""
    detail: str
    settings: list[str] = msgspec.field(default_factory=list)
    """The node's own settings that fix it, filled in with the measured values."""


class NodeMapping(msgspec.Struct, kw_only=True):
    enabled: bool | None = None
    """The node maps its own ports on the router (UPnP/NAT-PMP/PCP): `nodereach open` must not map them too."""
    setting: str
    """The node's setting that controls it (`--nat`, `port-forwarding-enabled`, `-natpmp`, ...)."""


class NodeReport(msgspec.Struct, kw_only=True):
    software: str | None = None
    version: str | None = None
    peers: NodePeers = msgspec.field(default_factory=NodePeers)
    listening: list[NodeListening] = msgspec.field(default_factory=list)
    advertised: list[NodeAdvertised] = msgspec.field(default_factory=list)
    problems: list[NodeProblem] = msgspec.field(default_factory=list)
    rpc: str | None = None
    """The RPC endpoint read (never with credentials), and how it was chosen."""
    rpc_error: str | None = None
    """Why the node's RPC could not be read (the rest of the check is unaffected)."""
    reachability: str | None = None
    """The node's own verdict where it has one (kubo AutoNAT: public / private / unknown)."""
    maps_ports: NodeMapping | None = None
    ports_picked: str | None = None
    """With no --port: which ports were tested and why (from the programs listening on this host)."""
    notes: list[str] = msgspec.field(default_factory=list)
