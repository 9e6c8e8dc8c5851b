"""The lab's scenarios: named topologies with the ground truth their tests prove (docs/lab.md).

A scenario is data only: which hosts exist, which NAT recipe each router runs, which provider filter sits
in the internet core, and what a correct diagnosis must say about it. `Lab` (core.py) builds it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from nodereach.errors import UsageError
from nodereach.lab import addresses as A
from nodereach.net import Family

MappingTruth = Literal["endpoint-independent", "address-dependent", "address-and-port-dependent", "no-nat"]
FilteringTruth = Literal["endpoint-independent", "address-dependent", "address-and-port-dependent", "no-nat"]
NatRecipe = Literal["full-cone", "restricted-cone", "port-restricted", "symmetric"]
Topology = Literal["open", "single", "double"]
Translation6 = Literal["none", "nptv6", "nat66"]
"""What happens to the client's IPv6 source address on the way out (nat66: no scenario builds it yet)."""

INTERNET_HOSTS = ("inet", "server", "peer", "coturn")
DEFAULT_UDP_TIMEOUT_S = 30
"""conntrack's UDP timeout (Linux default, set explicitly in every router): a binding after one exchange."""
DEFAULT_UDP_STREAM_TIMEOUT_S = 120
"""conntrack's UDP stream timeout: a binding that carried traffic both ways for more than 2 s."""


@dataclass(frozen=True)
class Ipv6Truth:
    """The IPv6 half of a scenario's ground truth, as seen from `client` (proven by tests/test_lab_ipv6.py)."""

    client_address: str
    """The client's own IPv6 address (global, or ULA behind NPTv6): what a node binds and might advertise."""
    public_address: str
    """The address the internet sees (= client_address unless translated)."""
    translation: Translation6
    mapping: MappingTruth
    """RFC 4787 mapping for UDP: no-nat without translation; NPTv6 maps 1:1 and keeps ports (EI)."""
    filtering: FilteringTruth
    """RFC 4787 filtering for UDP toward the public address (the home router's IPv6 firewall decides)."""
    firewall: bool
    """The home router runs a stateful IPv6 firewall that drops unsolicited inbound (RFC 6092 CPE)."""
    unsolicited_inbound: bool
    """An unsolicited packet from any internet host to the public address/port reaches the client."""
    hops: tuple[str, ...]
    """Addresses answering hop-limited UDP probes toward the server's first IPv6 address, the server last."""
    description: str
    tcp: str = ""
    pinholes: tuple[str, ...] = ()
    """Protocols that open IPv6 pinholes on the home router (--home-router: upnp = WANIPv6FirewallControl, pcp)."""
    pinholes_work: bool = False
    """A pinhole granted by those protocols carries unsolicited inbound traffic to the client."""

    def as_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["hops"] = list(self.hops)
        doc["pinholes"] = list(self.pinholes)
        return doc


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
    ipv6: Ipv6Truth | None = None
    """The IPv6 truth; None: the client has no IPv6 at all (IPv6 is disabled in its namespace). Every field
    above is the IPv4 truth."""

    @property
    def families(self) -> tuple[Family, ...]:
        """Address families the client has (IPv4 always)."""
        return (4, 6) if self.ipv6 is not None else (4,)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the IPv4 fields at the top level (as before IPv6 came), `ipv6` an object or null."""
        doc = asdict(self)
        doc["filtered_ports"] = list(self.filtered_ports)
        doc["private_hops"] = list(self.private_hops)
        doc["nat_wan_addresses"] = list(self.nat_wan_addresses)
        doc["port_mapping"] = list(self.port_mapping)
        doc["ipv6"] = self.ipv6.as_dict() if self.ipv6 is not None else None
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
    ipv6: Ipv6Truth | None = None
    """The IPv6 setup and its truth; None: IPv6 is disabled in the subscriber's namespaces."""

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

    @property
    def has_ipv6(self) -> bool:
        return self.ipv6 is not None

    @property
    def ipv6_firewall(self) -> bool:
        return self.ipv6 is not None and self.ipv6.firewall

    @property
    def nptv6(self) -> bool:
        return self.ipv6 is not None and self.ipv6.translation == "nptv6"

    def router_wan6(self) -> tuple[str, str]:
        """(router WAN IPv6 address, its gateway) in an IPv6 scenario with a router."""
        if self.topology == "double":
            return A.CGNAT_ROUTER_WAN_IP6, A.ISP_LAN_IP6
        return A.ROUTER_WAN_IP6, A.INET6_SUBSCRIBER_GW

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
        if self.ipv6 is not None:
            truth = replace(truth, ipv6=self.ipv6)
        if home_router:
            truth = replace(truth, port_mapping=("upnp", "natpmp", "pcp"),
                            port_mapping_works=self.topology == "single")
            if truth.ipv6 is not None:
                # miniupnpd's STUN check (IPv4) does not stop IPv6 pinholes: they work behind CGNAT too.
                truth = replace(truth, ipv6=replace(truth.ipv6, pinholes=("upnp", "pcp"), pinholes_work=True))
        return truth


_TCP_CONNTRACK = ("TCP: masquerade + conntrack, i.e. endpoint-independent mapping (port kept when free) and "
                  "only replies from the contacted address and port get in; unsolicited SYNs are dropped.")

_COMMON_SINGLE = dict(nat_present=True, layers=1, cgnat=False, udp_blocked=False, firewall=True, hairpinning=False,
                      client_public_ip=A.ROUTER_WAN_IP, private_hops=(A.HOME_LAN_GW,),
                      nat_wan_addresses=(A.ROUTER_WAN_IP,))


def _single(name: str, summary: str, recipe: NatRecipe, mapping: MappingTruth, filtering: FilteringTruth,
            *, tcp: str = _TCP_CONNTRACK, udp_blocked: bool = False, p2p_filter: bool = False,
            ipv6: Ipv6Truth | None = None, description: str | None = None) -> Scenario:
    base = dict(_COMMON_SINGLE, mapping=mapping, filtering=filtering, description=description or summary, tcp=tcp,
                udp_blocked=udp_blocked, unsolicited_inbound=False)
    return Scenario(name=name, summary=summary, topology="single", recipe=recipe, udp_blocked=udp_blocked,
                    p2p_filter=p2p_filter, truth_base=base, ipv6=ipv6)


_FIREWALL6_TCP = ("TCP over IPv6: no translation; the router's firewall drops unsolicited SYNs, replies to "
                  "outbound connections pass.")
_OPEN6_TCP = "TCP over IPv6: no translation, no filter: unsolicited SYNs reach the client."


def _routed6(*, firewall: bool, via_isp: bool = False) -> Ipv6Truth:
    """Native IPv6 from the delegated prefix, routed by the home router (and the isp), no translation."""
    what = ("the home router's stateful IPv6 firewall drops unsolicited inbound (RFC 6092 CPE)" if firewall
            else "no inbound filter on the home router")
    return Ipv6Truth(
        client_address=A.CLIENT_IP6, public_address=A.CLIENT_IP6, translation="none", mapping="no-nat",
        filtering="address-and-port-dependent" if firewall else "endpoint-independent", firewall=firewall,
        unsolicited_inbound=not firewall,
        hops=(A.HOME_LAN_GW6, *((A.ISP_LAN_IP6,) if via_isp else ()), A.INET6_SUBSCRIBER_GW, A.SERVER_IP6),
        description=f"Native IPv6 ({A.HOME_LAN6_NET} of {A.DELEGATED_PREFIX6}), no translation; {what}.",
        tcp=_FIREWALL6_TCP if firewall else _OPEN6_TCP)


def _nptv6() -> Ipv6Truth:
    return Ipv6Truth(
        client_address=A.NPT_CLIENT_IP6, public_address=A.CLIENT_IP6, translation="nptv6",
        mapping="endpoint-independent", filtering="endpoint-independent", firewall=False, unsolicited_inbound=True,
        hops=(A.NPT_LAN_GW6, A.INET6_SUBSCRIBER_GW, A.SERVER_IP6),
        description=f"ULA home LAN {A.NPT_LAN6_NET} translated 1:1 to {A.HOME_LAN6_NET} by the home router "
                    "(nftables `snat/dnat ip6 prefix to`: NPTv6, interface identifier and ports kept); no "
                    "inbound filter, so the translated address is reachable.",
        tcp="TCP over IPv6: translated 1:1 like UDP (ports kept); no filter: unsolicited SYNs reach the client.")


def _double(name: str, summary: str, net: Literal["private", "cgnat"], *, ipv6: Ipv6Truth | None = None,
            description: str | None = None) -> Scenario:
    wan = A.CGNAT_ROUTER_WAN if net == "cgnat" else A.DOUBLE_NAT_ROUTER_WAN
    isp_lan = A.CGNAT_ISP_LAN if net == "cgnat" else A.DOUBLE_NAT_ISP_LAN
    base = dict(nat_present=True, layers=2, cgnat=net == "cgnat", mapping="endpoint-independent", hairpinning=False,
                filtering="address-and-port-dependent", udp_blocked=False, firewall=True,
                client_public_ip=A.ISP_WAN_IP, description=description or summary, tcp=_TCP_CONNTRACK,
                unsolicited_inbound=False, private_hops=(A.HOME_LAN_GW, isp_lan),
                nat_wan_addresses=(wan, A.ISP_WAN_IP))
    return Scenario(name=name, summary=summary, topology="double", recipe="port-restricted", isp_wan_net=net,
                    truth_base=base, ipv6=ipv6)


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
    # --- dual-stack scenarios: IPv4 as in the scenario named, plus native IPv6 -----------------------------
    _double("cgnat-ipv6", "IPv4 behind CGNAT (as `cgnat`); native IPv6 behind the home router's stateful "
            "firewall (RFC 6092).", "cgnat", ipv6=_routed6(firewall=True, via_isp=True),
            description="Home NAT behind a provider NAT in 100.64.0.0/10 (carrier-grade NAT): two layers."),
    _single("ipv6-firewalled", "Port-restricted home NAT for IPv4; native IPv6 behind the home router's stateful "
            "firewall (RFC 6092).", "port-restricted", "endpoint-independent", "address-and-port-dependent",
            ipv6=_routed6(firewall=True),
            description="Home NAT with EIM and address-and-port-dependent filtering (Linux masquerade)."),
    _single("ipv6-open", "Port-restricted home NAT for IPv4; native IPv6 with no inbound filter.",
            "port-restricted", "endpoint-independent", "address-and-port-dependent", ipv6=_routed6(firewall=False),
            description="Home NAT with EIM and address-and-port-dependent filtering (Linux masquerade)."),
    _single("nptv6", "Port-restricted home NAT for IPv4; IPv6 LAN on a ULA prefix translated 1:1 (NPTv6), no "
            "inbound filter.", "port-restricted", "endpoint-independent", "address-and-port-dependent",
            ipv6=_nptv6(),
            description="Home NAT with EIM and address-and-port-dependent filtering (Linux masquerade)."),
)

SCENARIOS: dict[str, Scenario] = {s.name: s for s in _SCENARIO_LIST}


def get_scenario(name: str) -> Scenario:
    """The scenario called `name`; an unknown name is a UsageError listing the known ones."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise UsageError(f"unknown lab scenario {name!r}",
                         f"choose one of: {', '.join(SCENARIOS)} (see `nodereach lab list`)") from None
