"""`Lab`: build a scenario in network namespaces, run things inside it, always tear it down.

    with Lab("cgnat") as lab:
        lab.exec("client", ["ping", "-c1", "203.0.113.10"])

Teardown runs on exit, on exceptions, on Ctrl-C and on SIGTERM (turned into KeyboardInterrupt once a lab
has been opened), and at interpreter exit for labs left open; a lab whose owner was SIGKILLed is stale and removed by
the next lab (registry.py). Namespaces are `nrl-<6 hex id>-<host>`, so labs never clash.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from nodereach.errors import EnvironmentProblem, UsageError
from nodereach.lab import addresses as A
from nodereach.lab import daemons, netns, registry, rules, topology
from nodereach.lab.netns import LabError
from nodereach.lab.scenarios import (
    DEFAULT_UDP_STREAM_TIMEOUT_S,
    DEFAULT_UDP_TIMEOUT_S,
    GroundTruth,
    Scenario,
    get_scenario,
)
from nodereach.net import Family

T = TypeVar("T")
_LIVE: set[Lab] = set()
_LIVE_LOCK = threading.Lock()


def check_environment() -> None:
    """Raise EnvironmentProblem (one line + hint) when this machine cannot run a lab."""
    if os.geteuid() != 0:
        raise EnvironmentProblem("the lab needs root (network namespaces and nftables)",
                                 "run it as root, e.g. `sudo nodereach lab ...`")
    for binary, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(binary) is None:
            raise EnvironmentProblem(f"`{binary}` is not installed", f"apt-get install {package}")


class Lab:
    """One running scenario. Use as a context manager (or call build()/teardown() yourself)."""

    def __init__(self, scenario: str | Scenario, home_router: bool = False, delay_ms: float = 0.0,
                 loss: float = 0.0, filtered_ports: Sequence[int] | None = None, *,
                 udp_timeout_s: int | None = None, persistent: bool = False) -> None:
        self.scenario = scenario if isinstance(scenario, Scenario) else get_scenario(scenario)
        if home_router and not self.scenario.has_router:
            raise UsageError(f"scenario {self.scenario.name!r} has no home router for --home-router",
                             "use a NAT scenario, e.g. port-restricted")
        if not 0.0 <= loss <= 100.0:
            raise UsageError(f"loss must be a percentage 0-100, got {loss}")
        if not 0.0 <= delay_ms <= 10_000.0:
            raise UsageError(f"delay must be 0-10000 ms, got {delay_ms}")
        ports = tuple(int(p) for p in filtered_ports) if filtered_ports is not None else None
        if ports and any(not 0 < p < 65536 for p in ports):
            raise UsageError(f"filtered ports must be 1-65535, got {ports}")
        self.home_router = home_router
        self.delay_ms = float(delay_ms)
        self.loss = float(loss)
        self.persistent = persistent
        if udp_timeout_s is not None and not 1 <= udp_timeout_s <= 3600:
            raise UsageError(f"udp_timeout_s must be 1-3600, got {udp_timeout_s}")
        if home_router and self.scenario.udp_blocked:
            raise UsageError("udp-blocked has no --home-router variant",
                             "miniupnpd exits when its STUN check (UDP) fails")
        if home_router and self.scenario.nptv6:
            raise UsageError("nptv6 has no --home-router variant",
                             "its IPv6 has no firewall to open; use ipv6-firewalled or cgnat-ipv6")
        self.udp_timeout_s = udp_timeout_s or DEFAULT_UDP_TIMEOUT_S
        self.udp_stream_timeout_s = udp_timeout_s or DEFAULT_UDP_STREAM_TIMEOUT_S
        truth = self.scenario.truth(ports, home_router=home_router, udp_timeout_s=self.udp_timeout_s,
                                    udp_stream_timeout_s=self.udp_stream_timeout_s)
        self.truth: GroundTruth = truth
        self._initial_truth = truth
        self.filtered_ports = self.truth.filtered_ports
        self.id = ""
        self.record: registry.LabRecord | None = None
        self._procs: list[subprocess.Popen[Any]] = []
        self._lock = threading.Lock()
        self._router_wan = self.scenario.router_wan()[0] if self.scenario.has_router else None
        self.daemons = daemons.Daemons(self)
        self.built = False

    # --- lifecycle ----------------------------------------------------------------------------------
    def __enter__(self) -> Lab:
        self.build()
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def build(self) -> Lab:
        if self.record is not None:
            raise LabError(f"lab {self.id} is already built", "tear it down first")
        check_environment()
        registry.remove_stale()
        owner = 0 if self.persistent else os.getpid()
        self.record = registry.claim(registry.LabRecord(
            id="", scenario=self.scenario.name, owner_pid=owner,
            owner_start=netns.pid_start_time(owner) if owner else None, persistent=self.persistent,
            options={"home_router": self.home_router, "delay_ms": self.delay_ms, "loss": self.loss,
                     "filtered_ports": list(self.filtered_ports), "udp_timeout_s": self.udp_timeout_s}),
            hosts=self.hosts)  # the complete record exists before the first namespace does
        self.id = self.record.id
        with _LIVE_LOCK:
            _LIVE.add(self)
        _install_signal_handler()
        try:
            built = topology.build(self.scenario, self.ns, delay_ms=self.delay_ms, loss=self.loss,
                                   filtered_ports=self.filtered_ports, owner_pid=owner,
                                   impair_log=registry.REGISTRY_DIR / f"{self.id}-impair.log",
                                   udp_timeout_s=self.udp_timeout_s, udp_stream_timeout_s=self.udp_stream_timeout_s,
                                   on_spawn=self._track)
            self.subscriber = built.subscriber
            self.built = True
            if self.home_router:
                self.start_miniupnpd()
        except BaseException:
            self.teardown()
            raise
        return self

    def teardown(self) -> None:
        """Kill what the lab spawned, delete its namespaces and its record. Safe to call twice."""
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if self.record is None:
            return
        with self._lock:
            procs, self._procs = self._procs, []
        for proc in procs:
            with contextlib.suppress(OSError):
                proc.terminate()
        netns.kill_pids([p.pid for p in procs], grace=2.0)
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.wait(timeout=0.5)
        registry.remove(self.record)
        self.record = None
        self.built = False
        self.daemons = daemons.Daemons(self)
        self._router_wan = self.scenario.router_wan()[0] if self.scenario.has_router else None
        self.truth = self._initial_truth

    def _track(self, proc: subprocess.Popen[Any]) -> None:
        with self._lock:
            self._procs = [p for p in self._procs if p.poll() is None]
            self._procs.append(proc)
        if self.record is not None:
            self.record.pids = [p.pid for p in self._procs]
            self.record.pid_starts = {str(p.pid): netns.pid_start_time(p.pid) or 0 for p in self._procs}
            self.record.save()

    # --- naming -------------------------------------------------------------------------------------
    @property
    def hosts(self) -> tuple[str, ...]:
        return self.scenario.hosts

    def ns(self, host: str) -> str:
        """The namespace name of `host` (UsageError for a host this scenario does not have)."""
        if host not in self.hosts:
            raise UsageError(f"no host {host!r} in scenario {self.scenario.name!r}",
                             f"hosts: {', '.join(self.hosts)}")
        return f"nrl-{self.id}-{host}"

    @property
    def router_wan_address(self) -> str | None:
        return self._router_wan

    def addresses(self, host: str, family: Family = 4) -> tuple[str, ...]:
        """`host`'s global addresses of `family` (4 or 6) in this scenario, primary first (WAN before LAN for
        routers); () for IPv6 on a host that has none. Link-local addresses are never listed."""
        self.ns(host)
        if family == 6:
            return self._addresses6(host)
        if host in topology.INTERNET_HOST_ADDRS:
            return topology.INTERNET_HOST_ADDRS[host]
        if host == "inet":
            return (A.INET_SUBSCRIBER_GW, A.INET_SERVER_GW)
        if host == "client":
            return (A.OPEN_CLIENT_IP,) if self.scenario.topology == "open" else (A.CLIENT_IP,)
        if host == "router":
            return (self._router_wan or "", A.HOME_LAN_GW)
        return (A.ISP_WAN_IP, self.scenario.router_wan()[1])  # isp: WAN, then LAN (the router's gateway)

    def _addresses6(self, host: str) -> tuple[str, ...]:
        if host in topology.INTERNET_HOST_ADDRS6:
            return topology.INTERNET_HOST_ADDRS6[host]
        if host == "inet":
            return (A.INET6_SUBSCRIBER_GW, A.INET6_SERVER_GW)
        v6 = self.scenario.ipv6
        if v6 is None:
            return ()
        if host == "client":
            return (v6.client_address,)
        if host == "router":
            return (self.scenario.router_wan6()[0], A.NPT_LAN_GW6 if self.scenario.nptv6 else A.HOME_LAN_GW6)
        return (A.ISP_WAN_IP6, A.ISP_LAN_IP6)

    # --- running things inside --------------------------------------------------------------------
    def exec(self, host: str, argv: Sequence[str], timeout: float = 10, check: bool = True,
             **run_kw: Any) -> subprocess.CompletedProcess[str]:
        """Run a command inside `host` and capture its output (text)."""
        full = ["ip", "netns", "exec", self.ns(host), *argv]
        if "stdout" not in run_kw and "stderr" not in run_kw:
            run_kw.setdefault("capture_output", True)
        return subprocess.run(full, timeout=timeout, check=check, text=True, **run_kw)

    def stop_spawned(self, host: str, grace: float = 2.0) -> int:
        """Stop what tests spawned in `host` (never the lab's own coturn and miniupnpd): a shared lab handed to
        the next test may still run a server an earlier test left for reuse. Returns how many were stopped."""
        ns = self.ns(host)
        keep = {id(p) for p in (self.daemons.coturn, self.daemons.miniupnpd) if p is not None}
        with self._lock:
            mine = [p for p in self._procs if id(p) not in keep and p.poll() is None
                    and isinstance(p.args, list) and p.args[:4] == ["ip", "netns", "exec", ns]]
        netns.kill_pids([p.pid for p in mine], grace=grace)
        for proc in mine:
            with contextlib.suppress(Exception):
                proc.wait(timeout=0.5)
        return len(mine)

    def spawn(self, host: str, argv: Sequence[str], **popen_kw: Any) -> subprocess.Popen[Any]:
        """Start a long-running process inside `host`; it is killed at teardown."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns(host), *argv], **popen_kw)
        self._track(proc)
        return proc

    def socket(self, host: str, family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM,
               proto: int = 0) -> socket.socket:
        """A socket created inside `host`'s namespace (it stays there; use it from any thread)."""
        return netns.call_in(self.ns(host), socket.socket, family, type, proto)

    def call_in(self, host: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a synchronous function in a thread inside `host`'s namespace (blocks until it returns)."""
        return netns.call_in(self.ns(host), fn, *args, **kwargs)

    async def run_async(self, host: str, coro_fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run coro_fn(*args) on its own event loop in a thread inside `host` (threads it starts stay there)."""
        name = self.ns(host)
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def body() -> None:
            try:
                netns.setns(name)
                future.set_result(asyncio.run(_as_coro(coro_fn, *args)))
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=body, name=f"netns-async-{host}", daemon=True).start()
        return await asyncio.wrap_future(future)

    # --- router state -----------------------------------------------------------------------------
    def _routers(self) -> list[str]:
        return [h for h in ("router", "isp") if h in self.hosts]

    def flush_conntrack(self) -> None:
        """Forget every NAT binding and firewall state (routers, and the open-firewalled client)."""
        if shutil.which("conntrack") is None:
            raise EnvironmentProblem("`conntrack` is not installed", "apt-get install conntrack")
        hosts = self._routers() + (["client"] if self.scenario.client_firewall else [])
        for host in hosts:
            self.exec(host, ["conntrack", "-F"], check=False)
        learned = rules.flush_learned(self.scenario.recipe or "")
        if learned and "router" in self.hosts:
            netns.nft(self.ns("router"), learned)

    def reset(self) -> None:
        """Back to a freshly built state for the next test: no port forwards or static pinholes, no NAT or
        firewall state."""
        if "router" in self.hosts:
            netns.nft(self.ns("router"), rules.flush_forwards()
                      + (rules.flush_pinholes6() if self.scenario.has_ipv6 else ""))
        self.flush_conntrack()

    def forward(self, port: int, proto: str = "udp", internal_port: int | None = None) -> None:
        """Port forward (DNAT) on the home router: WAN `port`/`proto` -> client:`internal_port`."""
        if proto not in ("udp", "tcp"):
            raise UsageError(f"protocol must be udp or tcp, got {proto!r}")
        if "router" not in self.hosts:
            raise UsageError(f"scenario {self.scenario.name!r} has no home router to forward ports on")
        netns.nft(self.ns("router"), rules.port_forward(port, proto, A.CLIENT_IP, internal_port or port))

    def open_pinhole(self, port: int, proto: str = "udp") -> None:
        """A static IPv6 pinhole on the home router's firewall: inbound `proto` to the client's IPv6 address
        and `port` passes (what an operator adds by hand; `reset()` removes it)."""
        if proto not in ("udp", "tcp"):
            raise UsageError(f"protocol must be udp or tcp, got {proto!r}")
        if not 0 < port < 65536:
            raise UsageError(f"port must be 1-65535, got {port}")
        v6 = self.scenario.ipv6
        if v6 is None or "router" not in self.hosts:
            raise UsageError(f"scenario {self.scenario.name!r} has no IPv6 home router to open a pinhole on",
                             "use an IPv6 scenario, e.g. ipv6-firewalled")
        netns.nft(self.ns("router"), rules.pinhole6(v6.client_address, port, proto))

    def set_router_wan_address(self, new: str) -> None:
        """Renumber the home router's WAN (same subnet and gateway), as a DHCP lease change would."""
        if self._router_wan is None:
            raise UsageError(f"scenario {self.scenario.name!r} has no home router")
        _, gw, prefix = self.scenario.router_wan()
        old = self._router_wan
        netns.ip_batch(self.ns("router"), [f"addr del {old}/{prefix} dev wan", f"addr add {new}/{prefix} dev wan",
                                           f"route replace default via {gw}"])
        self._router_wan = new
        if self.scenario.topology == "single" and (self.delay_ms or self.loss):
            topology.pin_neighbours(self.ns, "router", "wan", new)
        if self.scenario.topology == "single":
            self.truth = dataclasses.replace(self.truth, client_public_ip=new, nat_wan_addresses=(new,))
        else:
            self.truth = dataclasses.replace(self.truth, nat_wan_addresses=(new, *self.truth.nat_wan_addresses[1:]))
        self.exec("router", ["conntrack", "-F"], check=False)

    # --- daemons ----------------------------------------------------------------------------------
    def start_coturn(self, rfc5780: bool = True) -> subprocess.Popen[Any]:
        """coturn `--stun-only` on the coturn host (203.0.113.30, + .31 for RFC 5780); waits until it answers."""
        return self.daemons.start_coturn(rfc5780=rfc5780)

    def stop_coturn(self) -> None:
        self.daemons.stop_coturn()

    def start_miniupnpd(self, upnp: bool = True, natpmp: bool = True, **conf: str | int) -> subprocess.Popen[Any]:
        """miniupnpd on `router` (UPnP IGD, NAT-PMP + PCP); waits until it answers. Extra conf lines as kwargs."""
        return self.daemons.start_miniupnpd(upnp=upnp, natpmp=natpmp, **conf)

    def stop_miniupnpd(self) -> None:
        self.daemons.stop_miniupnpd()

    def restart_miniupnpd(self, upnp: bool | None = None, natpmp: bool | None = None) -> subprocess.Popen[Any]:
        return self.daemons.restart_miniupnpd(upnp=upnp, natpmp=natpmp)

    def __repr__(self) -> str:
        return f"<Lab {self.scenario.name} id={self.id or '-'} home_router={self.home_router}>"


async def _as_coro(coro_fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    return await coro_fn(*args)


def _teardown_live() -> None:
    with _LIVE_LOCK:
        labs = list(_LIVE)
    for lab in labs:
        # A forked child that exits normally must not tear down its parent's labs.
        if not lab.persistent and lab.record is not None and lab.record.owner_pid == os.getpid():
            with contextlib.suppress(Exception):
                lab.teardown()


atexit.register(_teardown_live)
_handler_installed = False


def _install_signal_handler() -> None:
    """SIGTERM -> KeyboardInterrupt on the main thread, so `with` blocks, pytest fixtures and atexit tear
    labs down (pytest reports a SystemExit raised inside a test as a failure and carries on)."""
    global _handler_installed
    if _handler_installed or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        def on_term(signum: int, frame: object) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(signal.SIGTERM, on_term)
    _handler_installed = True
