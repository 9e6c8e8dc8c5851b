"""Transmission: its RPC (`session-get`, `torrent-get`), with the X-Transmission-Session-Id handshake.

Upstream doc: https://github.com/transmission/transmission/blob/main/docs/rpc-spec.md (3.00:
extras/rpc-spec.txt). The first request of a session is answered 409 with the session id to send from then on
(CSRF protection); credentials, when set, are HTTP Basic (`--node transmission=http://user:pass@127.0.0.1:9091`).
"""

from __future__ import annotations

import msgspec

from nodereach.net import PortSpec
from nodereach.node.adapters.base import NodeError, NodeStatus, Port, PortMapping, decode
from nodereach.node.adapters.rpcio import Conn, HttpResponse, check_status

DOC = "https://github.com/transmission/transmission/blob/main/docs/rpc-spec.md"
PATH = "/transmission/rpc"
SESSION_HEADER = "X-Transmission-Session-Id"


class Session(msgspec.Struct, rename="kebab"):
    peer_port: Port | None = None
    port_forwarding_enabled: bool | None = None
    version: str | None = None
    rpc_version: int | None = None


class Peer(msgspec.Struct, rename="camel"):
    address: str = ""
    port: int = 0
    is_incoming: bool = False


class Torrent(msgspec.Struct, rename="camel"):
    hash_string: str = ""
    peers: list[Peer] = msgspec.field(default_factory=list)
    status: int | None = None
    """0 stopped, 1 check pending, 2 checking, 3 download pending, 4 downloading, 5 seed pending, 6 seeding."""


RUNNING_FIRST = {6: 0, 4: 1, 5: 2, 3: 3, 2: 4, 1: 5}
"""Which torrents' infohashes the BitTorrent proof prefers: a stopped torrent (0) takes no peers (the client
closes a handshake for it as for an unknown one), an active one surely does."""


class Torrents(msgspec.Struct):
    torrents: list[Torrent] = msgspec.field(default_factory=list)


class Answer(msgspec.Struct):
    result: str = ""
    arguments: msgspec.Raw = msgspec.Raw(b"{}")


def status_from(session: Session, torrents: Torrents | None) -> NodeStatus:
    ports = (PortSpec(session.peer_port, "tcp"), PortSpec(session.peer_port, "udp")) if session.peer_port else ()
    inbound = outbound = None
    hashes: tuple[str, ...] = ()
    if torrents is not None:
        # One peer connected to two torrents is two connections; peers are counted per connection.
        inbound = sum(1 for t in torrents.torrents for p in t.peers if p.is_incoming)
        outbound = sum(1 for t in torrents.torrents for p in t.peers if not p.is_incoming)
        running = sorted((t for t in torrents.torrents if len(t.hash_string) == 40 and t.status != 0),
                         key=lambda t: RUNNING_FIRST.get(t.status if t.status is not None else -1, 9))
        hashes = tuple(f"infohash:{t.hash_string.lower()}" for t in running)
    mapping = None
    if session.port_forwarding_enabled is not None:
        mapping = PortMapping(session.port_forwarding_enabled, "port-forwarding-enabled", ports,
                              "Transmission maps its peer port with NAT-PMP/UPnP" if session.port_forwarding_enabled
                              else "")
    return NodeStatus(kind="transmission", software="Transmission", version=session.version,
                      inbound=inbound, outbound=outbound, p2p_ports=ports, mapping=mapping,
                      peer_ids=hashes)


async def _call(conn: Conn, method: str, arguments: dict[str, object], session_id: list[str]) -> bytes:
    body = msgspec.json.encode({"method": method, "arguments": arguments})
    resp: HttpResponse | None = None
    for _ in range(2):
        headers = {"Content-Type": "application/json"}
        if session_id[0]:
            # Only once known: Transmission 3.00 (libevent) stalls on a request whose header has an empty value.
            headers[SESSION_HEADER] = session_id[0]
        resp = await conn.request("POST", PATH, body, headers)
        if resp.status == 409 and resp.headers.get(SESSION_HEADER.lower()):
            session_id[0] = resp.headers[SESSION_HEADER.lower()][:128]
            continue
        break
    assert resp is not None
    check_status(resp, conn.target, method)
    answer = decode(resp.body, Answer, method)
    assert isinstance(answer, Answer)
    if answer.result != "success":
        raise NodeError(f"{method}: Transmission answered {answer.result[:120]!r}")
    return bytes(answer.arguments)


async def read(conn: Conn) -> NodeStatus:
    # Transmission with port-forwarding-enabled runs UPnP discovery in its session thread after start-up (and
    # on port changes): its RPC does not answer for seconds then (measured with 3.00 in the lab). The read's
    # budget bounds that; the reason says it did not answer in time.
    session_id = [""]
    session = decode(await _call(conn, "session-get", {}, session_id), Session, "session-get")
    assert isinstance(session, Session)
    torrents: Torrents | None = None
    try:
        fields: dict[str, object] = {"fields": ["hashString", "peers", "status"]}
        got = decode(await _call(conn, "torrent-get", fields, session_id), Torrents, "torrent-get")
        assert isinstance(got, Torrents)
        torrents = got
    except NodeError:
        torrents = None
    return status_from(session, torrents)
