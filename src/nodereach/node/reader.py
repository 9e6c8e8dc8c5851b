"""Reading the node: `--node KIND[=URL|PATH]` or auto-detection, credentials found where each software keeps
them, one bounded read that never raises.

    reading = await read_node(NodeSpec.parse("monero"), budget_s=1.0)
    reading.status   # NodeStatus, or None with reading.error saying why

Credentials are read from the node's own files (Bitcoin Core's `.cookie`, lnd's macaroon and TLS certificate,
Syncthing's API key in config.xml) under the home of the user the node runs as (and this user's), or from
`user:password@` in the URL; they go only to the node's RPC endpoint and are never shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import pwd
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from nodereach.node.adapters.base import NodeError, NodeStatus
from nodereach.node.catalog import ADAPTER_KINDS, PROGRAMS, AdapterKind, by_kind, identify
from nodereach.node.choice import NO_SECRETS
from nodereach.node.choice import NodeSpec as NodeSpec
from nodereach.node.choice import Secrets as Secrets
from nodereach.node.listeners import Listener, ProcessInfo

if TYPE_CHECKING:
    from nodereach.node.adapters.rpcio import Conn, Target

MAX_SECRET_FILE = 64 * 1024


@dataclass(frozen=True, slots=True)
class NodeReading:
    """The outcome of reading one node: its status, or the one reason it could not be read."""

    kind: AdapterKind
    endpoint: str
    """The RPC endpoint as shown to the operator (never with credentials)."""
    how: str
    """Why this endpoint: named with --node, or what auto-detection saw."""
    status: NodeStatus | None = None
    error: str | None = None
    elapsed_s: float = 0.0


ADAPTERS: dict[AdapterKind, str] = {k: f"nodereach.node.adapters.{k}" for k in ADAPTER_KINDS}


def _homes(owner_uid: int | None) -> list[Path]:
    homes: list[Path] = []
    for uid in (owner_uid, os.getuid()):
        if uid is None:
            continue
        with contextlib.suppress(KeyError):
            home = Path(pwd.getpwuid(uid).pw_dir)
            if home not in homes:
                homes.append(home)
    return homes


def _read_secret(path: Path) -> bytes | None:
    try:
        with path.open("rb") as f:
            return f.read(MAX_SECRET_FILE)
    except OSError:
        return None


BITCOIN_NETS = {8332: "", 18332: "testnet3", 48332: "testnet4", 38332: "signet", 18443: "regtest"}


def _bitcoin_cookie(target: Target, homes: Sequence[Path], secrets: Secrets) -> tuple[str, str] | None:
    """`__cookie__:<hex>` from `<datadir>/[<net>/].cookie` (the net from the RPC port)."""
    sub = BITCOIN_NETS.get(target.port, "")
    candidates = [Path(secrets.cookie_file)] if secrets.cookie_file else []
    for base in [*(h / ".bitcoin" for h in homes), Path("/var/lib/bitcoind"), Path("/var/lib/bitcoin/.bitcoin")]:
        candidates.append(base / sub / ".cookie" if sub else base / ".cookie")
    for path in candidates:
        raw = _read_secret(path)
        if raw:
            user, sep, password = raw.decode("utf-8", "replace").strip().partition(":")
            if sep:
                return user, password
    return None


def _lnd_files(homes: Sequence[Path], secrets: Secrets) -> tuple[bytes | None, str | None]:
    macaroon = Path(secrets.macaroon_file) if secrets.macaroon_file else None
    cert = Path(secrets.tls_cert_file) if secrets.tls_cert_file else None
    for home in homes:
        base = home / ".lnd"
        if macaroon is None:
            for net in ("mainnet", "testnet", "signet", "regtest"):
                p = base / "data" / "chain" / "bitcoin" / net / "readonly.macaroon"
                if p.exists():
                    macaroon = p
                    break
        if cert is None and (base / "tls.cert").exists():
            cert = base / "tls.cert"
    return (_read_secret(macaroon) if macaroon else None), (str(cert) if cert else None)


def _syncthing_key(homes: Sequence[Path], secrets: Secrets) -> str | None:
    if secrets.api_key:
        return secrets.api_key
    import xml.etree.ElementTree as ET

    for home in homes:
        for rel in (".local/state/syncthing/config.xml", ".config/syncthing/config.xml"):
            raw = _read_secret(home / rel)
            if raw is None:
                continue
            with contextlib.suppress(ET.ParseError):
                key = ET.fromstring(raw).findtext("gui/apikey")
                if key:
                    return key.strip()
    return None


def connect(kind: AdapterKind, target: Target, deadline: float, *, owner_uid: int | None = None,
            secrets: Secrets = NO_SECRETS) -> Conn:
    """A `Conn` for `kind` with the credentials that software uses, found for the node's user."""
    from nodereach.node.adapters.rpcio import Conn

    homes = _homes(owner_uid)
    headers: dict[str, str] = {}
    ctx: ssl.SSLContext | None = None
    if kind == "bitcoin" and target.username is None and target.scheme != "ipc":
        cookie = _bitcoin_cookie(target, homes, secrets)
        if cookie is not None:
            target = target.with_auth(*cookie)
    elif kind == "lnd":
        macaroon, cert = _lnd_files(homes, secrets)
        if macaroon:
            headers["Grpc-Metadata-macaroon"] = macaroon.hex()
        if target.scheme == "https":
            ctx = ssl.create_default_context(cafile=cert) if cert else ssl.create_default_context()
            # lnd's self-signed certificate is trusted by pinning it (cafile), not by its host name.
            ctx.check_hostname = False
    elif kind == "syncthing":
        key = _syncthing_key(homes, secrets)
        if key:
            headers["X-API-Key"] = key
    return Conn(target, deadline=deadline, ssl_context=ctx, headers=headers)


def default_target(kind: AdapterKind) -> Target:
    from nodereach.node.adapters.rpcio import Target

    return Target.parse(by_kind(kind)[0].rpc)


def ipc_candidates(homes: Sequence[Path]) -> list[Path]:
    """Where execution clients put their IPC socket by default."""
    out: list[Path] = []
    for home in homes:
        out += [home / ".ethereum" / "geth.ipc", home / ".local" / "share" / "reth" / "mainnet" / "reth.ipc"]
    out += [Path("/var/lib/geth/geth.ipc"), Path("/tmp/reth.ipc")]
    return out


async def read_node(spec: NodeSpec, *, budget_s: float = 1.0, owner_uid: int | None = None, how: str = "",
                    secrets: Secrets = NO_SECRETS) -> NodeReading:
    """Read one node within `budget_s`; never raises (a failure is `NodeReading.error`)."""
    assert spec.kind is not None, "detect() first"
    kind = spec.kind
    from nodereach.node.adapters.rpcio import Target  # h11 is imported only when a node is read

    start = time.monotonic()
    how = how or ("named with --node" if spec.where else f"--node {kind}: its default RPC endpoint")
    try:
        target = Target.parse(spec.where) if spec.where else default_target(kind)
    except ValueError as exc:
        return NodeReading(kind, "?", how, error=str(exc))
    if kind == "ethereum" and spec.where is None:
        # geth serves admin_* only over IPC: prefer its socket when it exists and is ours to open.
        for path in ipc_candidates(_homes(owner_uid)):
            if path.exists() and os.access(path, os.R_OK | os.W_OK):
                target = Target.parse(str(path))
                break
    try:
        module: Any = importlib.import_module(ADAPTERS[kind])
        reader: Callable[[Conn], Any] = module.read
        conn = connect(kind, target, start + budget_s, owner_uid=owner_uid, secrets=secrets)
        async with asyncio.timeout(budget_s):
            status: NodeStatus = await reader(conn)
    except TimeoutError:
        return NodeReading(kind, target.label, how, error=f"{target.label} did not answer within {budget_s:.1f} s",
                           elapsed_s=time.monotonic() - start)
    except NodeError as exc:
        return NodeReading(kind, target.label, how, error=str(exc)[:300], elapsed_s=time.monotonic() - start)
    except Exception as exc:  # an adapter bug must not sink the check; its type is enough to report it
        return NodeReading(kind, target.label, how, error=f"reading the node failed ({type(exc).__name__})",
                           elapsed_s=time.monotonic() - start)
    return NodeReading(kind, target.label, how, status=status, elapsed_s=time.monotonic() - start)


@dataclass(frozen=True, slots=True)
class Detected:
    spec: NodeSpec
    how: str
    owner_uid: int | None = None


def detect(processes: Sequence[ProcessInfo], listeners: Sequence[Listener]) -> list[Detected]:
    """Nodes to read with no `--node`: known programs running here (their default RPC), else a default RPC
    port listening on this host's loopback or wildcard. Pure; one entry per adapter kind."""
    out: list[Detected] = []
    kinds: set[AdapterKind] = set()
    uid_of = {lst.pid: lst.uid for lst in listeners if lst.pid is not None}
    for proc in processes:
        prog = identify(proc.name, proc.argv)
        if prog is None or prog.kind in kinds or proc.other_netns:
            continue
        kinds.add(prog.kind)
        out.append(Detected(NodeSpec(prog.kind), f"{prog.name} runs (pid {proc.pid}); its default RPC {prog.rpc}",
                            proc.uid if proc.uid is not None else uid_of.get(proc.pid)))
    rpc_ports = {(lst.port) for lst in listeners if lst.transport == "tcp" and (lst.loopback or lst.wildcard)}
    for prog in PROGRAMS:
        if prog.kind in kinds:
            continue
        port = urlsplit(prog.rpc).port
        if port in rpc_ports and prog.kind not in ("lnd",):  # 8080 is too common to guess lnd from
            kinds.add(prog.kind)
            out.append(Detected(NodeSpec(prog.kind), f"something listens on {port}, the default RPC port of "
                                f"{prog.name}"))
    return out

