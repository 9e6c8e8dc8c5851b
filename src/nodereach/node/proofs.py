"""Which protocol proof fits each tested port of the node: the first exchange of its own protocol that the
dial-back service speaks to the port (docs/dialback-api.md, "Protocol proofs"), chosen from the node's kind and
what its RPC gave. Pure.

| kind | its TCP port | its UDP port |
|---|---|---|
| bitcoin | `version` with its chain's magic (`getblockchaininfo`) | — |
| monero | Levin ping | — |
| transmission | BitTorrent handshake for a torrent it runs (`torrent-get`) | — (uTP/DHT not spoken) |
| kubo | multistream-select | — (QUIC not spoken) |
| beacon | multistream-select (libp2p) | discv5, masked with the id of its ENR, on the ENR's `udp` port |
| ethereum | — (RLPx needs the node's ECIES handshake) | discv4 PING, the PONG checked against its ENR / enode |
| lnd, syncthing | — (Noise, TLS) | — |

A port gets a proof only when it is the node's (its configuration, what it advertises, its kind's defaults, or
a listener this host names as that software) and something holds it here (nothing else could answer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nodereach.net import PortSpec, Transport
from nodereach.node.adapters.base import NodeStatus
from nodereach.node.catalog import AdapterKind, by_kind, identify
from nodereach.node.listeners import Listener
from nodereach.node.view import NodeObservation
from nodereach.reach.client import ProofRequest

BITCOIN_PORTS: dict[int, str] = {8333: "main", 18333: "testnet3", 48333: "testnet4", 38333: "signet",
                                 18444: "regtest"}
"""Bitcoin Core's default P2P port per network (src/kernel/chainparams.cpp `nDefaultPort`): where the RPC
did not say which chain runs, a default port names it (a wrong magic gets no answer, so never guess more)."""


PROVES: dict[AdapterKind, frozenset[Transport]] = {
    "bitcoin": frozenset({"tcp"}), "monero": frozenset({"tcp"}), "transmission": frozenset({"tcp"}),
    "kubo": frozenset({"tcp"}), "beacon": frozenset({"tcp", "udp"}), "ethereum": frozenset({"udp"}),
    "lnd": frozenset(), "syncthing": frozenset()}
"""Over which transports a kind's ports can get a proof at all (the table above): a port of a kind named with
--node that can get none is dial-backed at once, without waiting for the node stage."""


@dataclass(frozen=True, slots=True)
class PortProof:
    spec: PortSpec
    request: ProofRequest


@dataclass(frozen=True, slots=True)
class ProofPlan:
    """The proof each of the node's tested ports gets, and why a port of the node gets none."""

    ports: tuple[PortProof, ...] = ()
    notes: tuple[str, ...] = ()

    def request_for(self, spec: PortSpec) -> ProofRequest | None:
        return next((p.request for p in self.ports if p.spec == spec), None)


def _ids(status: NodeStatus | None, prefix: str) -> list[str]:
    if status is None:
        return []
    return [i[len(prefix):] for i in status.peer_ids if i.startswith(prefix)]


def _enr(status: NodeStatus | None) -> str | None:
    return next((f"enr:{v}" for v in _ids(status, "enr:")), None)


def node_ports(kind: AdapterKind, status: NodeStatus | None, listeners: Sequence[Listener]) -> frozenset[PortSpec]:
    """The ports that are the node's: its configuration, what it advertises, its kind's defaults, and ports a
    listener holds that this host names as that software."""
    mine: set[PortSpec] = {p for prog in by_kind(kind) for p in prog.ports}
    if kind == "bitcoin":
        mine |= {PortSpec(port, "tcp") for port in BITCOIN_PORTS}  # each network's default, not only main's
    if status is not None:
        mine |= set(status.p2p_ports)
        mine |= {PortSpec(a.port, a.protocol) for a in status.advertised if a.port}
    for lst in listeners:
        prog = identify(lst.process) if lst.process else None
        if prog is not None and prog.kind == kind:
            mine.add(PortSpec(lst.port, lst.transport))
    return frozenset(mine)


def _discovery_ports(kind: AdapterKind, status: NodeStatus | None) -> frozenset[int] | None:
    """UDP ports where the node runs discovery, when its RPC says (None: it does not, the defaults apply).
    A QUIC port is not a discovery port."""
    if status is None:
        return None
    found = {a.port for a in status.advertised if a.protocol == "udp" and not a.quic and a.port and
             a.source in ("enr", "enode")}
    if kind == "ethereum":
        found |= {p.port for p in status.p2p_ports if p.transport == "udp"}
    return frozenset(found) if found else None


def _tcp_proof(kind: AdapterKind, spec: PortSpec, status: NodeStatus | None) -> ProofRequest | str | None:
    """The TCP proof, or a note saying why none fits (None: the kind's protocol is not spoken)."""
    if kind == "monero":
        return ProofRequest("monero")
    if kind in ("kubo", "beacon"):
        return ProofRequest("libp2p")
    if kind == "bitcoin":
        magic = next(iter(_ids(status, "magic:")), None)
        if magic is not None:
            return ProofRequest("bitcoin", magic=bytes.fromhex(magic))
        network = next(iter(_ids(status, "network:")), None) or BITCOIN_PORTS.get(spec.port)
        if network is None:
            return (f"{spec}: no Bitcoin proof, the node's chain is unknown (its RPC did not say, and "
                    f"{spec.port} is no network's default port); a wrong network's magic gets no answer")
        return ProofRequest("bitcoin", network=network)
    if kind == "transmission":
        infohash = next(iter(_ids(status, "infohash:")), None)
        if infohash is None:
            why = "its RPC was not read" if status is None else "it runs no torrent"
            return (f"{spec}: no BitTorrent proof, {why} (a client answers a handshake only for a torrent it "
                    "runs)")
        return ProofRequest("bittorrent", infohash=bytes.fromhex(infohash))
    return None


def _udp_proof(kind: AdapterKind, spec: PortSpec, status: NodeStatus | None) -> ProofRequest | str | None:
    if kind not in ("ethereum", "beacon"):
        return None
    discovery = _discovery_ports(kind, status)
    if discovery is not None and spec.port not in discovery:
        return None  # another UDP port of the node (QUIC): not its discovery
    enr = _enr(status)
    if kind == "beacon":
        if enr is None:
            return (f"{spec}: no discv5 proof, the node's ENR is unknown (a packet not masked with its id gets no "
                    "answer)")
        return ProofRequest("discv5", enr=enr)
    if enr is not None:
        return ProofRequest("discv4", enr=enr)
    enode = next(iter(_ids(status, "enode:")), None)
    if enode is not None and len(enode) == 128:
        from nodereach.p2p.crypto import node_id

        return ProofRequest("discv4", node_id=node_id(bytes.fromhex(enode)))
    return ProofRequest("discv4")  # any PONG proves the datagrams arrive; without an id its signer is not checked


def plan(kind: AdapterKind | None, status: NodeStatus | None, ports: Sequence[PortSpec],
         listeners: Sequence[Listener]) -> ProofPlan:
    """The proof per tested port. `listeners`: who listens on the tested ports here (a port nothing holds, or
    only loopback, gets no proof: nothing could answer from outside)."""
    if kind is None:
        return ProofPlan()
    mine = node_ports(kind, status, listeners)
    held = {PortSpec(lst.port, lst.transport) for lst in listeners if not lst.loopback}
    out: list[PortProof] = []
    notes: list[str] = []
    for spec in dict.fromkeys(ports):
        if spec not in mine or spec not in held:
            continue
        got = _tcp_proof(kind, spec, status) if spec.transport == "tcp" else _udp_proof(kind, spec, status)
        if isinstance(got, str):
            notes.append(got)
        elif got is not None:
            out.append(PortProof(spec, got))
    return ProofPlan(tuple(out), tuple(notes))


def plan_for(obs: NodeObservation | None, own_pid: int | None = None) -> ProofPlan:
    """The plan from the check's node stage: the kind read (named with --node or detected) and its status.
    `own_pid`: this process, whose sockets on a tested port are the dial-back's own temporary listener (the
    host scan runs beside it), not the node's."""
    if obs is None or obs.reading is None:
        return ProofPlan()
    listeners = [lst for lst in obs.listeners if own_pid is None or lst.pid != own_pid]
    return plan(obs.reading.kind, obs.reading.status, obs.ports, listeners)
