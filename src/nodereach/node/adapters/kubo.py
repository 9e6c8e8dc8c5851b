"""kubo (IPFS): its RPC (`/api/v0/id`, `/api/v0/swarm/peers?direction=true`, `/api/v0/swarm/addrs/autonat`,
`/api/v0/config?arg=Swarm.DisableNatPortMap`). Every RPC call is a POST (kubo answers GET with 405).

Upstream doc: https://docs.ipfs.tech/reference/kubo/rpc/ ; AutoNAT V2 per-address reachability:
core/commands/swarm_addrs_autonat.go in ipfs/kubo (JSON `reachability`, `reachable`, `unreachable`,
`unknown`), in recent versions only: older ones answer 404 and the verdict is left out.
"""

from __future__ import annotations

import msgspec

from nodereach.net import PortSpec
from nodereach.node.adapters.base import NodeError, NodeStatus, PortMapping, decode
from nodereach.node.adapters.rpcio import Conn, check_status
from nodereach.p2p.advertised import Advertised
from nodereach.p2p.errors import P2PDecodeError
from nodereach.p2p.multiaddr import parse_multiaddr

DOC = "https://docs.ipfs.tech/reference/kubo/rpc/"
INBOUND, OUTBOUND = 1, 2
"""`Direction` in swarm/peers (libp2p network.Direction): 1 inbound, 2 outbound, 0 unknown."""


class Id(msgspec.Struct, rename="pascal"):
    id: str = msgspec.field(name="ID", default="")
    addresses: list[str] | None = None
    agent_version: str = ""


class SwarmPeer(msgspec.Struct, rename="pascal"):
    addr: str = ""
    direction: int = 0


class SwarmPeers(msgspec.Struct, rename="pascal"):
    peers: list[SwarmPeer] | None = None


class AutoNat(msgspec.Struct):
    reachability: str = ""
    reachable: list[str] | None = None
    unreachable: list[str] | None = None


class ConfigValue(msgspec.Struct, rename="pascal"):
    key: str = ""
    value: bool | None = None


def status_from(ident: Id, peers: SwarmPeers | None, autonat: AutoNat | None,
                disable_natportmap: bool | None) -> NodeStatus:
    advertised: list[Advertised] = []
    notes: list[str] = []
    ports: list[PortSpec] = []
    for text in (ident.addresses or [])[:64]:
        try:
            ep = parse_multiaddr(text).endpoint()  # None for relayed (/p2p-circuit) addresses: not this host
        except P2PDecodeError:
            continue
        if ep is None:
            continue
        advertised.append(ep)
        if ep.port and PortSpec(ep.port, ep.protocol) not in ports:
            ports.append(PortSpec(ep.port, ep.protocol))
    inbound = outbound = None
    if peers is not None:
        plist = peers.peers or []
        inbound = sum(1 for p in plist if p.direction == INBOUND)
        outbound = sum(1 for p in plist if p.direction == OUTBOUND)
    reach = None
    if autonat is not None and autonat.reachability:
        reach = autonat.reachability.lower()[:20]
        if autonat.unreachable:
            notes.append("AutoNAT found unreachable: " + ", ".join(autonat.unreachable[:4]))
    agent = ident.agent_version.split("/")
    mapping = None
    if disable_natportmap is not None:
        mapping = PortMapping(not disable_natportmap, "Swarm.DisableNatPortMap", tuple(ports),
                              "kubo maps its swarm ports with UPnP/NAT-PMP" if not disable_natportmap else "")
    version = agent[1] if len(agent) > 1 and agent[1] else None
    return NodeStatus(kind="kubo", software=agent[0] or "kubo", version=version,
                      inbound=inbound, outbound=outbound, advertised=tuple(advertised), p2p_ports=tuple(ports),
                      mapping=mapping, reachability=reach, notes=tuple(notes),
                      peer_ids=(f"peer:{ident.id}",) if ident.id else ())


async def _post(conn: Conn, path: str) -> bytes:
    resp = await conn.request("POST", path)
    check_status(resp, conn.target, path.split("?", 1)[0])
    return resp.body


async def read(conn: Conn) -> NodeStatus:
    ident = decode(await _post(conn, "/api/v0/id"), Id, "/api/v0/id")
    assert isinstance(ident, Id)
    peers = decode(await _post(conn, "/api/v0/swarm/peers?direction=true"), SwarmPeers, "swarm/peers")
    assert isinstance(peers, SwarmPeers)
    autonat: AutoNat | None = None
    try:
        got = decode(await _post(conn, "/api/v0/swarm/addrs/autonat"), AutoNat, "swarm/addrs/autonat")
        assert isinstance(got, AutoNat)
        autonat = got
    except NodeError:
        autonat = None  # older kubo: no AutoNAT V2 command
    disable: bool | None = None
    try:
        cfg = decode(await _post(conn, "/api/v0/config?arg=Swarm.DisableNatPortMap"), ConfigValue, "config")
        assert isinstance(cfg, ConfigValue)
        disable = cfg.value
    except NodeError:
        disable = None
    return status_from(ident, peers, autonat, disable)
