"""The check report: one typed model, rendered to the terminal and to JSON (schema `nodereach.check/2`).

check/2 (issue 10): a port is `reachable` only when a program listens there and peers' first packets reach
it; `path_open` carries the network path test alone (true also when nodereach had to listen itself, which
is then `reachable: false, reason: nothing-listening`); the `node` block is the node's own view.
Per address family (issue 11, folded into check/2 before its release): `ports[]` has one entry per tested
port and family (`family`: 4 or 6), `reachability` says per family, `ipv6` holds IPv6's own translation,
mapping and filtering (`nat` stays IPv4's), and the verdict `partly-reachable` is new.

Field names and values are a public contract (docs/check-schema.md). Add fields freely; never rename or
change the meaning of one without bumping SCHEMA.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from nodereach.net import Family, Transport
from nodereach.node.model import NodeReport

SCHEMA = "nodereach.check/2"

Behaviour = Literal["endpoint-independent", "address-dependent", "address-and-port-dependent", "unknown"]
Mapping = Literal[
    "endpoint-independent", "address-dependent", "address-and-port-dependent", "no-nat", "unknown"
]
Verdict = Literal["reachable", "partly-reachable", "unreachable", "no-connectivity"]
FamilyReachability = Literal["reachable", "unreachable", "no-connectivity", "untested"]
"""One address family: `untested` when this host has no such connectivity to test (no route, no address of
the family, no server of the family), never `unreachable`."""
Translation6 = Literal["none", "nptv6", "nat66", "unknown"]
"""What happens to this host's IPv6 source address on the way out: `none` (the servers see the host's own
address), `nptv6` (the prefix is swapped, interface identifier and ports kept: RFC 6296), `nat66` (a
stateful translator: address and/or ports changed otherwise), `unknown`."""
Protocol = Transport
"""The report's name for a transport (`tcp` | `udp`)."""
ServerKind = Literal["nodereach", "stun-rfc5780", "stun"]
HopKind = Literal["private", "shared", "public", "special"]
"""Address kinds as the path drawing needs them (nodereach.net.address_kind folded into four)."""


class Outbound(msgspec.Struct, kw_only=True):
    outbound: bool | None = None
    """True when some server answered over this protocol; None when it was not tested."""
    reason: str | None = None
    ipv4: bool | None = None
    ipv6: bool | None = None
    blocked_ports: list[int] = msgspec.field(default_factory=list)
    """Destination ports outbound traffic could not reach although others could (policy filter)."""


class Public(msgspec.Struct, kw_only=True):
    ipv4: str | None = None
    ipv6: str | None = None


class Local(msgspec.Struct, kw_only=True):
    address: str | None = None
    gateway: str | None = None
    interface: str | None = None
    address_is_public: bool | None = None


class NatLayer(msgspec.Struct, kw_only=True):
    """One NAT layer, inside out: the realm behind it and who most likely runs it."""

    index: int
    owner: Literal["operator", "provider", "unknown"] = "unknown"
    inside_network: str | None = None
    """The address realm behind this NAT, e.g. `192.168.0.0/16`, `100.64.0.0/10`."""
    router: str | None = None
    """The NAT router's inside address as seen on the path (gateway, or the TTL-probe hop)."""
    external_address: str | None = None
    """Its outside address when known (the gateway's WAN address, or the public address for the last one)."""


class Hop(msgspec.Struct, kw_only=True):
    ttl: int
    address: str | None = None
    kind: HopKind | None = None


class Nat(msgspec.Struct, kw_only=True):
    present: bool | None = None
    layers: int | None = None
    cgnat: bool | None = None
    mapping: Mapping = "unknown"
    filtering: Behaviour = "unknown"
    port_preservation: bool | None = None
    hairpinning: bool | None = None
    binding_lifetime_s: float | None = None
    layer_addresses: list[str] = msgspec.field(default_factory=list)
    """Addresses of the NAT layers seen from inside out (gateway WAN, private hops), when known."""
    unknown_reasons: dict[str, str] = msgspec.field(default_factory=dict)
    """For each field left `unknown`/null: why (no RFC 5780 server, UDP blocked, ...)."""
    layer_details: list[NatLayer] = msgspec.field(default_factory=list)
    hops: list[Hop] = msgspec.field(default_factory=list)
    """TTL-limited probe results toward the server, first hop first (private hops reveal NAT layers)."""
    mapped_address: str | None = None
    """The public endpoint (ip:port) the primary server saw for the mapping-test socket."""


class PortResult(msgspec.Struct, kw_only=True):
    port: int
    protocol: Protocol
    family: Family = 4
    """The address family this entry was tested over (one entry per tested port and family)."""
    reachable: bool | None = None
    reason: str | None = None
    """Code: `ok`, `no-mapping`, `filtered`, `refused`, `timeout`, `nothing-listening`, `no-server`,
    `protocol-check-failed` (the path is open, but what answered did not answer as the node), ..."""
    listener: Literal["node", "nodereach", "none"] | None = None
    rtt_ms: float | None = None
    public_endpoint: str | None = None
    """UDP: the `ip:port` the NAT gives the node's port (measured after the dial-back), when it was free."""
    path_open: bool | None = None
    """Did the dial-back's first packets get through the network to this host (to the node, or to nodereach's
    own listener when nothing listened)? None: not tested, or not observable (UDP to a node's own socket)."""
    protocol_check: ProtocolCheckResult | None = None
    """The node answered the first exchange of its own protocol from outside (when the check asked for one)."""
    second_address: bool | None = None
    """The dial-back's probe came from the server's second address of this family, so nothing the request
    itself opened (a firewall's state for the request's flow) let it in. False: the server has one address of
    the family, and a positive answer is weaker evidence (an address-dependent filter would pass it too).
    None: not said (no answer, or an older server)."""


class ProtocolCheckResult(msgspec.Struct, kw_only=True):
    """The dial-back service spoke the first exchange of the node's own protocol to the port (docs/dialback-api.md,
    "Protocol proofs"): did the node answer as that software does?"""

    protocol: str
    """`bitcoin`, `monero`, `libp2p`, `bittorrent`, `discv4`, `discv5`."""
    ok: bool
    detail: str = ""
    """What the node answered (user agent, peer id, client), or why it is not `ok` (closed without answering,
    another network's magic, another torrent, no answer within the bound)."""
    rtt_ms: float | None = None
    """From the proof's first message to the node's answer (None without an answer)."""


class PortmapProtocol(msgspec.Struct, kw_only=True):
    available: bool | None = None
    external_address: str | None = None
    reason: str | None = None


class Portmap(msgspec.Struct, kw_only=True):
    pcp: PortmapProtocol = msgspec.field(default_factory=PortmapProtocol)
    natpmp: PortmapProtocol = msgspec.field(default_factory=PortmapProtocol)
    upnp: PortmapProtocol = msgspec.field(default_factory=PortmapProtocol)


class Advice(msgspec.Struct, kw_only=True):
    code: str
    title: str
    detail: str
    commands: dict[str, str] = msgspec.field(default_factory=dict)
    """Ready-to-paste snippets keyed by target (nftables, iptables, openwrt, routeros, message)."""


class ServerUsed(msgspec.Struct, kw_only=True):
    address: str
    kind: ServerKind
    answered: bool
    family: Family | None = None
    """The family it was asked over (None: its name did not resolve)."""
    rtt_ms: float | None = None
    reason: str | None = None
    """Why it did not answer / was not usable (timeout, garbage reply, name not resolved, ...)."""


class Reachability(msgspec.Struct, kw_only=True):
    """Can peers reach the node over each address family (the verdict combines them)?"""

    ipv4: FamilyReachability = "untested"
    ipv6: FamilyReachability = "untested"

    def get(self, family: Family) -> FamilyReachability:
        return self.ipv4 if family == 4 else self.ipv6


class Ipv6(msgspec.Struct, kw_only=True):
    """IPv6's own path behaviour (the `nat` block is IPv4's): what happens to this host's address, and what an
    IPv6 firewall (or translator) lets in, in RFC 4787 terms."""

    address: str | None = None
    """This host's own IPv6 source address toward the servers (global or unique-local). The check's sockets ask
    for the stable source (net.prefer_stable_source), so with privacy addresses on it is still the stable one."""
    stable_address: str | None = None
    """This host's stable global IPv6 address on the same interface: the one peers, the node's advertised
    address and firewall rules should name. It differs from `address` only when the kernel sourced traffic from
    a temporary privacy address (RFC 8981) all the same, which changes about daily and then expires."""
    translation: Translation6 = "unknown"
    mapping: Mapping = "unknown"
    """RFC 4787 mapping from the RFC 5780 tests over IPv6 (`no-nat` when the servers see the host's own
    address and port)."""
    filtering: Behaviour = "unknown"
    """RFC 4787 filtering over IPv6 (RFC 5780 CHANGE-REQUEST tests from a socket of its own, with a server
    that has two IPv6 addresses): with no translation, the stateful firewall's behaviour."""
    reason: str | None = None
    """Why IPv6 is `untested` or has no connectivity."""
    unknown_reasons: dict[str, str] = msgspec.field(default_factory=dict)
    """For each field left `unknown`/null: why."""


class Report(msgspec.Struct, kw_only=True):
    schema: str = SCHEMA
    duration_s: float = 0.0
    udp: Outbound = msgspec.field(default_factory=Outbound)
    tcp: Outbound = msgspec.field(default_factory=Outbound)
    public: Public = msgspec.field(default_factory=Public)
    local: Local = msgspec.field(default_factory=Local)
    nat: Nat = msgspec.field(default_factory=Nat)
    ports: list[PortResult] = msgspec.field(default_factory=list)
    portmap: Portmap = msgspec.field(default_factory=Portmap)
    reachability: Reachability = msgspec.field(default_factory=Reachability)
    ipv6: Ipv6 = msgspec.field(default_factory=Ipv6)
    verdict: Verdict = "no-connectivity"
    causes: list[str] = msgspec.field(default_factory=list)
    advice: list[Advice] = msgspec.field(default_factory=list)
    servers: list[ServerUsed] = msgspec.field(default_factory=list)
    notes: list[str] = msgspec.field(default_factory=list)
    untested: list[str] = msgspec.field(default_factory=list)
    """What could not be tested in this run and why (e.g. no nodereach server: no dial-back, no filtering)."""
    node: NodeReport | None = None
    """The node's own view: who listens on its ports here, what its RPC says, what it advertises (None: not
    read, e.g. `--node none`)."""


EXIT_CODES: dict[str, int] = {"reachable": 0, "unreachable": 1, "no-connectivity": 3, "partly-reachable": 4}
"""`nodereach check`'s exit status per verdict (2 is a usage or environment error, before any verdict)."""


def peer_address6(report: Report) -> str | None:
    """The IPv6 address peers should be given: the host's stable one when nothing translates its addresses
    (the servers saw the kernel's source, which may be a temporary privacy address), else what the servers
    saw (a translated prefix maps the host's addresses one to one, NAT66 shares one)."""
    six = report.ipv6
    if six.translation == "none" and six.stable_address and report.public.ipv6 == six.address:
        return six.stable_address
    return report.public.ipv6


def to_json(report: Report) -> bytes:
    return msgspec.json.encode(report)


def from_json(data: bytes | str) -> Report:
    return msgspec.json.decode(data, type=Report)


def json_schema() -> dict[str, Any]:
    """JSON Schema of the report, generated from the model so docs never drift from code."""
    return msgspec.json.schema(Report)
