"""The node's own view: who listens on its ports on this host, what the node software says about itself (its
RPC), and whether what it advertises to the network matches what peers can reach.

Modules: `listeners` (sockets of this host, no root), `catalog` (known node software: ports, RPC, adapter),
`adapters/` (one per software: Bitcoin Core, Ethereum execution and consensus clients, kubo, monerod, lnd,
Transmission, Syncthing), `reader` (--node, detection, credentials, one bounded read), `advertised`
(advertised versus observed), `view` (the check's node stage), `report` / `model` (the report's node block).
Nothing here is imported on the check's start-up path until it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nodereach.node.reader import NodeAdapter


def open_adapter(kind: str, target: str | None = None) -> NodeAdapter:
    """A node to read again and again (`nodereach watch --node KIND[=URL]`): `await adapter.read()` gives the
    report's node block (software, peers, advertised) or raises NodeError with the reason."""
    from nodereach.errors import UsageError
    from nodereach.node.reader import NodeAdapter, NodeSpec

    try:
        return NodeAdapter(NodeSpec.parse(f"{kind}={target}" if target else kind))
    except ValueError as exc:
        raise UsageError(f"bad --node: {exc}", "e.g. --node monero or --node bitcoin=http://127.0.0.1:8332") from None
