"""`nodereach serve`: STUN (RFC 5780 with --alt-address), dial-back API + web page, /metrics, /healthz.

One process, any combination. SIGTERM/SIGINT drain: listeners close, probes in flight finish and are answered,
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
from pathlib import Path
from typing import Any

from nodereach import __version__
from nodereach.errors import EnvironmentProblem, NodereachError
from nodereach.net import family_of
from nodereach.reach.metrics import Metrics, StatsCollector
from nodereach.reach.service import DialbackService
from nodereach.serve import config as config_mod
from nodereach.serve import logs

log = logging.getLogger("nodereach.serve")


def run_serve(*, addresses: list[str], alt_address: str | None, config: Path | None, stun_port: int | None,
              alt_port: int | None, http_port: int | None, no_stun: bool, no_dialback: bool, log_json: bool,
              trusted_proxies: list[str], refused_ports: str | None = None) -> None:
    cfg = config_mod.build(config_mod.load(config), addresses=addresses, alt_address=alt_address,
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
    """One STUN server per primary address (IPv4 and IPv6); the alt address pairs with its own family."""

    def __init__(self, cfg: config_mod.ServeConfig) -> None:
        self.cfg = cfg
        self.servers: list[Any] = []
        self.endpoints: list[dict[str, Any]] = []

    async def start(self) -> None:
        try:
            from nodereach.stun.server import StunServer, StunServerConfig
        except ImportError as exc:
            raise EnvironmentProblem(f"the STUN server is not available in this build ({exc})",
                                     "run with --no-stun") from None
        known = {p for p in inspect.signature(StunServerConfig).parameters}
        unknown = set(self.cfg.stun_options) - known
        if unknown:
            raise NodereachError(f"unknown [stun] option(s): {', '.join(sorted(unknown))}",
                                 f"known: {', '.join(sorted(known))}")
        primaries = self.cfg.addresses or ["0.0.0.0"]
        for address in primaries:
            alt = self.cfg.alt_address
            if alt and family_of(alt) != family_of(address):
                alt = None
            kwargs: dict[str, Any] = {"address": address, "port": self.cfg.stun_port}
            if alt:
                kwargs.update(alt_address=alt, alt_port=self.cfg.alt_port)
            elif "alt_port" in known:
                kwargs["alt_port"] = self.cfg.alt_port
            kwargs.update(self.cfg.stun_options)
            server = StunServer(StunServerConfig(**kwargs))
            await server.start()
            self.servers.append(server)
            self.endpoints.append({"address": address, "port": self.cfg.stun_port, "alt_address": alt,
                                   "alt_port": self.cfg.alt_port if alt else None, "rfc5780": bool(alt)})

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
        if cfg.run_stun:
            await stun.start()
            metrics.add_collector(StatsCollector("nodereach_stun", stun.stats))
            info["stun"] = {"endpoints": stun.endpoints, "rfc5780": any(e["rfc5780"] for e in stun.endpoints)}
        bound = await service.start(cfg.addresses, cfg.http_port)
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
