"""The fields of `nodereach check --json` the lab judges, as a typed view decoded with msgspec.

The check's JSON document (schema `nodereach.check/2`, docs/check-schema.md) is the public contract between
the check and everything that reads it; the lab reads it like any other consumer, so `lab/` never imports
`diagnose/`. Only the fields the demo compares with the ground truth are declared; unknown fields are
ignored (the schema only ever adds fields within a version), and the IPv6 fields the check does not emit yet
(`reachability`, `ipv6`) are optional: their absence means "not yet tested", not a failure.
"""

from __future__ import annotations

from typing import Literal

import msgspec

SCHEMA_PREFIX = "nodereach.check/"
MAX_DOCUMENT_BYTES = 1 << 20
"""A check document is a few kB; anything larger is not one."""

Mapping = Literal["endpoint-independent", "address-dependent", "address-and-port-dependent", "no-nat", "unknown"]
Filtering = Literal["endpoint-independent", "address-dependent", "address-and-port-dependent", "no-nat", "unknown"]
Verdict = Literal["reachable", "partly-reachable", "unreachable", "no-connectivity"]
FamilyReachability = Literal["reachable", "unreachable", "no-connectivity", "untested"]
Translation6 = Literal["none", "nptv6", "nat66", "unknown"]


class CheckOutputError(ValueError):
    """The check's stdout was not a `nodereach.check/N` document (a crash, a usage error, another tool)."""


class NatView(msgspec.Struct, kw_only=True, frozen=True):
    present: bool | None = None
    layers: int | None = None
    cgnat: bool | None = None
    mapping: Mapping = "unknown"
    filtering: Filtering = "unknown"


class OutboundView(msgspec.Struct, kw_only=True, frozen=True):
    outbound: bool | None = None
    blocked_ports: tuple[int, ...] = ()


class PublicView(msgspec.Struct, kw_only=True, frozen=True):
    ipv4: str | None = None
    ipv6: str | None = None


class PortView(msgspec.Struct, kw_only=True, frozen=True):
    port: int
    protocol: Literal["tcp", "udp"]
    reachable: bool | None = None
    path_open: bool | None = None
    """check/2: the network path alone (the lab's truth); `reachable` also needs a program listening."""
    family: Literal[4, 6] | None = None
    """Added with per-family ports (issue 11); absent: the IPv4 test of a schema-1 document."""


class AdviceView(msgspec.Struct, kw_only=True, frozen=True):
    code: str
    title: str


class ReachabilityView(msgspec.Struct, kw_only=True, frozen=True):
    ipv4: FamilyReachability | None = None
    ipv6: FamilyReachability | None = None


class Ipv6View(msgspec.Struct, kw_only=True, frozen=True):
    translation: Translation6 = "unknown"
    filtering: Filtering = "unknown"


class CheckView(msgspec.Struct, kw_only=True, frozen=True):
    """What the lab reads from one check document."""

    schema: str
    duration_s: float = 0.0
    verdict: Verdict
    nat: NatView = NatView()
    udp: OutboundView = OutboundView()
    tcp: OutboundView = OutboundView()
    public: PublicView = PublicView()
    ports: tuple[PortView, ...] = ()
    causes: tuple[str, ...] = ()
    advice: tuple[AdviceView, ...] = ()
    reachability: ReachabilityView | None = None
    """Per-family reachability (issue 11); None: this check does not report families yet."""
    ipv6: Ipv6View | None = None
    """IPv6 translation and filtering (issue 11); None: this check does not test them yet."""

    @property
    def ipv6_tested(self) -> bool:
        """Did this check test IPv6 at all (rather than predate IPv6 support)?"""
        return self.reachability is not None and self.reachability.ipv6 is not None


def decode_check(raw: bytes | str) -> CheckView:
    """Decode `nodereach check --json` output; CheckOutputError for anything that is not such a document."""
    data = raw.encode() if isinstance(raw, str) else raw
    if not data.strip():
        raise CheckOutputError("the check printed nothing on stdout")
    if len(data) > MAX_DOCUMENT_BYTES:
        raise CheckOutputError(f"the check printed {len(data)} bytes, more than any check document")
    try:
        view = msgspec.json.decode(data, type=CheckView)
    except msgspec.ValidationError as exc:
        raise CheckOutputError(f"not a check document: {exc}") from None
    except msgspec.DecodeError as exc:
        raise CheckOutputError(f"not JSON: {exc}") from None
    if not view.schema.startswith(SCHEMA_PREFIX):
        raise CheckOutputError(f"unknown schema {view.schema!r} (expected {SCHEMA_PREFIX}N)")
    return view
