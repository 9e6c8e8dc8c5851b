"""The node's own view for the watcher: peer counts and advertised addresses, read through nodereach.node
(the same adapters and credential rules as `check --node`) once per probe round, within its own bound.

`--node KIND[=URL|PATH]` names the node; `--node auto` finds it once at start-up (known programs running here,
default RPC ports listening). A read that fails, hangs or gets garbage is one `node-unreadable` error count
and changes nothing the watcher declared.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from nodereach.errors import UsageError
from nodereach.watch.model import NodeView

if TYPE_CHECKING:
    from nodereach.node.reader import NodeSpec

NODE_READ_BUDGET_S = 2.0


class NodeSource(Protocol):
    name: str

    async def read(self) -> NodeView: ...

    async def close(self) -> None: ...


class NodeReader:
    """One node, read with nodereach.node.reader.read_node (never raises)."""

    def __init__(self, spec: NodeSpec, *, how: str = "", owner_uid: int | None = None,
                 budget_s: float = NODE_READ_BUDGET_S) -> None:
        assert spec.kind is not None, "detect the node first"
        self.spec = spec
        self.name: str = spec.kind
        self.how = how
        self.owner_uid = owner_uid
        self.budget_s = budget_s

    async def read(self) -> NodeView:
        from nodereach.node.reader import read_node

        reading = await read_node(self.spec, budget_s=self.budget_s, owner_uid=self.owner_uid, how=self.how)
        status = reading.status
        if status is None:
            return NodeView(software=self.name, error=reading.error or "no answer")
        advertised = tuple(a.address for a in status.advertised if a.address and a.host_kind == "ip")
        return NodeView(software=status.software, inbound=status.inbound, outbound=status.outbound,
                        advertised=advertised, advertisements=tuple(status.advertised))

    async def close(self) -> None:
        return None


def open_node(text: str) -> NodeSource:
    """`--node KIND[=URL|PATH]` or `--node auto` -> a source; UsageError that says what to write otherwise."""
    from nodereach.node.reader import NodeSpec

    try:
        spec = NodeSpec.parse(text)
    except ValueError as exc:
        raise UsageError(f"bad --node {text!r}: {exc}",
                         "e.g. --node monero or --node monero=http://127.0.0.1:18081") from None
    if spec.kind is not None:
        return NodeReader(spec)
    from nodereach.node.listeners import list_processes, scan
    from nodereach.node.reader import detect

    found = detect(list_processes(), scan(name_processes=True))
    if not found:
        raise UsageError("--node auto found no node software running on this host",
                         "name it: --node KIND[=URL], e.g. --node monero=http://127.0.0.1:18081")
    first = found[0]
    return NodeReader(first.spec, how=first.how, owner_uid=first.owner_uid)
