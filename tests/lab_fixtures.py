"""pytest fixtures for the lab (imported by tests/conftest.py).

    def test_something(lab):
        net = lab("cgnat")                      # a running lab, shared across the session, conntrack flushed
        net.exec("client", ["ip", "route"])

    def test_mutating(private_lab):
        net = private_lab("port-restricted")    # a lab of your own, torn down after the test

    def test_pinhole(ipv6_home_router):
        gw = ipv6_home_router("cgnat-ipv6")     # shared IPv6 lab + miniupnpd, reset; default ipv6-firewalled
        # ... open a pinhole for gw.client_ip6 port 44000 via gw.pcp_server or gw.upnp_location6, then:
        assert gw.inbound(44000, "udp")         # an unsolicited datagram from the internet reaches the client

`lab(name, home_router=False, delay_ms=0.0, loss=0.0, filtered_ports=None, udp_timeout_s=None)` reuses one
running lab per (scenario, options) for the whole session: tests share scenarios instead of rebuilding them.
Before it is handed out, port forwards, NAT bindings (conntrack) and learned cone state are reset, and on a home-router
lab miniupnpd is (re)started if a previous test stopped it or changed its protocols. Labs are torn down at
session end (and on Ctrl-C / SIGTERM by nodereach.lab itself).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from nodereach.lab import Lab
from nodereach.lab import addresses as A
from nodereach.lab import probe as P
from nodereach.lab.daemons import MINIUPNPD_HTTP_PORT, NATPMP_PORT
from nodereach.lab.rules import MINIUPNPD_CHAIN6, TABLE6

__all__ = ["Ipv6HomeRouter", "LabPool", "ipv6_home_router", "lab", "lab_pool", "private_lab"]
IPV6_HOME_ROUTER_SCENARIOS = ("ipv6-firewalled", "cgnat-ipv6", "ipv6-open")


def _require_lab() -> None:
    """tests/conftest.py's require_lab (pytest imports it as `conftest` in the default import mode)."""
    try:
        from conftest import require_lab
    except ImportError:  # another import mode: the same rule, inline
        from nodereach.errors import NodereachError
        from nodereach.lab import check_environment

        try:
            check_environment()
        except NodereachError as exc:
            if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                pytest.fail(f"CI must run every lab test, but: {exc}")
            pytest.skip(str(exc))
        return
    require_lab()


class LabPool:
    """One running lab per (scenario, options); reset before each hand-out."""

    def __init__(self) -> None:
        self.labs: dict[tuple[Any, ...], Lab] = {}
        self.builds = 0

    @staticmethod
    def key(scenario: str, home_router: bool, delay_ms: float, loss: float,
            filtered_ports: Sequence[int] | None, udp_timeout_s: int | None) -> tuple[Any, ...]:
        ports = tuple(sorted(filtered_ports)) if filtered_ports is not None else None
        return (scenario, bool(home_router), float(delay_ms), float(loss), ports, udp_timeout_s)

    def get(self, scenario: str, home_router: bool = False, delay_ms: float = 0.0, loss: float = 0.0,
            filtered_ports: Sequence[int] | None = None, udp_timeout_s: int | None = None) -> Lab:
        key = self.key(scenario, home_router, delay_ms, loss, filtered_ports, udp_timeout_s)
        lab = self.labs.get(key)
        if lab is None or not lab.built:
            lab = Lab(scenario, home_router=home_router, delay_ms=delay_ms, loss=loss,
                      filtered_ports=filtered_ports, udp_timeout_s=udp_timeout_s).build()
            self.builds += 1
            self.labs[key] = lab
            return lab
        lab.reset()
        if home_router:
            daemons = lab.daemons
            default = {"upnp": True, "natpmp": True}
            if daemons.miniupnpd is None or daemons.miniupnpd.poll() is not None \
                    or daemons.miniupnpd_opts != default:
                lab.start_miniupnpd()
        return lab

    def close(self) -> None:
        labs, self.labs = list(self.labs.values()), {}
        for lab in labs:
            lab.teardown()


@pytest.fixture(scope="session")
def lab_pool() -> Iterator[LabPool]:
    pool = LabPool()
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def lab(lab_pool: LabPool) -> Callable[..., Lab]:
    """Factory: lab(name, **opts) -> a shared running lab, reset for this test."""

    def get(name: str, **opts: Any) -> Lab:
        _require_lab()
        return lab_pool.get(name, **opts)

    return get


@pytest.fixture
def private_lab() -> Iterator[Callable[..., Lab]]:
    """Factory for labs owned by one test (for tests that renumber, impair or break things)."""
    mine: list[Lab] = []

    def build(name: str, **opts: Any) -> Lab:
        _require_lab()
        new = Lab(name, **opts).build()
        mine.append(new)
        return new

    try:
        yield build
    finally:
        for one in mine:
            one.teardown()


@dataclass(frozen=True)
class Ipv6HomeRouter:
    """An IPv6 scenario's home router running miniupnpd (UPnP IGD with WANIPv6FirewallControl:1, PCP), with
    what a pinhole test needs. The client is `lab`'s host "client"; run your code there with
    `lab.call_in("client", ...)`, `lab.run_async("client", ...)` or `lab.exec("client", [...])`."""

    lab: Lab
    client_ip6: str
    """The client's IPv6 address: a pinhole's internal client (miniupnpd compares it as text: canonical form)."""
    client_ip4: str
    gateway_ip6: str
    """The router's global LAN address: PCP server and UPnP over IPv6."""
    gateway_ip4: str
    pcp_server: tuple[str, int]
    """(gateway_ip6, 5351): PCP MAP requests for IPv6 go here (IPv4 PCP/NAT-PMP: (gateway_ip4, 5351))."""
    upnp_location6: str
    """http://[gateway_ip6]:5000/rootDesc.xml: the IGD description over IPv6 (SOAP calls then come from the
    client's IPv6 address, as AddPinhole requires)."""
    upnp_location: str
    """The same description over IPv4."""
    peer: str = "peer"
    """An internet host for inbound tests (IPv6 address A.PEER_IP6)."""

    def inbound(self, port: int, proto: str = "udp", *, timeout: float = 0.5) -> bool:
        """Does an unsolicited `proto` packet from the internet (`peer`) to client_ip6:`port` reach the client?
        The port must be free in the client (this binds a listener there for the test). When your own code
        holds the port, send from the peer yourself: `with P.udp(gw.lab, "peer", A.PEER_IP6) as s:
        P.delivered(s, your_socket, (gw.client_ip6, port))`."""
        return P.inbound_reaches(self.lab, "client", (self.client_ip6, port), proto, src_host=self.peer,
                                 timeout=timeout)

    def pinhole_rules(self) -> list[str]:
        """miniupnpd's pinhole rules as nft prints them (one line per pinhole; empty: none)."""
        out = self.lab.exec("router", ["nft", "list", "chain", "inet", TABLE6, MINIUPNPD_CHAIN6]).stdout
        return [line.strip() for line in out.splitlines() if line.strip().endswith(("accept", "drop"))]


@pytest.fixture
def ipv6_home_router(lab_pool: LabPool) -> Callable[..., Ipv6HomeRouter]:
    """Factory: ipv6_home_router(scenario="ipv6-firewalled") -> a shared running IPv6 lab with miniupnpd on its
    router (reset like `lab`: no static pinholes, no conntrack state; miniupnpd's own pinholes are yours to
    delete). Scenarios: ipv6-firewalled (public IPv4 NAT: IPv4 mappings work too), cgnat-ipv6 (IPv4 mappings
    refused, IPv6 pinholes work; ~10 s to build: miniupnpd's STUN check), ipv6-open (no firewall)."""

    def get(scenario: str = "ipv6-firewalled", **opts: Any) -> Ipv6HomeRouter:
        if scenario not in IPV6_HOME_ROUTER_SCENARIOS:
            raise ValueError(f"{scenario!r} has no IPv6 home router; choose one of {IPV6_HOME_ROUTER_SCENARIOS}")
        _require_lab()
        net = lab_pool.get(scenario, home_router=True, **opts)
        return Ipv6HomeRouter(
            lab=net, client_ip6=A.CLIENT_IP6, client_ip4=A.CLIENT_IP, gateway_ip6=A.HOME_LAN_GW6,
            gateway_ip4=A.HOME_LAN_GW, pcp_server=(A.HOME_LAN_GW6, NATPMP_PORT),
            upnp_location6=f"http://[{A.HOME_LAN_GW6}]:{MINIUPNPD_HTTP_PORT}/rootDesc.xml",
            upnp_location=f"http://{A.HOME_LAN_GW}:{MINIUPNPD_HTTP_PORT}/rootDesc.xml")

    return get
