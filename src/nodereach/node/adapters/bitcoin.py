"""Bitcoin Core: JSON-RPC `getnetworkinfo` and `getpeerinfo`, authenticated with the cookie file.

Upstream doc: https://developer.bitcoin.org/reference/rpc/getnetworkinfo.html and
https://developer.bitcoin.org/reference/rpc/getpeerinfo.html (field names as of v27: `connections_in`,
`connections_out` since v21); the chain from https://bitcoincore.org/en/doc/29.0.0/rpc/blockchain/getblockchaininfo/
(`chain`: main, test, testnet4, signet, regtest; `signet_challenge` on a signet), for the protocol proof's
network magic.

Two facts operators trip on: an empty `localaddresses` is normal (the node advertises what its peers report as
`addrlocal`, or `externalip=`), and `networks[].reachable` is about connecting out to that network, not about
being reachable from it.
"""

from __future__ import annotations

import hashlib

import msgspec

from nodereach.net import Family, PortSpec
from nodereach.node.adapters.base import Count, NodeError, NodeStatus, Port, PortMapping, decode
from nodereach.node.adapters.rpcio import Conn
from nodereach.p2p.addrs import bitcoin_local_address, split_host_port
from nodereach.p2p.advertised import Advertised, host_kind
from nodereach.p2p.errors import AddressError

DOC = "https://developer.bitcoin.org/reference/rpc/getnetworkinfo.html"
NATPMP_DEFAULT_ON = 290000
"""PCP/NAT-PMP port mapping (`-natpmp`) arrived in v28 (off) and is on by default from v29; UPnP was removed."""
BITCOIN_CHAINS: dict[str, str] = {"main": "main", "test": "testnet3", "testnet3": "testnet3", "testnet4": "testnet4",
                                  "signet": "signet", "regtest": "regtest"}
"""`getblockchaininfo.chain` (main, test, testnet4, signet, regtest) -> the proof's network name."""
DEFAULT_SIGNET_CHALLENGE = bytes.fromhex(
    "512103ad5e0edad18cb1f0fc0d28a3d4f1f3e445640337489abb10404f2d1e086be430210359ef5021964fe22d6f8e05b2463c9540ce96883fe"
    "3b278760f048f5189f2e6c452ae")
"""The global signet's block challenge (Bitcoin Core chainparams); any other one is a custom signet."""


def signet_magic(challenge: bytes) -> bytes:
    """A signet's message start: the first 4 bytes of double SHA-256 over the challenge script serialized with
    its compact-size length (BIP 325; Bitcoin Core SigNetParams)."""
    n = len(challenge)
    size = bytes([n]) if n < 0xFD else b"\xfd" + n.to_bytes(2, "little") if n <= 0xFFFF else \
        b"\xfe" + n.to_bytes(4, "little")
    return hashlib.sha256(hashlib.sha256(size + challenge).digest()).digest()[:4]


def proof_ids(chain: str, signet_challenge: str | None) -> tuple[str, ...]:
    """What the Bitcoin proof needs from `getblockchaininfo`, as NodeStatus.peer_ids entries: `network:NAME`,
    or `magic:HEX` for a custom signet."""
    network = BITCOIN_CHAINS.get(chain)
    if network is None:
        return ()
    if network == "signet" and signet_challenge:
        try:
            challenge = bytes.fromhex(signet_challenge)
        except ValueError:
            return ()
        if challenge != DEFAULT_SIGNET_CHALLENGE:
            return (f"magic:{signet_magic(challenge).hex()}",)
    return (f"network:{network}",)


class LocalAddress(msgspec.Struct):
    address: str
    port: Port
    score: int = 0


class NetworkInfo(msgspec.Struct):
    version: int = 0
    subversion: str = ""
    connections: Count | None = None
    connections_in: Count | None = None
    connections_out: Count | None = None
    localaddresses: list[LocalAddress] = msgspec.field(default_factory=list)


class ChainInfo(msgspec.Struct):
    chain: str = ""
    signet_challenge: str | None = None


class PeerInfo(msgspec.Struct):
    addr: str = ""
    addrlocal: str | None = None
    inbound: bool = False
    network: str = ""


def version_text(version: int, subversion: str) -> str:
    """`/Satoshi:27.0.0/` -> `27.0.0`; else from the integer (270000 -> `27.0.0`)."""
    if subversion.startswith("/Satoshi:"):
        return subversion[len("/Satoshi:"):].split("/", 1)[0].split("(", 1)[0]
    return f"{version // 10000}.{version // 100 % 100}.{version % 100}" if version else ""


def status_from(net: NetworkInfo, peers: list[PeerInfo] | None, chain: ChainInfo | None = None) -> NodeStatus:
    advertised: list[Advertised] = []
    notes: list[str] = []
    for a in net.localaddresses[:32]:
        try:
            advertised.append(bitcoin_local_address(a.address, a.port))
        except AddressError as exc:
            notes.append(f"localaddresses: {exc}")
    seen_local: dict[str, int] = {}
    ports = {a.port for a in net.localaddresses if a.port}
    if peers:
        for p in peers:
            if p.addrlocal and not p.inbound:
                # What an outbound peer saw as our address: what the node will self-advertise when it has no
                # localaddresses. The port is the one we dialled from, not our listening port.
                try:
                    host, _ = split_host_port(p.addrlocal)
                except AddressError:
                    continue
                seen_local[host] = seen_local.get(host, 0) + 1
    for host, count in sorted(seen_local.items(), key=lambda kv: -kv[1])[:4]:
        if not any(a.address == host for a in advertised):
            port = next(iter(ports)) if len(ports) == 1 else None
            kind = host_kind(host)
            family: Family | None = (6 if ":" in host else 4) if kind == "ip" else None
            advertised.append(Advertised(host, port, "tcp", "bitcoin", kind, family, False,
                                         f"addrlocal ({count} peers)"))
    if not net.localaddresses:
        notes.append("localaddresses is empty: normal; the node advertises the address its peers see "
                     "(addrlocal) unless externalip= is set")
    inbound, outbound = net.connections_in, net.connections_out
    if peers is not None and inbound is None:
        inbound = sum(1 for p in peers if p.inbound)
        outbound = len(peers) - inbound
    mapping = PortMapping(None if net.version >= NATPMP_DEFAULT_ON else False, "-natpmp",
                          detail="Bitcoin Core 29+ maps its port with PCP/NAT-PMP unless natpmp=0"
                          if net.version >= NATPMP_DEFAULT_ON else "")
    version = version_text(net.version, net.subversion) or None
    return NodeStatus(kind="bitcoin", software="Bitcoin Core", version=version,
                      inbound=inbound, outbound=outbound, advertised=tuple(advertised),
                      p2p_ports=tuple(PortSpec(p, "tcp") for p in sorted(ports)), mapping=mapping, notes=tuple(notes),
                      peer_ids=proof_ids(chain.chain, chain.signet_challenge) if chain is not None else ())


async def read(conn: Conn) -> NodeStatus:
    net = decode(await conn.jsonrpc("getnetworkinfo", [], version="1.0"), NetworkInfo, "getnetworkinfo")
    assert isinstance(net, NetworkInfo)
    peers = decode(await conn.jsonrpc("getpeerinfo", [], version="1.0"), list[PeerInfo], "getpeerinfo")
    assert isinstance(peers, list)
    chain: ChainInfo | None = None
    try:
        got = decode(await conn.jsonrpc("getblockchaininfo", [], version="1.0"), ChainInfo, "getblockchaininfo")
        assert isinstance(got, ChainInfo)
        chain = got
    except NodeError:
        chain = None  # only the proof's magic needs it: without it the node's default port names the network
    return status_from(net, peers, chain)
