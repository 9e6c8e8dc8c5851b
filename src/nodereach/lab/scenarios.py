"""The lab's scenarios: named topologies with the ground truth their tests prove (docs/lab.md).

A scenario is data only: which hosts exist, which NAT recipe each router runs, which provider filter sits
in the internet core, and what a correct diagnosis must say about it. `Lab` (core.py) builds it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from nodereach.errors import UsageError
from nodereach.lab import addresses as A

MappingTruth = Literal["endpoint-independent", "address-dependent", "address-and-port-dependent", "no-nat"]
FilteringTruth = Literal["endpoint-independent", "address-dependent", "address-and-port-dependent", "no-nat"]
NatRecipe = Literal["full-cone", "restricted-cone", "port-restricted", "symmetric"]
Topology = Literal["open", "single", "double"]

INTERNET_HOSTS = ("inet", "server", "peer", "coturn")
DEFAULT_UDP_TIMEOUT_S = 30
"""conntrack's UDP timeout (Linux default, set explicitly in every router): a binding after one exchange."""
DEFAULT_UDP_STREAM_TIMEOUT_S = 120
"""conntrack's UDP stream timeout: a binding that carried traffic both ways for more than 2 s."""


@dataclass(frozen=True)
class GroundTruth:
    """What a correct diagnosis says about a scenario, as seen from `client`. Proven by tests/test_lab_*.py."""

    nat_present: bool
    layers: int
    """NAT layers between the client and the internet (0, 1 or 2)."""
    cgnat: bool
    mapping: MappingTruth
    """RFC 4787 mapping behaviour for UDP of the whole path (the outermost NAT decides for two layers)."""
    filtering: FilteringTruth
    """RFC 4787 filtering behaviour for UDP of the whole path (with no NAT: what the host's firewall does)."""
    udp_blocked: bool
    filtered_ports: tuple[int, ...]
    """Ports the provider drops in both directions (TCP and UDP); empty when there is no such filter."""
    client_public_ip: str
    """The address the internet sees for the client."""
    description: str
    firewall: bool = False
    """A stateful firewall drops unsolicited inbound (open-firewalled, and every NAT router for TCP)."""
    unsolicited_inbound: bool = False
    """An unsolicited packet from any internet host to the client's public address/port reaches it."""
    private_hops: tuple[str, ...] = ()
    """Addresses answering TTL-limited probes before the public internet (router LAN, then private WANs)."""
    nat_wan_addresses: tuple[str, ...] = ()
    """WAN address of each NAT layer, inside out (the last one is the public address)."""
    tcp: str = ""
    """What TCP does where the UDP recipe differs (documented per scenario)."""
    hairpinning: bool | None = None
    """Does a packet from the client to its own public address/port come back in? (None: no NAT)"""
    binding_lifetime_s: float | None = None
    """UDP NAT binding lifetime after one exchange (conntrack `udp` timeout); None without NAT."""
    binding_lifetime_stream_s: float | None = None
    """UDP NAT binding lifetime once a flow carried traffic both ways for > 2 s (conntrack `stream`)."""
    port_mapping: tuple[str, ...] = ()
    """Port-mapping protocols the home router serves (--home-router: upnp, natpmp, pcp)."""
    port_mapping_works: bool = False
    """Mappings are granted and carry inbound traffic (False behind a second NAT: miniupnpd refuses)."""

    def as_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["filtered_ports"] = list(self.filtered_ports)
        doc["private_hops"] = list(self.private_hops)
        doc["nat_wan_addresses"] = list(self.nat_wan_addresses)
        doc["port_mapping"] = list(self.port_mapping)
        return doc


@dataclass(frozen=True)
class Scenario:
    """A named topology. `filtered_ports` is the default; `Lab(..., filtered_ports=...)` overrides it."""

    name: str
    summary: str
    topology: Topology
    recipe: NatRecipe | None = None
    """The home router's NAT recipe (`router`); None for `open*`."""
    isp_wan_net: Literal["private", "cgnat"] | None = None
    client_firewall: bool = False
    udp_blocked: bool = False
    p2p_filter: bool = False
    truth_base: dict[str, Any] = field(default_factory=dict)

    @property
    def hosts(self) -> tuple[str, ...]:
        if self.topology == "open":
            return (*INTERNET_HOSTS, "client")
        if self.topology == "single":
            return (*INTERNET_HOSTS, "router", "client")
        return (*INTERNET_HOSTS, "isp", "router", "client")

    @property
    def has_router(self) -> bool:
        return self.topology != "open"

    def router_wan(self) -> tuple[str, str, int]:
        """(router WAN address, its gateway, prefix length)."""
        if self.topology == "single":
            return A.ROUTER_WAN_IP, A.INET_SUBSCRIBER_GW, 24
        if self.isp_wan_net == "cgnat":
            return A.CGNAT_ROUTER_WAN, A.CGNAT_ISP_LAN, 24
        return A.DOUBLE_NAT_ROUTER_WAN, A.DOUBLE_NAT_ISP_LAN, 24

    def truth(self, filtered_ports: tuple[int, ...] | None = None, *, home_router: bool = False,
              udp_timeout_s: int = DEFAULT_UDP_TIMEOUT_S,
              udp_stream_timeout_s: int = DEFAULT_UDP_STREAM_TIMEOUT_S) -> GroundTruth:
        """The ground truth of this scenario built with these options (what `Lab(...).truth` says)."""
        ports = tuple(filtered_ports if filtered_ports is not None else A.DEFAULT_FILTERED_PORTS)
        truth = GroundTruth(**self.truth_base, filtered_ports=ports if self.p2p_filter else ())
        if truth.nat_present:
            truth = replace(truth, binding_lifetime_s=float(udp_timeout_s),
                            binding_lifetime_stream_s=float(udp_stream_timeout_s))
        if home_router:
            truth = replace(truth, port_mapping=("upnp", "natpmp", "pcp"),
                            port_mapping_works=self.topology == "single")
        return truth


_TCP_CONNTRACK = ("TCP: masquerade + conntrack, i.e. endpoint-independent mapping (port kept when free) and "
                  "only replies from the contacted address and port get in; unsolicited SYNs are dropped.")

_COMMON_SINGLE = dict(nat_present=True, layers=1, cgnat=False, udp_blocked=False, firewall=True, hairpinning=False,
                      client_public_ip=A.ROUTER_WAN_IP, private_hops=(A.HOME_LAN_GW,),
                      nat_wan_addresses=(A.ROUTER_WAN_IP,))


def _single(name: str, summary: str, recipe: NatRecipe, mapping: MappingTruth, filtering: FilteringTruth,
            *, tcp: str = _TCP_CONNTRACK, udp_blocked: bool = False, p2p_filter: bool = False) -> Scenario:
    base = dict(_COMMON_SINGLE, mapping=mapping, filtering=filtering, description=summary, tcp=tcp,
                udp_blocked=udp_blocked, unsolicited_inbound=False)
    return Scenario(name=name, summary=summary, topology="single", recipe=recipe, udp_blocked=udp_blocked,
                    p2p_filter=p2p_filter, truth_base=base)


def _double(name: str, summary: str, net: Literal["private", "cgnat"]) -> Scenario:
    wan = A.CGNAT_ROUTER_WAN if net == "cgnat" else A.DOUBLE_NAT_ROUTER_WAN
    isp_lan = A.CGNAT_ISP_LAN if net == "cgnat" else A.DOUBLE_NAT_ISP_LAN
    base = dict(nat_present=True, layers=2, cgnat=net == "cgnat", mapping="endpoint-independent", hairpinning=False,
                filtering="address-and-port-dependent", udp_blocked=False, firewall=True,
                client_public_ip=A.ISP_WAN_IP, description=summary, tcp=_TCP_CONNTRACK,
                unsolicited_inbound=False, private_hops=(A.HOME_LAN_GW, isp_lan),
                nat_wan_addresses=(wan, A.ISP_WAN_IP))
    return Scenario(name=name, summary=summary, topology="double", recipe="port-restricted", isp_wan_net=net,
                    truth_base=base)


_SCENARIO_LIST: tuple[Scenario, ...] = (
    Scenario(
        name="open", topology="open",
        summary="Public address on the host, no NAT, no firewall: anyone can reach any listening port.",
        truth_base=dict(nat_present=False, layers=0, cgnat=False, mapping="no-nat",
                        filtering="endpoint-independent", udp_blocked=False, client_public_ip=A.OPEN_CLIENT_IP,
                        description="Public address on the host, no NAT, no firewall.", firewall=False,
                        unsolicited_inbound=True, tcp="TCP: no filtering; unsolicited SYNs reach the host.")),
    Scenario(
        name="open-firewalled", topology="open", client_firewall=True,
        summary="Public address on the host behind a stateful host firewall that drops unsolicited inbound.",
        truth_base=dict(nat_present=False, layers=0, cgnat=False, mapping="no-nat",
                        filtering="address-and-port-dependent", udp_blocked=False,
                        client_public_ip=A.OPEN_CLIENT_IP, firewall=True, unsolicited_inbound=False,
                        description="Public address, stateful host firewall (nft input: established/related "
                                    "and lo only).",
                        tcp="TCP: unsolicited SYNs dropped; replies to outbound connections pass.")),
    _single("full-cone", "Home NAT with endpoint-independent mapping and filtering (full cone) for UDP.",
            "full-cone", "endpoint-independent", "endpoint-independent",
            tcp="TCP: plain masquerade (EIM, port-restricted); the full-cone map only covers UDP."),
    _single("restricted-cone", "Home NAT with EIM and address-dependent filtering (restricted cone) for UDP.",
            "restricted-cone", "endpoint-independent", "address-dependent",
            tcp="TCP: plain masquerade (EIM, port-restricted); the restricted-cone set only covers UDP."),
    _single("port-restricted", "Home NAT with EIM and address-and-port-dependent filtering (Linux masquerade).",
            "port-restricted", "endpoint-independent", "address-and-port-dependent"),
    _single("symmetric", "Home NAT with address-and-port-dependent mapping: a random port per destination.",
            "symmetric", "address-and-port-dependent", "address-and-port-dependent",
            tcp="TCP: masquerade fully-random as well: a random external port per connection."),
    _double("double-nat", "Home NAT behind a second private NAT (10.0.0.0/24): two layers, no CGNAT.", "private"),
    _double("cgnat", "Home NAT behind a provider NAT in 100.64.0.0/10 (carrier-grade NAT): two layers.", "cgnat"),
    _single("udp-blocked", "Port-restricted home NAT; the provider drops all UDP to and from the subscriber.",
            "port-restricted", "endpoint-independent", "address-and-port-dependent", udp_blocked=True,
            tcp="TCP: passes (masquerade, port-restricted); only UDP is dropped by the provider."),
    _single("p2p-filtered", "Port-restricted home NAT; the provider drops TCP and UDP to/from P2P ports.",
            "port-restricted", "endpoint-independent", "address-and-port-dependent", p2p_filter=True,
            tcp="TCP: masquerade; segments to or from a filtered port are dropped in both directions."),
)

SCENARIOS: dict[str, Scenario] = {s.name: s for s in _SCENARIO_LIST}


def get_scenario(name: str) -> Scenario:
    """The scenario called `name`; an unknown name is a UsageError listing the known ones."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise UsageError(f"unknown lab scenario {name!r}",
                         f"choose one of: {', '.join(SCENARIOS)} (see `nodereach lab list`)") from None
