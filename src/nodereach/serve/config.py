"""`nodereach serve` configuration: a TOML file, then command-line flags on top (flags win).

    addresses = ["203.0.113.10"]          # primary addresses (IPv4 and/or IPv6)
    alt_address = "203.0.113.11"          # second public IP: full RFC 5780 STUN, probes from a second IP
    stun_port = 3478
    alt_port = 3479
    http_port = 3480
    run_stun = true
    run_dialback = true
    log_json = false
    log_level = "info"
    trusted_proxies = ["10.0.0.5"]        # X-Forwarded-For is believed only from these

    [dialback]                             # probe deadline and abuse limits
    probe_timeout = 2.0
    refused_ports = "0-79,81-442,444-1023"
    address_rate = 1.0                     # probes/s earned back per address ...
    address_burst = 10
    network_rate = 4.0                     # ... and per /24 (IPv6 /56)
    network_burst = 40
    max_ports_per_window = 16
    port_window_s = 600
    max_in_flight = 64
    max_in_flight_per_address = 4
    max_tracked = 100000
    max_connections = 2048
    max_connections_per_address = 32
    head_timeout = 5.0

    [stun]                                 # passed to the STUN server's config (its field names)
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from nodereach import defaults
from nodereach.errors import UsageError
from nodereach.reach.limits import DEFAULT_REFUSED_PORTS, LimitsConfig, parse_port_ranges
from nodereach.reach.service import DialbackConfig

LIMIT_KEYS = {f.name for f in fields(LimitsConfig)} - {"refused_ports"}
DIALBACK_KEYS = {"probe_timeout", "head_timeout", "body_timeout", "max_connections", "max_connections_per_address",
                 "drain_timeout"}
TOP_KEYS = {"addresses", "alt_address", "stun_port", "alt_port", "http_port", "run_stun", "run_dialback",
            "log_json", "log_level", "trusted_proxies", "dialback", "stun"}


@dataclass
class ServeConfig:
    addresses: list[str] = field(default_factory=list)
    alt_address: str | None = None
    stun_port: int = defaults.STUN_PORT
    alt_port: int = defaults.STUN_ALT_PORT
    http_port: int = defaults.HTTP_PORT
    run_stun: bool = True
    run_dialback: bool = True
    log_json: bool = False
    log_level: str = "info"
    trusted_proxies: list[str] = field(default_factory=list)
    dialback: DialbackConfig = field(default_factory=DialbackConfig)
    stun_options: dict[str, Any] = field(default_factory=dict)


def load(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror}") from None
    return data


def build(file_data: dict[str, Any], *, addresses: list[str], alt_address: str | None, stun_port: int | None,
          alt_port: int | None, http_port: int | None, no_stun: bool, no_dialback: bool, log_json: bool,
          trusted_proxies: list[str], refused_ports: str | None = None) -> ServeConfig:
    """Merge file values and flags (flags that were given win) and validate everything once."""
    f = dict(file_data)
    unknown = set(f) - TOP_KEYS
    if unknown:
        raise UsageError(f"unknown key(s) in the config file: {', '.join(sorted(unknown))}",
                         f"known keys: {', '.join(sorted(TOP_KEYS))}")
    cfg = ServeConfig()
    try:
        cfg.addresses = [str(a) for a in (addresses or f.get("addresses", []))]
        cfg.alt_address = alt_address or f.get("alt_address")
        cfg.stun_port = int(stun_port if stun_port is not None else f.get("stun_port", cfg.stun_port))
        cfg.alt_port = int(alt_port if alt_port is not None else f.get("alt_port", cfg.alt_port))
        cfg.http_port = int(http_port if http_port is not None else f.get("http_port", cfg.http_port))
        cfg.run_stun = not no_stun and bool(f.get("run_stun", True))
        cfg.run_dialback = not no_dialback and bool(f.get("run_dialback", True))
        cfg.log_json = log_json or bool(f.get("log_json", False))
        cfg.log_level = str(f.get("log_level", "info")).lower()
        cfg.trusted_proxies = [str(p) for p in (trusted_proxies or f.get("trusted_proxies", []))]
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad configuration value: {exc}") from None
    for a in [*cfg.addresses, *([cfg.alt_address] if cfg.alt_address else [])]:
        try:
            ipaddress.ip_address(a)
        except ValueError:
            raise UsageError(f"{a!r} is not an IP address", "serve binds to literal addresses") from None
    if cfg.alt_address and cfg.alt_address in cfg.addresses:
        raise UsageError("--alt-address must differ from --address", "RFC 5780 needs two distinct IPs")
    if cfg.alt_address and not any(ipaddress.ip_address(a).version == ipaddress.ip_address(cfg.alt_address).version
                                   for a in cfg.addresses):
        raise UsageError("--alt-address needs an --address of the same IP family")
    for name in ("stun_port", "alt_port", "http_port"):
        value = getattr(cfg, name)
        if not 0 <= value <= 65535:
            raise UsageError(f"{name.replace('_', '-')} {value} out of range")
    if cfg.run_stun and cfg.alt_address and cfg.stun_port == cfg.alt_port and cfg.stun_port != 0:
        raise UsageError("--stun-port and --alt-port must differ for RFC 5780")
    if cfg.log_level not in ("debug", "info", "warning", "error"):
        raise UsageError(f"log_level {cfg.log_level!r}: use debug, info, warning or error")
    try:
        from nodereach.reach.limits import parse_networks

        parse_networks(cfg.trusted_proxies)
    except ValueError as exc:
        raise UsageError(f"bad --trusted-proxy: {exc}") from None
    cfg.dialback = _dialback(f.get("dialback", {}), cfg, refused_ports)
    stun = f.get("stun", {})
    if not isinstance(stun, dict):
        raise UsageError("[stun] must be a table")
    cfg.stun_options = dict(stun)
    return cfg


def _dialback(section: Any, cfg: ServeConfig, refused_ports: str | None) -> DialbackConfig:
    if not isinstance(section, dict):
        raise UsageError("[dialback] must be a table")
    unknown = set(section) - LIMIT_KEYS - DIALBACK_KEYS - {"refused_ports"}
    if unknown:
        raise UsageError(f"unknown [dialback] key(s): {', '.join(sorted(unknown))}",
                         f"known: {', '.join(sorted(LIMIT_KEYS | DIALBACK_KEYS | {'refused_ports'}))}")
    spec = refused_ports if refused_ports is not None else str(section.get("refused_ports", DEFAULT_REFUSED_PORTS))
    try:
        refused = parse_port_ranges(spec)
        limits = replace(LimitsConfig(), refused_ports=refused,
                         **{k: type(getattr(LimitsConfig(), k))(v) for k, v in section.items() if k in LIMIT_KEYS})
        extra = {k: type(getattr(DialbackConfig(), k))(v) for k, v in section.items() if k in DIALBACK_KEYS}
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad [dialback] value: {exc}") from None
    return DialbackConfig(alt_address=cfg.alt_address, trusted_proxies=tuple(cfg.trusted_proxies), limits=limits,
                          refused_ports_spec=spec, **extra)
