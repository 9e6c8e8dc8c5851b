"""Inbound reachability of the node's ports for the check: nodereach.reach.client's dial-back, in the report's
terms (`PortResult`). The client is the lean one (no aiohttp); the RTT-derived deadline, the parallel copies
and the retry under observed loss are the check's (engine), passed in here. Never raises.
"""

from __future__ import annotations

from nodereach.diagnose.model import PortResult, ProtocolCheckResult
from nodereach.net import Family, Transport
from nodereach.reach.client import DialBackResult, ProofRequest, ServerWait, dial_back


def to_port_result(r: DialBackResult, family: Family = 4) -> PortResult:
    """The report's vocabulary: silence toward nodereach's own listener means no mapping or a filter."""
    reason = r.reason
    if r.listener == "nodereach" and r.reachable is False and reason == "timeout":
        reason = "no-mapping-or-filtered"
    check = r.protocol_check
    return PortResult(port=r.port, protocol=r.protocol, family=family, reachable=r.reachable, reason=reason,
                      listener=r.listener, rtt_ms=r.rtt_ms, second_address=r.second_address,
                      protocol_check=ProtocolCheckResult(protocol=str(check.protocol), ok=check.ok,
                                                         detail=check.detail, rtt_ms=check.rtt_ms)
                      if check is not None else None)


async def probe(host: str, http_port: int, port: int, protocol: Transport, *, family: Family = 4,
                server_wait: ServerWait, http_timeout: float, copies: int = 1, listen: bool = True,
                hedge_s: float | None = None, proof: ProofRequest | None = None,
                connect_wait: ServerWait | None = None) -> PortResult:
    """Ask the dial-back service at host:http_port to reach our `port`/`protocol` from outside.
    `server_wait(handshake_s)` gives the server's probe deadline once the HTTP handshake time is known;
    `listen=False`: never listen on the port ourselves when nothing holds it; `proof`: speak the node's own
    protocol to it instead (the answer's `protocol_check`); `connect_wait(handshake_s)`: a TCP proof's deadline
    for its connection alone."""
    return to_port_result(await dial_back(host, http_port, port, protocol, server_wait=server_wait,
                                          http_timeout=http_timeout, copies=copies, listen=listen,
                                          hedge_s=hedge_s, proof=proof, connect_wait=connect_wait), family)
