"""For `nodereach open`: does the node map its own ports already? Two mappers of one port fight each other."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nodereach.net import PortSpec
from nodereach.node.choice import NodeChoice, Secrets
from nodereach.node.report import double_mapping
from nodereach.node.view import observe


@dataclass(frozen=True, slots=True)
class ClashCheck:
    refuse: str | None = None
    """The node maps these ports itself: why `open` refuses, naming which of the two mappers to keep."""
    unread: str | None = None
    """A node was found but could not be read: whether it maps the ports itself is not known."""


async def node_mapping_clash(ports: Sequence[PortSpec], choice: NodeChoice, *, budget_s: float = 1.0,
                             secrets: Secrets | None = None) -> ClashCheck:
    """For `nodereach open`: does the node already map these ports itself (geth --nat, monerod --igd,
    Transmission port-forwarding-enabled, ...)? Nothing to say when no node is named or found."""
    if choice.spec is None and not choice.auto:
        return ClashCheck()
    obs = await observe(ports, choice, budget_s=budget_s, secrets=secrets)
    reading = obs.reading
    if reading is not None and reading.status is None and reading.error:
        why = reading.error if reading.endpoint in reading.error else f"{reading.endpoint}: {reading.error}"
        return ClashCheck(unread=f"could not read the node ({why}), so whether it maps "
                                 f"{', '.join(str(p) for p in ports)} on the router itself is not known; if it "
                                 "does, keep one of the two mappers")
    clash = double_mapping(reading.status if reading is not None else None, ports)
    if clash is None:
        return ClashCheck()
    listed = ", ".join(str(p) for p in clash.ports)
    return ClashCheck(refuse=(
        f"{clash.software} maps {listed} on the router itself ({clash.setting}); a second mapping of the same "
        f"port by nodereach would fight it. Keep one: leave it to {clash.software}, or turn its "
        f"{clash.setting} off and run `nodereach open` again (or pass --node none to map anyway)"))
