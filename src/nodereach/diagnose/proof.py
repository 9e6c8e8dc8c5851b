"""The node's answer in its own protocol, in the port's verdict. Pure.

A TCP handshake proves a path open; the node's own answer from outside (Levin ping, Bitcoin `version`,
multistream echo, BitTorrent handshake, discv4 PONG, discv5 WHOAREYOU) proves that peers' first packets reach
the node and that it takes them. For a UDP port the node holds it is the only evidence there is: without it
the port is `udp-unobservable`.

| the port so far | the proof | the port |
|---|---|---|
| any, nodereach listened itself | — | unchanged (the node did not hold the port) |
| any | could not run (no server, busy, ...) | unchanged, a note says why |
| any | the node answered (`ok`) | reachable, `ok`, path open |
| any | something answered, not as the node (`ok: false`) | not reachable, `protocol-check-failed`, path open |
| UDP | silence | not reachable, `timeout`, path not open |
| UDP | ICMP port unreachable | not reachable, `refused`, path open (the host, not the node) |
| TCP | no connection | unchanged (the path test, run after it, decides the path) |
"""

from __future__ import annotations

import msgspec

from nodereach.diagnose.model import PortResult, ProtocolCheckResult
from nodereach.node.model import NodeProblem

NOT_RUN = frozenset({"no-server", "server-error", "rate-limited", "server-busy", "refused-port", "local-error",
                     "no-time"})
"""Dial-back reasons that mean the server did not probe at all (nothing was learnt about the node); `no-time`:
the run's --timeout left no room to ask."""
FAILED = "protocol-check-failed"


class ProofJudgement(msgspec.Struct, frozen=True):
    reachable: bool | None
    path_open: bool | None
    reason: str | None
    check: ProtocolCheckResult | None
    """What goes into the port's `protocol_check` (None: no proof ran)."""
    note: str | None = None


def judge(port: PortResult, proof: PortResult | None) -> ProofJudgement:
    """`port`: the entry as the path test and the listener scan left it (`reachable`, `path_open`, `reason`,
    `listener`); `proof`: the dial-back's answer with the node's protocol, if one was asked."""
    same = ProofJudgement(port.reachable, port.path_open, port.reason, None)
    if proof is None or port.listener == "nodereach":
        return same
    check = proof.protocol_check
    if proof.reason in NOT_RUN or check is None:
        return ProofJudgement(port.reachable, port.path_open, port.reason, None,
                              note=f"{port.port}/{port.protocol}: the proof in the node's own protocol did not run "
                                   f"({proof.reason})")
    if check.ok:
        return ProofJudgement(True, True, "ok", check)
    if proof.reachable is True:
        return ProofJudgement(False, True, FAILED, check)
    if port.protocol == "udp":
        if proof.reason == "refused":
            return ProofJudgement(False, True, "refused", check)
        return ProofJudgement(False, False, proof.reason or "timeout", check)
    return ProofJudgement(port.reachable, port.path_open, port.reason, check)


PROTOCOL_NAMES = {"bitcoin": "a Bitcoin node (`version`)", "monero": "a Monero node (Levin ping)",
                  "libp2p": "a libp2p node (multistream-select)", "bittorrent": "a BitTorrent client (handshake)",
                  "discv4": "an Ethereum node (discv4 PONG)", "discv5": "a discv5 node (WHOAREYOU)"}


def proof_problem(port: PortResult, software: str | None) -> NodeProblem:
    """The node block's problem for a port whose path is open while what answers there is not the node."""
    check = port.protocol_check
    assert check is not None
    who = software or "the node"
    return NodeProblem(
        code=FAILED,
        detail=f"{port.port}/{port.protocol} is open from outside, but what answered there did not answer as "
               f"{PROTOCOL_NAMES.get(check.protocol, check.protocol)}: {check.detail}. Peers reach something other "
               f"than {who} there: check that the router forwards the port to this machine (not another device), "
               f"that {who} itself holds the port here, and that it runs the network and data its RPC reports")
