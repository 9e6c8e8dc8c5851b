"""Ethereum consensus clients (Lighthouse, Prysm, Teku, Nimbus, Lodestar): the standard beacon node API.

Upstream doc: https://ethereum.github.io/beacon-APIs/ (`/eth/v1/node/identity`, `/eth/v1/node/peers`,
`/eth/v1/node/peer_count`, `/eth/v1/node/version`). Counts are decimal strings in that API.
"""

from __future__ import annotations

import msgspec

from nodereach.net import PortSpec
from nodereach.node.adapters.base import NodeError, NodeStatus, decode
from nodereach.node.adapters.rpcio import Conn
from nodereach.p2p.advertised import Advertised
from nodereach.p2p.errors import P2PDecodeError
from nodereach.p2p.multiaddr import parse_multiaddr

DOC = "https://ethereum.github.io/beacon-APIs/"


class Identity(msgspec.Struct):
    peer_id: str = ""
    enr: str = ""
    p2p_addresses: list[str] = msgspec.field(default_factory=list)
    discovery_addresses: list[str] = msgspec.field(default_factory=list)


class IdentityDoc(msgspec.Struct):
    data: Identity


class PeerCount(msgspec.Struct):
    connected: str = "0"


class PeerCountDoc(msgspec.Struct):
    data: PeerCount


class Meta(msgspec.Struct):
    count: int | str = 0


class PeersDoc(msgspec.Struct):
    data: list[msgspec.Raw] = msgspec.field(default_factory=list)
    meta: Meta | None = None


class Version(msgspec.Struct):
    version: str = ""


class VersionDoc(msgspec.Struct):
    data: Version


def _int(value: int | str, what: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise NodeError(f"{what}: not a number: {str(value)[:40]!r}") from None
    if n < 0:
        raise NodeError(f"{what}: negative count")
    return n


def software_of(version: str) -> tuple[str, str | None]:
    """`Lighthouse/v5.3.0-d6ba8c3/x86_64-linux` -> (`Lighthouse`, `5.3.0-d6ba8c3`)."""
    parts = version.split("/")
    name = parts[0][:40] or "beacon node"
    ver = next((p[1:] if p.startswith("v") else p for p in parts[1:] if p[:1] in "v0123456789"), None)
    return name, ver


def status_from(identity: Identity, connected: int | None, inbound: int | None, version: str) -> NodeStatus:
    """What peers are told is the ENR (discv5 spreads it; `--enr-address` and friends set it), so the
    advertised addresses come from it; `p2p_addresses` are where libp2p listens or was observed (often
    `0.0.0.0` or a LAN address: normal there) and are reported as listen addresses."""
    from nodereach.p2p.enr import decode_enr

    advertised: list[Advertised] = []
    notes: list[str] = []
    ports: list[PortSpec] = []
    listen: list[str] = []
    if identity.enr:
        try:
            advertised = decode_enr(identity.enr, verify=False).endpoints()
        except P2PDecodeError as exc:
            notes.append(f"identity.enr: {exc}")
    for source, addrs in (("p2p_addresses", identity.p2p_addresses), ("discovery_addresses",
                                                                       identity.discovery_addresses)):
        for text in addrs[:32]:
            try:
                ep = parse_multiaddr(text).endpoint()
            except P2PDecodeError as exc:
                notes.append(f"identity.{source}: {exc}")
                continue
            if ep is None:
                continue
            if source == "p2p_addresses":
                listen.append(text[:200])
            elif not identity.enr:
                advertised.append(ep)  # no ENR to read: the discovery addresses are what it announces
            if ep.port and PortSpec(ep.port, ep.protocol) not in ports:
                ports.append(PortSpec(ep.port, ep.protocol))
    software, ver = software_of(version)
    outbound = connected - inbound if connected is not None and inbound is not None else None
    ids = tuple(x for x in (f"peer:{identity.peer_id}" if identity.peer_id else "",
                            identity.enr[:2048] if identity.enr.startswith("enr:") else "") if x)
    return NodeStatus(kind="beacon", software=software, version=ver, inbound=inbound, outbound=outbound,
                      listen=tuple(listen), advertised=tuple(advertised), p2p_ports=tuple(ports),
                      notes=tuple(notes), peer_ids=ids)


async def read(conn: Conn) -> NodeStatus:
    ident = decode(await conn.get_json("/eth/v1/node/identity"), IdentityDoc, "/eth/v1/node/identity")
    assert isinstance(ident, IdentityDoc)
    version = ""
    try:
        v = decode(await conn.get_json("/eth/v1/node/version"), VersionDoc, "/eth/v1/node/version")
        assert isinstance(v, VersionDoc)
        version = v.data.version[:200]
    except NodeError:
        pass
    count = decode(await conn.get_json("/eth/v1/node/peer_count"), PeerCountDoc, "/eth/v1/node/peer_count")
    assert isinstance(count, PeerCountDoc)
    peers = decode(await conn.get_json("/eth/v1/node/peers?state=connected&direction=inbound"), PeersDoc,
                   "/eth/v1/node/peers")
    assert isinstance(peers, PeersDoc)
    inbound = _int(peers.meta.count, "peers meta.count") if peers.meta is not None else len(peers.data)
    return status_from(ident.data, _int(count.data.connected, "peer_count.connected"), inbound, version)
