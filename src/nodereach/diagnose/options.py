"""What a check is asked to do (`CheckOptions`, `ServerSpec`), and the servers as resolved for one run.

Options are values: the CLI, a config file or a library caller (`nodereach watch`) builds them once; the
check never changes them. Resolving a server gives a new value (`ResolvedServer`) instead of filling in the
spec, so one `CheckOptions` can be run again and again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from nodereach import defaults
from nodereach.net import Family, PortSpec, ResolveError, SockAddr, family_of, resolve

if TYPE_CHECKING:
    from nodereach.node.catalog import PortPick
    from nodereach.node.choice import NodeChoice, Secrets
    from nodereach.node.view import HostScan

Progress = Callable[[str, str, str], None]
"""progress(step, state, detail): state is running | done | failed | skipped."""

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_LIFETIME_MAX_S = 120.0


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """A server as the operator named it: STUN on `stun_port`, the dial-back API on `http_port` of the same
    host (None for a plain STUN server, which cannot test inbound reachability)."""

    host: str
    stun_port: int = defaults.STUN_PORT
    http_port: int | None = defaults.HTTP_PORT

    @property
    def label(self) -> str:
        return f"[{self.host}]:{self.stun_port}" if ":" in self.host else f"{self.host}:{self.stun_port}"


@dataclass(frozen=True, slots=True)
class CheckOptions:
    servers: Sequence[ServerSpec]
    """In the operator's order: the first that resolves to IPv4 is the primary."""
    ports: Sequence[PortSpec] = ()
    timeout: float = DEFAULT_TIMEOUT_S
    """Upper bound of the whole run (seconds), the binding-lifetime test excepted."""
    lifetime: bool = False
    lifetime_max: float = DEFAULT_LIFETIME_MAX_S
    builtin_servers: bool = False
    """The servers are nodereach's built-in public STUN list (no --server, no config): the report says what
    plain STUN servers cannot test."""
    node: NodeChoice | None = None
    """The node stage (nodereach.node): read the node named with --node, detect one (auto), or None: no
    node stage at all (the report's `node` is null and ports keep the path semantics)."""
    port_pick: PortPick | None = None
    """With no --port: how `ports` were chosen from the programs listening here."""
    host_scan: HostScan | None = None
    """The host scan made to pick the ports (reused by the node stage instead of scanning twice)."""
    node_secrets: Secrets | None = None
    hold_free_ports: bool = True
    """May the check listen on a node port nothing holds, to prove the path to it (and learn a free UDP
    port's public endpoint)? `nodereach watch` says no: it checks beside a node that may be restarting, and
    a node that cannot bind its own port because the check holds it for a second would fail to start."""
    warm_imports: bool = True
    """Import the run's later modules in a thread while the first packets fly (diagnose.warm)? It speeds a
    one-shot check's first replies; a long-running caller (`nodereach watch`) says no: the thread's malloc
    arena stays resident for the process's life (+0.7-1.4 MiB measured) to save ~0.1 s once."""

    def __post_init__(self) -> None:
        # Any sequence in (a caller's lists), a tuple kept: the options of a run never change under it.
        object.__setattr__(self, "servers", tuple(self.servers))
        object.__setattr__(self, "ports", tuple(self.ports))


class ResolvedServer(msgspec.Struct, frozen=True):
    """A server and the addresses its name gave (first answer first), or why it gave none."""

    spec: ServerSpec
    addresses: tuple[str, ...] = ()
    error: str | None = None

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def dialback(self) -> bool:
        return self.spec.http_port is not None

    def address(self, family: Family) -> str | None:
        """Its first address of `family`."""
        return next((a for a in self.addresses if family_of(a) == family), None)

    def stun(self, family: Family) -> SockAddr | None:
        """Where its STUN service is over `family`."""
        address = self.address(family)
        return None if address is None else (address, self.spec.stun_port)


async def resolve_server(spec: ServerSpec, wait_s: float) -> ResolvedServer:
    """The server's addresses within `wait_s`; a failure is a value with the reason, never an exception."""
    try:
        addresses = await resolve(spec.host, spec.stun_port, timeout=wait_s)
    except ResolveError as exc:
        return ResolvedServer(spec, error=str(exc))
    return ResolvedServer(spec, tuple(addresses))


async def resolve_servers(specs: Sequence[ServerSpec], wait_s: float) -> tuple[ResolvedServer, ...]:
    """Every server at once, in the order given."""
    return tuple(await asyncio.gather(*(resolve_server(s, wait_s) for s in specs)))


class ServerRoles(msgspec.Struct, frozen=True):
    """Which resolved server does what in one family: the primary answers the RFC 5780 tests, every usable
    one gets test I (plain servers are compared when the primary has no OTHER-ADDRESS), the first dial-back
    server tests the node's ports."""

    family: Family
    servers: tuple[ResolvedServer, ...] = ()

    @property
    def primary(self) -> ResolvedServer | None:
        return self.servers[0] if self.servers else None

    @property
    def dialback(self) -> ResolvedServer | None:
        return next((s for s in self.servers if s.dialback), None)


def roles(resolved: Sequence[ResolvedServer], family: Family) -> ServerRoles:
    return ServerRoles(family, tuple(s for s in resolved if s.address(family) is not None))
