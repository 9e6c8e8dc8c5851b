"""`nodereach watch` options: flags, or a TOML file with the same keys (flags win), validated into
`WatchOptions`. Every bad value is one UsageError that says which key and what would be right.

    # /etc/nodereach/watch.toml (a [watch] table, or the keys at the top level)
    server = ["reach.example.net"]
    port = ["30303/tcp", "30303/udp"]
    keep-mapped = true
    interval = 60
    metrics = "127.0.0.1:3481"
    on-change = "/usr/local/bin/notify-operator"
    webhook = "https://hooks.example.net/nodereach"

`servers` / `ports` (check's spelling) are accepted too. Tuning keys (docs/watch.md): hysteresis,
confirm-interval, check-interval, grace, inbound-zero-after, check-timeout, hook-timeout, lease,
keep-mapped-family.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from nodereach import tomlconfig
from nodereach.errors import UsageError
from nodereach.net import Family, PortSpec, is_ip
from nodereach.watch import policy as P
from nodereach.watch.exporter import DEFAULT_METRICS_HOST, DEFAULT_METRICS_PORT
from nodereach.watch.hooks import DEFAULT_TIMEOUT_S
from nodereach.watch.probes import ServerAddr

CHEAP_BUILTIN_SERVERS = 2
"""Without --server the cheap probes ask only the first two built-in public STUN servers."""


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    """What a flag or a config key may set; None: not given (the default applies)."""

    server: list[str] | None = None
    servers: list[str] | None = None
    port: list[str] | None = None
    ports: list[str] | None = None
    node: str | None = None
    keep_mapped: bool | None = None
    keep_mapped_family: str | int | None = None
    interval: float | None = None
    metrics: str | None = None
    on_change: str | None = None
    webhook: str | None = None
    hysteresis: int | None = None
    confirm_interval: float | None = None
    check_interval: float | None = None
    grace: float | None = None
    inbound_zero_after: float | None = None
    check_timeout: float | None = None
    hook_timeout: float | None = None
    lease: int | None = None


@dataclass(frozen=True, slots=True)
class WatchOptions:
    servers: tuple[str, ...]
    """As given (the full check parses them as `check --server` does); empty: the built-in STUN servers."""
    stun_servers: tuple[ServerAddr, ...]
    ports: tuple[PortSpec, ...]
    policy: P.Policy = field(default_factory=P.Policy)
    node: str | None = None
    keep_mapped: bool = False
    keep_mapped_families: tuple[Family, ...] | None = None
    """None: every family the host has (IPv4 mappings, IPv6 pinholes), as `open`; else only these."""
    metrics: tuple[str, int] | None = (DEFAULT_METRICS_HOST, DEFAULT_METRICS_PORT)
    on_change: str | None = None
    webhook: str | None = None
    hook_timeout: float = DEFAULT_TIMEOUT_S
    lease: int = P.DEFAULT_LEASE_S

    @property
    def builtin_servers(self) -> bool:
        return not self.servers


def load_file(path: Path) -> Settings:
    """The [watch] table (or the top level without other tables: a file shared with `check` keeps its own
    [check] table), strict types, unknown keys refused (nodereach.tomlconfig)."""
    data = tomlconfig.read(path)
    if "watch" in data:
        section: Any = data["watch"]
        where = f"{path} [watch]"
    else:
        section = {k: v for k, v in data.items() if not isinstance(v, dict)}
        where = str(path)
    if not isinstance(section, dict):
        raise UsageError(f"{path}: `watch` must be a table", "write [watch] above the keys")
    return tomlconfig.convert(section, Settings, where)


def merge(flags: Settings, file: Settings | None) -> Settings:
    """Flags win over the file, key by key."""
    if file is None:
        return flags
    values = {name: getattr(flags, name) if getattr(flags, name) is not None else getattr(file, name)
              for name in Settings.__struct_fields__}
    if flags.server or flags.servers:  # servers given on the command line replace the file's whole list
        values["servers"] = flags.servers
        values["server"] = flags.server
    if flags.port or flags.ports:
        values["ports"] = flags.ports
        values["port"] = flags.port
    return Settings(**values)


def build(flags: Settings, config: Path | None = None) -> WatchOptions:
    s = merge(flags, load_file(config) if config is not None else None)
    server_texts = tuple((s.server or []) + (s.servers or []))
    stun = _stun_servers(server_texts)
    ports: list[PortSpec] = []
    for text in (s.port or []) + (s.ports or []):
        try:
            specs = PortSpec.parse_many(text)
        except ValueError as exc:
            raise UsageError(str(exc), "e.g. --port 30303/tcp --port 30303/udp") from None
        ports += [p for p in specs if p not in ports]
    keep = bool(s.keep_mapped)
    if keep and not ports:
        raise UsageError("--keep-mapped needs the node's ports", "add --port 30303/tcp (and /udp)")
    families = parse_keep_family(s.keep_mapped_family)
    interval = _range("interval", s.interval, P.DEFAULT_INTERVAL_S, 1.0, 3600.0)
    pol = P.Policy(
        interval=interval,
        confirm_interval=_range("confirm-interval", s.confirm_interval, min(P.DEFAULT_CONFIRM_INTERVAL_S, interval),
                                0.2, interval),
        hysteresis=int(_range("hysteresis", s.hysteresis, P.DEFAULT_HYSTERESIS, 1, 10)),
        check_period=_range("check-interval", s.check_interval, P.DEFAULT_CHECK_PERIOD_S, 10.0, 86400.0),
        grace=_range("grace", s.grace, P.DEFAULT_GRACE_S, 0.0, 86400.0),
        inbound_zero_after=_range("inbound-zero-after", s.inbound_zero_after, P.DEFAULT_INBOUND_ZERO_S, 1.0,
                                  7 * 86400.0),
        check_timeout=_range("check-timeout", s.check_timeout, P.DEFAULT_CHECK_TIMEOUT_S, 0.5, 60.0),
        server_backoff_max=P.server_backoff_cap(interval),
        confirm_check_delay=min(P.DEFAULT_CONFIRM_CHECK_DELAY_S, max(interval, 1.0)),
        min_check_gap=min(P.DEFAULT_MIN_CHECK_GAP_S, max(interval, 1.0)),
    )
    return WatchOptions(
        servers=server_texts, stun_servers=stun, ports=tuple(ports), policy=pol, node=s.node or None,
        keep_mapped=keep, keep_mapped_families=families, metrics=parse_metrics(s.metrics),
        on_change=_command(s.on_change), webhook=parse_webhook(s.webhook),
        hook_timeout=_range("hook-timeout", s.hook_timeout, DEFAULT_TIMEOUT_S, 0.5, 300.0),
        lease=int(_range("lease", s.lease, P.DEFAULT_LEASE_S, 30, 86400)))


def parse_keep_family(value: str | int | None) -> tuple[Family, ...] | None:
    """`4`, `6` or `both` (`open --family`'s words); None: every family the host has."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = str(value).strip().lower().removeprefix("ipv")
    found: dict[str, tuple[Family, ...]] = {"4": (4,), "6": (6,), "both": (4, 6)}
    if isinstance(value, bool) or text not in found:
        raise UsageError(f"bad keep-mapped-family {value!r}", "use 4, 6 or both (default: every family the host has)")
    return found[text]


def _stun_servers(texts: tuple[str, ...]) -> tuple[ServerAddr, ...]:
    from nodereach.diagnose.command import BUILTIN_STUN_SERVERS, parse_server

    chosen = texts or BUILTIN_STUN_SERVERS[:CHEAP_BUILTIN_SERVERS]
    out: list[ServerAddr] = []
    for text in chosen:
        spec = parse_server(text)  # the same rules as `check --server` (UsageError when bad)
        addr = ServerAddr(spec.host, spec.stun_port)
        if addr not in out:
            out.append(addr)
    return tuple(out)


def _range(key: str, value: float | None, default: float, lo: float, hi: float) -> float:
    if value is None:
        return float(default)
    if isinstance(value, bool) or not lo <= value <= hi:
        raise UsageError(f"{key} {value} is out of range", f"use {lo:g} .. {hi:g}")
    return float(value)


def parse_metrics(text: str | None) -> tuple[str, int] | None:
    """`HOST:PORT`, `[V6]:PORT`, `PORT` (on localhost), `off`. None: no exporter."""
    if text is None:
        return DEFAULT_METRICS_HOST, DEFAULT_METRICS_PORT
    t = text.strip()
    if t.lower() in ("off", "none", "no", "false", ""):
        return None
    hint = "use --metrics HOST:PORT (e.g. 127.0.0.1:3481), [::1]:3481, a port alone, or off"
    if t.isascii() and t.isdigit():
        host, port_s = DEFAULT_METRICS_HOST, t
    elif t.startswith("["):
        host, sep, rest = t[1:].partition("]")
        if not sep or not rest.startswith(":") or not is_ip(host):
            raise UsageError(f"bad --metrics {text!r}", hint)
        port_s = rest[1:]
    else:
        host, sep, port_s = t.rpartition(":")
        if not sep or not host or ":" in host or any(c.isspace() or c in "/@" for c in host):
            raise UsageError(f"bad --metrics {text!r}", hint)
    # isascii: str.isdigit() alone also accepts digits such as '²' that int() refuses
    if not (port_s.isascii() and port_s.isdigit()) or not 1 <= int(port_s) <= 65535:
        raise UsageError(f"bad port in --metrics {text!r}", hint)
    return host, int(port_s)


def parse_webhook(text: str | None) -> str | None:
    if text is None or not text.strip():
        return None
    url = text.strip()
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"bad --webhook {text!r}", "use an http:// or https:// URL")
    return url


def _command(text: str | None) -> str | None:
    if text is None or not text.strip():
        return None
    if "\0" in text:
        raise UsageError("--on-change contains a NUL byte")
    return text.strip()
