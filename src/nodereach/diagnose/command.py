"""`nodereach check`: parse the operator's input, run the diagnosis, print it (rich or one JSON document)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import msgspec

from nodereach import defaults, tomlconfig
from nodereach.diagnose.model import EXIT_CODES, to_json
from nodereach.diagnose.options import CheckOptions, ServerSpec
from nodereach.errors import UsageError
from nodereach.net import TRANSPORTS, PortSpec, Transport, is_transport

if TYPE_CHECKING:
    from nodereach.node.choice import Secrets

BUILTIN_STUN_SERVERS = (
    "stun.l.google.com:19302",
    "stun1.l.google.com:19302",
    "stun.cloudflare.com:3478",
    "stun.nextcloud.com:443",
)
"""Plain public STUN servers used when neither --server nor a config file names one."""


def parse_port(text: str) -> list[PortSpec]:
    """`30303/tcp`, `30303/udp`, `30303` (both protocols), `30303/tcp+udp`."""
    raw = text.strip().lower()
    num, _, proto = raw.partition("/")
    try:
        port = int(num)
    except ValueError:
        raise UsageError(f"bad port {text!r}", "write PORT/PROTO, e.g. --port 30303/tcp --port 30303/udp") from None
    if not 1 <= port <= 65535:
        raise UsageError(f"port {port} out of range", "ports are 1..65535")
    protos: tuple[Transport, ...]
    if proto in ("", "both", "tcp+udp", "udp+tcp"):
        protos = TRANSPORTS
    elif is_transport(proto):
        protos = (proto,)
    else:
        raise UsageError(f"bad protocol in {text!r}", "use /tcp or /udp, e.g. 30303/udp")
    return [PortSpec(port, p) for p in protos]


def parse_server(text: str, *, dialback: bool = True) -> ServerSpec:
    """`HOST`, `HOST:STUN_PORT`, `[V6]:PORT`, bare IPv6. The dial-back service is on HTTP_PORT of HOST."""
    s = text.strip()
    if not s or any(c.isspace() for c in s) or "/" in s:
        raise UsageError(f"bad server {text!r}", "use --server HOST or HOST:PORT")
    port_s = ""
    if s.startswith("["):
        host, sep, rest = s[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise UsageError(f"bad server {text!r}", "IPv6 with a port looks like [2001:db8::1]:3478")
        port_s = rest[1:]
    elif s.count(":") > 1:
        host = s
    else:
        host, _, port_s = s.partition(":")
    if not host:
        raise UsageError(f"bad server {text!r}", "use --server HOST or HOST:PORT")
    port = defaults.STUN_PORT
    if port_s:
        try:
            port = int(port_s)
        except ValueError:
            raise UsageError(f"bad port in server {text!r}", "use --server HOST:PORT") from None
        if not 1 <= port <= 65535:
            raise UsageError(f"port out of range in server {text!r}", "ports are 1..65535")
    return ServerSpec(host=host, stun_port=port, http_port=defaults.HTTP_PORT if dialback else None)


class CheckFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """`check --config`: the file's keys, or the same under a [check] table (next to other commands' tables)."""

    servers: list[str] = []
    stun_servers: list[str] = []
    """Plain STUN servers (no nodereach dial-back there)."""
    ports: list[str] = []
    timeout: Annotated[float, msgspec.Meta(ge=0.5, le=300)] | None = None
    node: str | None = None
    """The node to read: `KIND[=URL|SOCKET]`, `auto` or `none` (as --node)."""
    node_cookie_file: str | None = None
    """Bitcoin Core's `.cookie` where it is not under the node user's ~/.bitcoin."""
    node_macaroon_file: str | None = None
    """lnd's (read-only) macaroon where it is not under ~/.lnd/data/chain/bitcoin/NET/."""
    node_tls_cert_file: str | None = None
    """lnd's `tls.cert` where it is not ~/.lnd/tls.cert."""
    node_api_key_file: str | None = None
    """A file holding Syncthing's API key (else read from its config.xml)."""


class _SharedFile(msgspec.Struct, frozen=True):
    check: CheckFile


def load_config(path: Path) -> CheckFile:
    """Typed and strict (tomlconfig): a mistake is one line naming the file and the key."""
    data = tomlconfig.read(path)
    if "check" in data:
        return tomlconfig.convert(data, _SharedFile, str(path)).check
    return tomlconfig.convert(data, CheckFile, str(path))


def build_options(servers: list[str], ports: list[str], timeout: float, lifetime: bool, lifetime_max: float,
                  config: Path | None, node: str | None = None) -> CheckOptions:
    if not 0.5 <= timeout <= 300:
        raise UsageError(f"--timeout {timeout} out of range", "use 0.5 .. 300 seconds")
    if lifetime and not 1 <= lifetime_max <= 3600:
        raise UsageError(f"--lifetime-max {lifetime_max} out of range", "use 1 .. 3600 seconds")
    cfg = load_config(config) if config is not None else CheckFile()
    specs = [parse_server(s) for s in servers]
    if not specs:
        specs = [parse_server(s) for s in cfg.servers]
        specs += [parse_server(s, dialback=False) for s in cfg.stun_servers]
    builtin = not specs
    if builtin:
        specs = [parse_server(s, dialback=False) for s in BUILTIN_STUN_SERVERS]
    port_specs: list[PortSpec] = []
    for text in ports or cfg.ports:
        for p in parse_port(text):
            if p not in port_specs:
                port_specs.append(p)
    if not servers and cfg.timeout is not None and timeout == 5.0:
        timeout = cfg.timeout
    from nodereach.node.choice import NodeChoice

    try:
        choice = NodeChoice.parse(node if node is not None else cfg.node)
    except ValueError as exc:
        raise UsageError(f"bad --node: {exc}", "e.g. --node monero, --node ethereum=/path/to/geth.ipc, "
                                               "--node bitcoin=http://127.0.0.1:8332, --node none") from None
    pick = host = None
    if not port_specs:
        # No --port: the node's P2P ports from the known programs listening on this host.
        from nodereach.node.view import pick_ports_now

        pick, host = pick_ports_now()
        port_specs = list(pick.ports)
    return CheckOptions(servers=specs, ports=port_specs, timeout=timeout, lifetime=lifetime,
                        lifetime_max=lifetime_max, builtin_servers=builtin, node=choice, port_pick=pick,
                        host_scan=host, node_secrets=_secrets(cfg))


def _secrets(cfg: CheckFile) -> Secrets | None:
    """Where the node's credentials are, from the config file (never on the command line: it shows in `ps`)."""
    from nodereach.node.choice import Secrets

    key: str | None = None
    if cfg.node_api_key_file:
        try:
            key = Path(cfg.node_api_key_file).read_text(errors="replace").strip()[:256] or None
        except OSError as exc:
            raise UsageError(f"cannot read node_api_key_file {cfg.node_api_key_file}: {exc.strerror or exc}") \
                from None
    if not (cfg.node_cookie_file or cfg.node_macaroon_file or cfg.node_tls_cert_file or key):
        return None
    return Secrets(cookie_file=cfg.node_cookie_file, macaroon_file=cfg.node_macaroon_file,
                   tls_cert_file=cfg.node_tls_cert_file, api_key=key)


def check_command(servers: list[str], ports: list[str], json_out: bool, timeout: float, lifetime: bool,
                  lifetime_max: float, config: Path | None, node: str | None = None) -> int:
    """Entry point for the CLI: returns the exit code (0 reachable, 1 unreachable, 3 no connectivity, 4 partly
    reachable: model.EXIT_CODES)."""
    from nodereach.diagnose.engine import run_check

    opts = build_options(servers, ports, timeout, lifetime, lifetime_max, config, node)
    # Plain asyncio: the check is a few dozen packets, and pyroute2's async netlink needs it.
    if json_out:
        report = asyncio.run(run_check(opts))
        sys.stdout.buffer.write(to_json(report) + b"\n")
        sys.stdout.flush()
    else:
        from nodereach.diagnose.render import LiveProgress, render_report

        with LiveProgress() as progress:
            report = asyncio.run(run_check(opts, progress.update))
        render_report(report)
    return EXIT_CODES[report.verdict]
