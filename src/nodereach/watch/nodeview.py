"""The seam to the node adapters (nodereach.node, issue 10): what the watcher needs from a node's RPC.

The watcher asks a `NodeSource` once per probe round for a `NodeView` (peer counts, advertised addresses).
A source must answer within its own time bound and report failures in `NodeView.error`, never raise: an
RPC that hangs or lies costs the watcher one error count, not a probe round.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any, Protocol

from nodereach.errors import UsageError
from nodereach.watch.model import NodeView

NODE_READ_TIMEOUT_S = 3.0


class NodeSource(Protocol):
    name: str

    async def read(self) -> NodeView: ...

    async def close(self) -> None: ...


class AdapterSource:
    """Wraps a nodereach.node adapter: one bounded read per probe round, its answer reduced to a NodeView."""

    def __init__(self, name: str, adapter: Any, timeout: float = NODE_READ_TIMEOUT_S) -> None:
        self.name = name
        self.adapter = adapter
        self.timeout = timeout

    async def read(self) -> NodeView:
        try:
            async with asyncio.timeout(self.timeout):
                info = await self.adapter.read()
        except TimeoutError:
            return NodeView(error=f"{self.name} RPC did not answer within {self.timeout:.0f} s")
        except Exception as exc:  # an adapter's failure is one error count, never the watcher's end
            return NodeView(error=f"{self.name} RPC: {getattr(exc, 'message', None) or exc}")
        return view_of(info)

    async def close(self) -> None:
        close = getattr(self.adapter, "close", None)
        if close is not None:
            await close()


def view_of(info: Any) -> NodeView:
    """The fields the watcher tracks, read by name from the adapter's typed result (issue 10's report names:
    software, peers.inbound, peers.outbound, advertised[].address)."""
    peers = getattr(info, "peers", None)
    advertised = tuple(str(a.address) for a in getattr(info, "advertised", ()) or () if getattr(a, "address", None))
    return NodeView(software=getattr(info, "software", None), inbound=getattr(peers, "inbound", None),
                    outbound=getattr(peers, "outbound", None), advertised=advertised)


def open_node(spec: str) -> NodeSource:
    """`--node KIND[=URL]` -> a source. Until nodereach.node lands, say so plainly instead of guessing."""
    kind, _, target = spec.partition("=")
    if not kind.strip():
        raise UsageError(f"bad --node {spec!r}", "use --node KIND[=URL], e.g. --node monero=http://127.0.0.1:18081")
    try:
        node = importlib.import_module("nodereach.node")
    except ImportError:
        raise UsageError("--node needs the node adapters (nodereach.node), which this build does not have yet",
                         "leave --node out: ports, mappings and the public address are still watched") from None
    make = getattr(node, "open_adapter", None)
    if make is None:
        raise UsageError("--node needs the node adapters (nodereach.node.adapters), which this build does not have "
                         "yet", "leave --node out: ports, mappings and the public address are still watched")
    return AdapterSource(kind.strip(), make(kind.strip(), target.strip() or None))
