"""Ethereum execution clients (geth, Nethermind, Besu, Erigon, Reth): `admin_nodeInfo`, `admin_peers`,
`net_peerCount`, `web3_clientVersion` over HTTP JSON-RPC or the IPC socket.

Upstream doc: https://geth.ethereum.org/docs/interacting-with-geth/rpc/ns-admin (the other clients implement
the same `admin_` names). geth serves `admin_*` over IPC only unless `--http.api admin` is given, so `--node`
takes the `geth.ipc` path too; without `admin`, only the peer count is read.
"""

from __future__ import annotations

import msgspec

from nodereach.net import PortSpec
from nodereach.node.adapters.base import NodeError, NodeStatus, Port, PortMapping, decode
from nodereach.node.adapters.rpcio import Conn
from nodereach.p2p.advertised import Advertised
from nodereach.p2p.errors import P2PDecodeError

DOC = "https://geth.ethereum.org/docs/interacting-with-geth/rpc/ns-admin"


class Ports(msgspec.Struct):
    discovery: Port = 0
    listener: Port = 0


class NodeInfo(msgspec.Struct, rename="camel"):
    enode: str = ""
    enr: str = ""
    id: str = ""
    ip: str = ""
    listen_addr: str = ""
    name: str = ""
    ports: Ports = msgspec.field(default_factory=Ports)


class PeerNetwork(msgspec.Struct, rename="camel"):
    inbound: bool = False
    local_address: str = ""
    remote_address: str = ""


class Peer(msgspec.Struct):
    network: PeerNetwork = msgspec.field(default_factory=PeerNetwork)


def software_of(name: str) -> tuple[str, str | None]:
    """`Geth/v1.14.8-stable-a9523b64/linux-amd64/go1.22.6` -> (`geth`, `1.14.8-stable-a9523b64`)."""
    parts = name.split("/")
    software = {"geth": "geth", "nethermind": "Nethermind", "besu": "Besu", "erigon": "Erigon",
                "reth": "Reth"}.get(parts[0].lower(), parts[0][:40] or "Ethereum client")
    version = next((p[1:] if p.startswith("v") else p for p in parts[1:] if p[:1] in "v0123456789"), None)
    return software, version


def status_from(info: NodeInfo | None, peers: list[Peer] | None, peer_count: int | None, client: str,
                admin_error: str | None = None) -> NodeStatus:
    software, version = software_of(info.name if info and info.name else client)
    advertised: list[Advertised] = []
    notes: list[str] = []
    ports: tuple[PortSpec, ...] = ()
    ids: list[str] = []
    if info is not None:
        from nodereach.p2p.enode import parse_enode
        from nodereach.p2p.enr import decode_enr

        if info.enr:
            # The ENR is what discv5 peers (and consensus-layer tooling) see; geth updates it from --nat.
            try:
                advertised += decode_enr(info.enr, verify=False).endpoints()
                ids.append(info.enr[:2048])
            except P2PDecodeError as exc:
                notes.append(f"admin_nodeInfo.enr not understood: {exc}")
        if info.enode:
            try:
                en = parse_enode(info.enode)
                advertised += en.endpoints()
                ids.append(f"enode:{en.public_key.hex()}")
            except P2PDecodeError as exc:
                notes.append(f"admin_nodeInfo.enode not understood: {exc}")
        if info.ports.listener:
            ports += (PortSpec(info.ports.listener, "tcp"),)
        if info.ports.discovery:
            ports += (PortSpec(info.ports.discovery, "udp"),)
    elif admin_error:
        notes.append(f"admin_nodeInfo unavailable ({admin_error}); geth serves admin_* over its IPC socket: "
                     "--node ethereum=/path/to/geth.ipc")
    inbound = outbound = None
    if peers is not None:
        inbound = sum(1 for p in peers if p.network.inbound)
        outbound = len(peers) - inbound
    elif peer_count is not None:
        notes.append(f"{peer_count} peers (in/out unknown without admin_peers)")
    mapping = None
    if software == "geth":
        mapping = PortMapping(None, "--nat", ports, "geth maps its ports with UPnP/NAT-PMP under the default "
                              "--nat any; --nat extip:IP or --nat none turn that off")
    return NodeStatus(kind="ethereum", software=software, version=version, inbound=inbound, outbound=outbound,
                      listen=(info.listen_addr,) if info and info.listen_addr else (), advertised=tuple(advertised),
                      p2p_ports=ports, mapping=mapping, notes=tuple(notes), peer_ids=tuple(ids))


async def read(conn: Conn) -> NodeStatus:
    client = ""
    try:
        raw = decode(await conn.jsonrpc("web3_clientVersion"), str, "web3_clientVersion")
        client = str(raw)[:200]
    except NodeError:
        pass
    info: NodeInfo | None = None
    peers: list[Peer] | None = None
    admin_error: str | None = None
    try:
        got = decode(await conn.jsonrpc("admin_nodeInfo"), NodeInfo, "admin_nodeInfo")
        assert isinstance(got, NodeInfo)
        info = got
        plist = decode(await conn.jsonrpc("admin_peers"), list[Peer], "admin_peers")
        assert isinstance(plist, list)
        peers = plist
    except NodeError as exc:
        if info is None:
            admin_error = str(exc).split(": ", 1)[-1]
    count: int | None = None
    if peers is None:
        hexcount = decode(await conn.jsonrpc("net_peerCount"), str, "net_peerCount")
        try:
            count = int(str(hexcount), 16)
        except ValueError:
            raise NodeError(f"net_peerCount: not a hex number: {str(hexcount)[:40]!r}") from None
    return status_from(info, peers, count, client, admin_error)
