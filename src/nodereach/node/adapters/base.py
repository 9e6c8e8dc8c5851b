"""What a node adapter reads from the node's RPC, as typed values, and the one error type it raises.

Advertised addresses are `nodereach.p2p.advertised.Advertised` values (one type for ENRs, enodes, multiaddrs,
lnd uris, Bitcoin local addresses), decoded by `nodereach.p2p`.

Every adapter turns its software's answers into one `NodeStatus`; anything it could not read costs one
`NodeError` with a reason an operator can act on ("RPC needs credentials: ...", "no answer within 1.0 s").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import msgspec

from nodereach.net import PortSpec
from nodereach.p2p.advertised import Advertised

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
"""A port number as a node's RPC reports it (0: off / none). Anything else is a malformed answer."""
Count = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
"""A peer or connection count."""


@dataclass(frozen=True, slots=True)
class PortMapping:
    """The node maps its own ports on the router (UPnP / NAT-PMP / PCP)."""

    enabled: bool | None
    """True: it is configured to map (and may have); False: off; None: cannot tell from its RPC."""
    setting: str
    """The node's own setting, as its operator writes it (`--nat`, `port-forwarding-enabled`, `-natpmp`)."""
    ports: tuple[PortSpec, ...] = ()
    detail: str = ""


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """The node's own view of itself."""

    kind: str
    software: str
    version: str | None = None
    inbound: int | None = None
    outbound: int | None = None
    listen: tuple[str, ...] = ()
    """Listen addresses as the node reports them (`0.0.0.0:30303`, `/ip4/0.0.0.0/tcp/4001`)."""
    advertised: tuple[Advertised, ...] = ()
    p2p_ports: tuple[PortSpec, ...] = ()
    """The P2P ports the node says it uses (its configuration, not the defaults)."""
    mapping: PortMapping | None = None
    reachability: str | None = None
    """The node's own verdict where it has one (kubo AutoNAT: `public`/`private`/`unknown`)."""
    notes: tuple[str, ...] = ()
    """Facts for the operator (`incoming counts 0 on a restricted RPC port`, `peers include nodereach's probe`)."""
    peer_ids: tuple[str, ...] = field(default=())
    """Identifiers the protocol proofs need: node id / peer id / infohashes served (`kind:value`)."""


class NodeError(Exception):
    """Reading the node failed; `str()` is the one reason shown to the operator (never a credential)."""


def decode(data: bytes, typ: type[msgspec.Struct] | type[object], what: str) -> object:
    """JSON -> typed value; a wrong shape is one NodeError naming what was expected."""
    try:
        return msgspec.json.decode(data, type=typ)
    except msgspec.ValidationError as exc:
        raise NodeError(f"{what}: unexpected answer ({exc})") from None
    except msgspec.DecodeError:
        raise NodeError(f"{what}: the answer is not JSON") from None
