"""`nodereach serve` configuration: a TOML file, then command-line flags on top (flags win).

    addresses = ["203.0.113.10", "2001:db8:203::10"]      # one primary per family; none: 0.0.0.0 and ::
    alt_addresses = ["203.0.113.11", "2001:db8:203::11"]  # a second IP per family: full RFC 5780 STUN over
                                                          # it, dial-back probes of that family from it
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

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from nodereach import defaults, tomlconfig
from nodereach.errors import UsageError
from nodereach.net import FAMILIES, Family, canonical, family_of, parse_ip, wildcard
from nodereach.reach.limits import DEFAULT_REFUSED_PORTS, LimitsConfig, parse_networks, parse_port_ranges
from nodereach.reach.service import DialbackConfig

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
"""0 lets the kernel choose (tests)."""
Count = Annotated[int, msgspec.Meta(ge=0)]
Rate = Annotated[float, msgspec.Meta(ge=0)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]
LogLevel = Literal["debug", "info", "warning", "error"]

_LIMITS = LimitsConfig()
_DIALBACK = DialbackConfig()


class DialbackTable(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """[dialback]: the probe deadline and the abuse limits (defaults: reach.limits / reach.service)."""

    probe_timeout: Seconds = _DIALBACK.probe_timeout
    refused_ports: str = DEFAULT_REFUSED_PORTS
    address_rate: Rate = _LIMITS.address_rate
    address_burst: Rate = _LIMITS.address_burst
    network_rate: Rate = _LIMITS.network_rate
    network_burst: Rate = _LIMITS.network_burst
    max_ports_per_window: Count = _LIMITS.max_ports_per_window
    port_window_s: Seconds = _LIMITS.port_window_s
    max_in_flight_per_address: Count = _LIMITS.max_in_flight_per_address
    max_in_flight: Count = _LIMITS.max_in_flight
    max_tracked: Count = _LIMITS.max_tracked
    head_timeout: Seconds = _DIALBACK.head_timeout
    body_timeout: Seconds = _DIALBACK.body_timeout
    max_connections: Count = _DIALBACK.max_connections
    max_connections_per_address: Count = _DIALBACK.max_connections_per_address
    drain_timeout: Seconds = _DIALBACK.drain_timeout


LIMIT_KEYS = {f.name for f in fields(LimitsConfig)} - {"refused_ports"}
DIALBACK_KEYS = set(DialbackTable.__struct_fields__) - LIMIT_KEYS - {"refused_ports"}


class ServeFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The config file as written (the module docstring shows every key)."""

    addresses: list[str] = []
    alt_addresses: list[str] = []
    alt_address: str | None = None
    """The one-string key from before dual-stack: one more second address."""
    stun_port: Port = defaults.STUN_PORT
    alt_port: Port = defaults.STUN_ALT_PORT
    http_port: Port = defaults.HTTP_PORT
    run_stun: bool = True
    run_dialback: bool = True
    log_json: bool = False
    log_level: LogLevel = "info"
    trusted_proxies: list[str] = []
    dialback: DialbackTable = DialbackTable()
    stun: dict[str, Any] = {}
    """Passed to the STUN server's config by its field names (checked there: serve/command.py)."""


@dataclass
class ServeConfig:
    addresses: list[str] = field(default_factory=list)
    """Primary addresses, at most one per family (canonical text); empty: every address of both families."""
    alt_addresses: list[str] = field(default_factory=list)
    """Second addresses, at most one per family, each paired with the primary of its family."""
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

    @property
    def listen(self) -> list[str]:
        """The primaries to bind: the given ones, or both families' wildcards (dual-stack by default)."""
        return list(self.addresses) or [wildcard(f) for f in FAMILIES]

    def alt_for(self, family: Family) -> str | None:
        return next((a for a in self.alt_addresses if family_of(a) == family), None)


def load(path: Path | None) -> ServeFile:
    """The file, typed and checked (UsageError naming the file and the key); defaults without a file."""
    return ServeFile() if path is None else tomlconfig.load(path, ServeFile)


def parse(data: dict[str, Any], source: str = "config") -> ServeFile:
    return tomlconfig.convert(data, ServeFile, source)


def build(file: ServeFile, *, addresses: list[str], alt_addresses: list[str], stun_port: int | None,
          alt_port: int | None, http_port: int | None, no_stun: bool, no_dialback: bool, log_json: bool,
          trusted_proxies: list[str], refused_ports: str | None = None) -> ServeConfig:
    """Merge the file and the flags (flags that were given win), then check what spans several keys."""
    if file.alt_address is not None and file.alt_addresses:
        raise UsageError("the config file has both alt_address and alt_addresses", "keep alt_addresses (a list)")
    file_alts = file.alt_addresses or ([file.alt_address] if file.alt_address is not None else [])
    cfg = ServeConfig(
        addresses=_addresses(addresses or file.addresses, "--address"),
        alt_addresses=_addresses(alt_addresses or file_alts, "--alt-address"),
        stun_port=stun_port if stun_port is not None else file.stun_port,
        alt_port=alt_port if alt_port is not None else file.alt_port,
        http_port=http_port if http_port is not None else file.http_port,
        run_stun=file.run_stun and not no_stun,
        run_dialback=file.run_dialback and not no_dialback,
        log_json=log_json or file.log_json,
        log_level=file.log_level,
        trusted_proxies=list(trusted_proxies or file.trusted_proxies),
        stun_options=dict(file.stun),
    )
    for alt in cfg.alt_addresses:
        family = family_of(alt)
        primary = next((a for a in cfg.addresses if family_of(a) == family), None)
        if primary is None:
            raise UsageError(f"--alt-address {alt} needs an --address of the same IP family (IPv{family})",
                             "RFC 5780 pairs each second address with the primary address of its family")
        if alt == primary:
            raise UsageError("--alt-address must differ from --address", "RFC 5780 needs two distinct IPs")
        if parse_ip(primary).is_unspecified or parse_ip(alt).is_unspecified:
            raise UsageError(f"--alt-address needs the host's own addresses, not a wildcard ({primary}, {alt})",
                             "RFC 5780 tells clients both addresses (OTHER-ADDRESS, RESPONSE-ORIGIN)")
    for name in ("stun_port", "alt_port", "http_port"):  # flags (the file's are checked on load)
        value = getattr(cfg, name)
        if not 0 <= value <= 65535:
            raise UsageError(f"{name.replace('_', '-')} {value} out of range", "ports are 0..65535")
    if cfg.run_stun and cfg.alt_addresses and cfg.stun_port == cfg.alt_port and cfg.stun_port != 0:
        raise UsageError("--stun-port and --alt-port must differ for RFC 5780")
    try:
        parse_networks(cfg.trusted_proxies)
    except ValueError as exc:
        raise UsageError(f"bad trusted proxy: {exc}", "use an address or a network, e.g. 10.0.0.0/8") from None
    cfg.dialback = _dialback(file.dialback, cfg, refused_ports)
    return cfg


def _dialback(table: DialbackTable, cfg: ServeConfig, refused_ports: str | None) -> DialbackConfig:
    spec = refused_ports if refused_ports is not None else table.refused_ports
    try:
        refused = parse_port_ranges(spec)
    except ValueError as exc:
        raise UsageError(f"refused ports {spec!r}: {exc}", "use ranges like 0-79,81-442,444-1023") from None
    limits = LimitsConfig(refused_ports=refused, **{k: getattr(table, k) for k in LIMIT_KEYS})
    return DialbackConfig(alt_addresses=tuple(cfg.alt_addresses), trusted_proxies=tuple(cfg.trusted_proxies),
                          limits=limits, refused_ports_spec=spec, **{k: getattr(table, k) for k in DIALBACK_KEYS})


def _addresses(values: list[str], flag: str) -> list[str]:
    """Literal IP addresses in canonical text (RFC 5952), at most one per family."""
    out: list[str] = []
    for value in values:
        try:
            address = canonical(value)
        except ValueError:
            raise UsageError(f"{value!r} is not an IP address", "serve binds to literal addresses") from None
        if parse_ip(value).version == 6 and family_of(address) == 4:
            raise UsageError(f"{value!r} is an IPv4-mapped address", f"give {flag} {address}")
        twin = next((a for a in out if family_of(a) == family_of(address)), None)
        if twin is not None:
            raise UsageError(f"{flag} given twice for IPv{family_of(address)} ({twin}, {address})",
                             f"give one {flag} per IP family")
        out.append(address)
    return out
