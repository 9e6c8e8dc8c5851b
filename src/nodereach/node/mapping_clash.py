"""For `nodereach open`: does the node map its own ports already? Two mappers of one port fight each other."""

from __future__ import annotations

from collections.abc import Sequence

from nodereach.net import PortSpec
from nodereach.node.choice import NodeChoice, Secrets
from nodereach.node.report import double_mapping
from nodereach.node.view import observe


async def node_mapping_clash(ports: Sequence[PortSpec], choice: NodeChoice, *, budget_s: float = 1.0,
                             secrets: Secrets | None = None) -> str | None:
    """For `nodereach open`: when the node already maps these ports itself (geth --nat, monerod --igd,
    Transmission port-forwarding-enabled, ...), the reason to refuse, naming which of the two to keep; None
    when it does not, or cannot be told."""
    if choice.spec is None and not choice.auto:
        return None
    obs = await observe(ports, choice, budget_s=budget_s, secrets=secrets)
    status = obs.reading.status if obs.reading is not None else None
    clash = double_mapping(status, ports)
    if clash is None:
        return None
    listed = ", ".join(str(p) for p in clash.ports)
    return (f"{clash.software} maps {listed} on the router itself ({clash.setting}); a second mapping of the same "
            f"port by nodereach would fight it. Keep one: leave it to {clash.software}, or turn its "
            f"{clash.setting} off and run `nodereach open` again (or pass --node none to map anyway)")
