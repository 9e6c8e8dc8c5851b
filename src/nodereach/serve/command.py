"""`nodereach serve`: STUN (RFC 5780 with --alt-address), dial-back API + web page, /metrics, /healthz.

Dual-stack: with no --address every part listens on 0.0.0.0 and on :: (IPv6-only sockets next to IPv4 ones,
so a request's family is its socket's); each family may have its own primary and second address. One
process, any combination. SIGTERM/SIGINT drain: listeners close, probes in flight finish and are answered,
then everything stops (bounded by the drain timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import inspect
import logging
import signal
import socket
from pathlib import Path
from typing import Any

from nodereach import __version__
from nodereach.errors import EnvironmentProblem, NodereachError
from nodereach.net import family_of, socket_family
from nodereach.reach.metrics import Metrics, StatsCollector
from nodereach.reach.service import FAMILY_MISSING, DialbackService
from nodereach.serve import config as config_mod
from nodereach.serve import logs

log = logging.getLogger("nodereach.serve")


def run_serve(*, addresses: list[str], alt_addresses: list[str], config: Path | None, stun_port: int | None,
              alt_port: int | None, http_port: int | None, no_stun: bool, no_dialback: bool, log_json: bool,
              trusted_proxies: list[str], refused_ports: str | None = None) -> None:
    cfg = config_mod.build(config_mod.load(config), addresses=addresses, alt_addresses=alt_addresses,
                           stun_port=stun_port, alt_port=alt_port, http_port=http_port, no_stun=no_stun,
                           no_dialback=no_dialback, log_json=log_json, trusted_proxies=trusted_proxies,
                           refused_ports=refused_ports)
    logs.setup(cfg.log_json, cfg.log_level)
    runner_kwargs: dict[str, Any] = {}
    try:
        import uvloop

        runner_kwargs["loop_factory"] = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - the fast extra is optional
        pass
    with asyncio.Runner(**runner_kwargs) as runner:
        runner.run(serve(cfg))
    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _check_sources(cfg: config_mod.ServeConfig) -> None:
    """Each second address must be the host's own: dial-back probes bind to it. Said once at start, not as an
    `error` in every probe's answer."""
    if not cfg.run_dialback:
        return
    for alt in cfg.alt_addresses:
        with socket.socket(socket_family(family_of(alt)), socket.SOCK_STREAM) as sock:
            try:
                sock.bind((alt, 0))
            except OSError as exc:
                raise EnvironmentProblem(f"dial-back probes cannot leave from --alt-address {alt}: {exc.strerror}",
                                         "is the address configured on this host? (ip addr show)") from None


def _already_stopping() -> None:
    log.info("already stopping", extra={"event": "signal"})


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    elif not isinstance(value, dict) and hasattr(value, "__dict__"):
        value = {k: v for k, v in vars(value).items() if not k.startswith("_")}
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}_{k}" if prefix else str(k), v, out)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        out["".join(c if c.isalnum() or c == "_" else "_" for c in prefix)] = value


class StunGroup:
    """One STUN server per primary address (IPv4 and IPv6; by default 0.0.0.0 and ::); each family's second
    address pairs with that family's primary (RFC 5780 over that family)."""

    def __init__(self, cfg: config_mod.ServeConfig) -> None:
        self.cfg = cfg
        self.servers: list[Any] = []
        self.endpoints: list[dict[str, Any]] = []

    async def start(self) -> None:
        try:
            from nodereach.stun.errors import StunError
            from nodereach.stun.server import StunServer, StunServerConfig
        except ImportError as exc:
            raise EnvironmentProblem(f"the STUN server is not available in this build ({exc})",
                                     "run with --no-stun") from None
        known = {p for p in inspect.signature(StunServerConfig).parameters}
        unknown = set(self.cfg.stun_options) - known
        if unknown:
            raise NodereachError(f"unknown [stun] option(s): {', '.join(sorted(unknown))}",
                                 f"known: {', '.join(sorted(known))}")
        for address in self.cfg.listen:
            family = family_of(address)
            alt = self.cfg.alt_for(family)
            kwargs: dict[str, Any] = {"address": address, "port": self.cfg.stun_port}
            if alt:
                kwargs.update(alt_address=alt, alt_port=self.cfg.alt_port)
            elif "alt_port" in known:
                kwargs["alt_port"] = self.cfg.alt_port
            kwargs.update(self.cfg.stun_options)
            server = StunServer(StunServerConfig(**kwargs))
            try:
                await server.start()
            except StunError as exc:
                cause = exc.__cause__
                if self.cfg.addresses or not isinstance(cause, OSError) or cause.errno not in FAMILY_MISSING:
                    raise
                log.warning("IPv%d not available: no STUN over it", family, extra={"event": "family-missing",
                                                                                  "error": str(cause)})
                continue
            self.servers.append(server)
            primary = server.addresses["primary"]
            self.endpoints.append({"family": family, "address": address, "port": primary[1], "alt_address": alt,
                                   "alt_port": server.addresses["alt_port"][1] if alt else None,
                                   "rfc5780": bool(alt)})

    def stats(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for server in self.servers:
            per: dict[str, float] = {}
            _flatten("", getattr(server, "stats", {}), per)
            for k, v in per.items():
                out[f"{k}_total"] = out.get(f"{k}_total", 0) + v
        return out

    async def close(self) -> None:
        for server in self.servers:
            try:
                result = server.close()
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # shutting down: report, keep closing the others
                log.warning("stun close failed", extra={"error": str(exc)})
        self.servers.clear()


async def serve(cfg: config_mod.ServeConfig, *, ready: asyncio.Event | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or `stop` is set); then drain and close."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests)
            loop.add_signal_handler(sig, stop.set)
    metrics = Metrics()
    stun = StunGroup(cfg)
    info: dict[str, Any] = {"stun": None}
    service = DialbackService(dataclasses.replace(cfg.dialback, probes=cfg.run_dialback, web=cfg.run_dialback),
                              metrics, info)
    try:
        _check_sources(cfg)
        if cfg.run_stun:
            await stun.start()
            metrics.add_collector(StatsCollector("nodereach_stun", stun.stats))
            info["stun"] = {"endpoints": stun.endpoints, "rfc5780": any(e["rfc5780"] for e in stun.endpoints)}
        bound = await service.start(cfg.addresses, cfg.http_port)
        info["families"] = sorted({family_of(h) for h, _ in bound} | {e["family"] for e in stun.endpoints})
    except OSError as exc:
        await stun.close()
        hint = "another process holds the port (is a second nodereach serve running?)" \
            if exc.errno == errno.EADDRINUSE else "is the address configured on this host?" \
            if exc.errno == errno.EADDRNOTAVAIL else None
        raise EnvironmentProblem(f"cannot listen: {exc.strerror or exc}", hint) from None
    except NodereachError:
        await stun.close()
        raise
    except Exception as exc:  # a component failed to start: one line for the user, details in the log
        log.debug("start failed", exc_info=True)
        await stun.close()
        await service.close()
        raise NodereachError(f"serve failed to start: {type(exc).__name__}: {exc}",
                             "run with log_level = \"debug\" in the config for details") from None
    log.info("serving", extra={"event": "start", "version": __version__,
                               "http": [f"{h}:{p}" for h, p in bound], "dialback": cfg.run_dialback,
                               "stun": stun.endpoints})
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("draining", extra={"event": "drain", "probes_in_flight": service.limiter.in_flight})
        await service.drain()
        await stun.close()
        await service.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # A second SIGTERM while stopping must not kill the process mid-answer: ignore it from now on.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, _already_stopping)
        log.info("stopped", extra={"event": "stop"})
