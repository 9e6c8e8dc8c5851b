"""lnd: its REST API (`/v1/getinfo`, `/v1/peers`) over TLS with its own certificate, authenticated with a
macaroon (hex in the `Grpc-Metadata-macaroon` header; the read-only one is enough).

Upstream doc: https://lightning.engineering/api-docs/api/lnd/lightning/get-info/ and
https://lightning.engineering/api-docs/api/lnd/lightning/list-peers/.
"""

from __future__ import annotations

import msgspec

from nodereach.net import PortSpec
from nodereach.node.adapters.base import Count, NodeStatus, decode
from nodereach.node.adapters.rpcio import Conn
from nodereach.p2p.addrs import parse_lnd_uri
from nodereach.p2p.advertised import Advertised
from nodereach.p2p.errors import AddressError

DOC = "https://lightning.engineering/api-docs/api/lnd/lightning/get-info/"


class GetInfo(msgspec.Struct):
    version: str = ""
    identity_pubkey: str = ""
    num_peers: Count | None = None
    uris: list[str] | None = None


class Peer(msgspec.Struct):
    pub_key: str = ""
    address: str = ""
    inbound: bool = False


class Peers(msgspec.Struct):
    peers: list[Peer] | None = None


def status_from(info: GetInfo, peers: Peers | None) -> NodeStatus:
    advertised: list[Advertised] = []
    notes: list[str] = []
    ports: list[PortSpec] = []
    for uri in (info.uris or [])[:16]:
        try:
            ep = parse_lnd_uri(uri).endpoint()
        except AddressError as exc:
            notes.append(f"getinfo.uris: {exc}")
            continue
        advertised.append(ep)
        if ep.port and PortSpec(ep.port, "tcp") not in ports:
            ports.append(PortSpec(ep.port, "tcp"))
    if not info.uris:
        notes.append("getinfo.uris is empty: lnd advertises no address (set externalip= or nat=true) and peers "
                     "cannot find it to connect in")
    inbound = outbound = None
    if peers is not None:
        plist = peers.peers or []
        inbound = sum(1 for p in plist if p.inbound)
        outbound = len(plist) - inbound
    return NodeStatus(kind="lnd", software="lnd", version=info.version.split(" ", 1)[0] or None, inbound=inbound,
                      outbound=outbound, advertised=tuple(advertised), p2p_ports=tuple(ports), notes=tuple(notes),
                      peer_ids=(f"pubkey:{info.identity_pubkey}",) if info.identity_pubkey else ())


async def read(conn: Conn) -> NodeStatus:
    info = decode(await conn.get_json("/v1/getinfo"), GetInfo, "/v1/getinfo")
    assert isinstance(info, GetInfo)
    peers = decode(await conn.get_json("/v1/peers"), Peers, "/v1/peers")
    assert isinstance(peers, Peers)
    return status_from(info, peers)
