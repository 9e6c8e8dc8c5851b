"""NAT layers and CGNAT from evidence along the path (pure).

Evidence: the node's local address, the public address the servers saw, the gateway's WAN address as
PCP/NAT-PMP/UPnP report it, and the addresses of routers answering TTL-limited probes. Every private or
shared (RFC 6598) address realm between the node and the first public hop is one NAT layer: routers do not
route between such realms and the internet without translating.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import msgspec

from nodereach.diagnose.model import Hop, HopKind, NatLayer
from nodereach.net import address_kind, is_public, nat_realm

SHARED_REALM = "100.64.0.0/10"
"""RFC 6598 shared address space: the provider's carrier-grade NAT realm (nodereach.net.nat_realm's name)."""


def hop_kind(address: str) -> HopKind:
    """An address in the path drawing's four words (nodereach.net.address_kind folded: the documentation
    ranges count as public, they are the lab's internet; unique-local IPv6 is private)."""
    kind = address_kind(address)
    if kind in ("private", "unique-local"):
        return "private"
    if kind == "shared":
        return "shared"
    return "public" if is_public(address) else "special"


class PathEvidence(msgspec.Struct, frozen=True):
    local_address: str | None
    public_address: str | None
    """What the STUN servers saw (None: no answer)."""
    gateway: str | None = None
    gateway_wan: tuple[str, ...] = ()
    """External addresses reported by PCP / NAT-PMP / UPnP (may be STUN-derived by the router)."""
    hops: tuple[Hop, ...] = ()
    """TTL-limited probe results, first hop first; address None where nothing answered."""


class LayerInference(msgspec.Struct):
    present: bool | None
    layers: int | None
    cgnat: bool | None
    details: list[NatLayer] = msgspec.field(default_factory=list)
    reasons: dict[str, str] = msgspec.field(default_factory=dict)


def make_hops(addresses: Sequence[str | None]) -> list[Hop]:
    """TTL-ordered hop addresses -> report hops with their address kind."""
    return [Hop(ttl=i + 1, address=a, kind=hop_kind(a) if a else None) for i, a in enumerate(addresses)]


def infer_layers(ev: PathEvidence) -> LayerInference:
    """Count NAT layers and decide CGNAT; say which layer is the operator's and which the provider's."""
    if ev.public_address is None:
        present = None
        if ev.local_address is not None and is_public(ev.local_address):
            # A public local address with no server answer: we cannot prove absence of NAT, but there is
            # no private realm on our side either.
            return LayerInference(None, None, None, reasons={
                "layers": "no server reported our public address", "cgnat": "no server answered"})
    elif ev.local_address is not None and ev.local_address == ev.public_address:
        return LayerInference(False, 0, False)
    else:
        present = True

    # Realms crossed: the local one, then each new private/shared realm seen on a hop before the first
    # public hop, plus the gateway's WAN realm if the gateway reports one.
    realms: list[tuple[str, str | None]] = []  # (realm, router seen in it)
    local_realm = nat_realm(ev.local_address) if ev.local_address else None
    if local_realm is not None:
        realms.append((local_realm, ev.gateway))
    reached_public = False
    answered_hops = 0
    for hop in ev.hops:
        if hop.address is None:
            continue
        answered_hops += 1
        realm = nat_realm(hop.address)
        if realm is None:
            if is_public(hop.address):
                reached_public = True
                break
            continue
        if not realms or realms[-1][0] != realm:
            if any(r == realm for r, _ in realms):
                continue  # back in a realm seen before (odd routing): not a new layer
            realms.append((realm, hop.address))
        elif realms[-1][1] is None:
            realms[-1] = (realm, hop.address)
    for wan in ev.gateway_wan:
        realm = nat_realm(wan)
        if realm is not None and all(r != realm for r, _ in realms):
            realms.insert(1 if realms else 0, (realm, None))

    reasons: dict[str, str] = {}
    if present is None and not realms:
        return LayerInference(None, None, None, reasons={
            "present": "no server reported our public address", "layers": "no evidence",
            "cgnat": "no evidence"})
    if present is None:
        present = True  # a private local address without any answer: behind NAT for sure
        reasons["layers"] = "no server reported our public address; layers counted from the path only"

    layers = len(realms)
    if layers == 0:
        # Public local address but the servers see another public one: a public-to-public NAT.
        layers = 1
    # A gateway WAN that is public but differs from what the servers see: another NAT beyond it.
    if ev.public_address and layers < 2 and any(is_public(w) and w != ev.public_address for w in ev.gateway_wan):
        layers = 2
    if not reached_public and answered_hops == 0 and not ev.gateway_wan and layers >= 1:
        reasons["layers"] = reasons.get("layers") or (
            "no router answered the TTL-limited probes; layers beyond the first may be hidden")

    shared_seen = any(r == SHARED_REALM for r, _ in realms) or any(
        a and address_kind(a) == "shared" for a in (ev.local_address, *ev.gateway_wan))
    cgnat: bool | None
    if shared_seen:
        cgnat = True
    elif reached_public or (ev.gateway_wan and ev.public_address in ev.gateway_wan and layers == 1):
        cgnat = False
    else:
        cgnat = None
        reasons["cgnat"] = "the path to the internet was not fully seen (no TTL-probe answers)"

    details: list[NatLayer] = []
    for i, (realm, router) in enumerate(realms):
        owner: Literal["operator", "provider", "unknown"]
        if realm == SHARED_REALM:
            owner = "provider"
        elif i == 0:
            owner = "operator"
        else:
            owner = "unknown"
        external = ev.public_address if i == len(realms) - 1 else None
        if i == 0 and ev.gateway_wan:
            external = ev.gateway_wan[0]
        details.append(NatLayer(index=i + 1, owner=owner, inside_network=realm, router=router,
                                external_address=external))
    if not details and layers:
        details.append(NatLayer(index=1, owner="unknown", external_address=ev.public_address))
    return LayerInference(True, layers, cgnat, details, reasons)
