"""monerod: its daemon JSON-RPC, `get_info` and `get_connections`.

Upstream doc: https://docs.getmonero.org/rpc-library/monerod-rpc/ (get_info, get_connections).

What the node cannot tell over RPC: its P2P port (not in get_info; the catalog default is used) and whether it
maps that port itself with UPnP (`--igd`, default `delayed`: on when no peer came in for a while; `--no-igd`).
"""

from __future__ import annotations

import msgspec

from nodereach.node.adapters.base import Count, NodeError, NodeStatus, PortMapping, decode
from nodereach.node.adapters.rpcio import Conn

DOC = "https://docs.getmonero.org/rpc-library/monerod-rpc/"


class Info(msgspec.Struct):
    status: str = ""
    version: str = ""
    nettype: str = ""
    restricted: bool = False
    incoming_connections_count: Count | None = None
    outgoing_connections_count: Count | None = None


class Connection(msgspec.Struct):
    incoming: bool = False
    host: str = ""
    port: str = ""


class Connections(msgspec.Struct):
    connections: list[Connection] | None = None
    status: str = ""


def status_from(info: Info, conns: Connections | None, conn_error: str | None = None) -> NodeStatus:
    """Pure: the node's view from its answers."""
    notes: list[str] = []
    inbound, outbound = info.incoming_connections_count, info.outgoing_connections_count
    if info.restricted:
        # A restricted RPC port (--restricted-rpc / --rpc-restricted-bind-port) hides the counts: they read 0.
        notes.append("this RPC port is restricted: monerod reports 0 connections there; use the unrestricted "
                     "RPC port (default 18081 on 127.0.0.1) for peer counts")
        inbound = outbound = None
    if conns is not None and conns.connections is not None:
        inbound = sum(1 for c in conns.connections if c.incoming)
        outbound = len(conns.connections) - inbound
    elif conn_error:
        notes.append(f"get_connections: {conn_error}")
    if inbound:
        notes.append("the incoming count may include nodereach's own test connection while it runs")
    return NodeStatus(
        kind="monero", software="monerod", version=info.version or None, inbound=inbound, outbound=outbound,
        mapping=PortMapping(None, "--igd", detail="monerod maps its P2P port with UPnP unless started with "
                            "--no-igd (default: delayed, when no peer connected in); its RPC does not say"),
        notes=tuple(notes))


async def read(conn: Conn) -> NodeStatus:
    info = decode(await conn.jsonrpc("get_info", path="/json_rpc"), Info, "get_info")
    assert isinstance(info, Info)
    if info.status not in ("OK", ""):
        raise NodeError(f"get_info: status {info.status[:80]!r}")
    conns: Connections | None = None
    error: str | None = None
    if not info.restricted:
        try:
            got = decode(await conn.jsonrpc("get_connections", path="/json_rpc"), Connections, "get_connections")
            assert isinstance(got, Connections)
            conns = got
        except NodeError as exc:
            error = str(exc)
    return status_from(info, conns, error)
