"""What the node advertises versus what peers can reach: the measured public address and each port's public
endpoint. Pure: `Advertised` values (decoded by `nodereach.p2p` from ENRs, enodes, multiaddrs, lnd uris,
Bitcoin local addresses, Syncthing's WAN addresses) and `Observed` facts in, problems with advice out.

Problem codes:
- `advertises-private-address`: for an address family, every address the node advertises is private,
  shared (CGNAT), loopback, link-local, unique-local or unspecified (`0.0.0.0` in an ENR);
- `advertises-no-address`: the node advertises a port but no address (an ENR without `ip`), or nothing at
  all where its peers need it (lnd without `uris`);
- `advertised-address-mismatch`: it advertises a public address, but not the one measured (stale after the
  provider changed it when the measured address was seen before... or simply another host's);
- `advertised-port-mismatch`: the advertised port is not where peers get in: not the port's public endpoint
  (the NAT changed it) or not a port the node listens on.

Advice names the node's own setting, filled in with the measured values. Remedies in the project's order:
tell the node the right address/port explicitly first; letting it discover it (UPnP through the router) last.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from nodereach.net import FAMILIES, Endpoint, Family, PortSpec, address_kind, is_public
from nodereach.p2p.advertised import Advertised

AdvertisedCode = Literal[
    "advertises-private-address", "advertises-no-address", "advertised-address-mismatch", "advertised-port-mismatch",
]


@dataclass(frozen=True, slots=True)
class Observed:
    """What the check measured from outside."""

    public: Mapping[Family, str]
    """The public address per family, as servers see it."""
    endpoints: Mapping[PortSpec, Endpoint] = field(default_factory=dict)
    """A node port's public endpoint where measured (UDP: the NAT's mapping of the node's own port)."""
    listening: tuple[PortSpec, ...] = ()
    """The node's ports that a program listens on (this host)."""
    previous: tuple[str, ...] = ()
    """Public addresses seen before (a watcher's history): an advertised one among them is stale."""


@dataclass(frozen=True, slots=True)
class AdvertisedProblem:
    code: AdvertisedCode
    detail: str
    advertised: Advertised | None = None
    settings: tuple[str, ...] = ()
    """The node's own settings that fix it, filled in (`--nat extip:198.51.100.7`), most direct first."""


def _where(a: Advertised) -> str:
    host = a.address or "(no address)"
    hp = f"[{host}]:{a.port}" if a.address and ":" in a.address and a.port else \
        (f"{host}:{a.port}" if a.port is not None else host)
    return f"{hp}/{a.protocol} ({a.source}{' ' + a.field if a.field else ''})"


def _family(a: Advertised) -> Family | None:
    return a.family if a.host_kind == "ip" else None


def compare(software: str, advertised: Sequence[Advertised], observed: Observed, *,
            expects_address: bool = False) -> list[AdvertisedProblem]:
    """Problems with what `software` advertises. `expects_address`: the software must advertise an address
    for peers to find it (lnd, an ENR), so an empty list is a problem, not the Bitcoin Core normal."""
    problems: list[AdvertisedProblem] = []
    ip_ads = [a for a in advertised if a.host_kind == "ip" and a.address]
    if not advertised:
        if expects_address:
            ip = observed.public.get(4) or observed.public.get(6)
            problems.append(AdvertisedProblem(
                "advertises-no-address", f"{software} advertises no address, so peers cannot find it to connect in",
                None, settings_for(software, ip=ip, port=_first_port(observed))))
        return problems
    for a in advertised:
        if a.host_kind == "none":
            problems.append(AdvertisedProblem(
                "advertises-no-address",
                f"{software} advertises port {a.port}/{a.protocol} without an address ({a.source} {a.field}): peers "
                "use the address they see, which works only if the NAT keeps the port", a,
                settings_for(software, ip=observed.public.get(4), port=a.port, protocol=a.protocol)))
    for fam in FAMILIES:
        mine = [a for a in ip_ads if _family(a) == fam]
        if not mine:
            continue
        public = [a for a in mine if a.address and is_public(a.address)]
        measured = observed.public.get(fam)
        if not public:
            a = mine[0]
            kind = address_kind(a.address or "")
            problems.append(AdvertisedProblem(
                "advertises-private-address",
                f"{software} advertises {_where(a)}, a {kind} address that peers on the internet cannot reach"
                + (f"; its public IPv{fam} address is {measured}" if measured else ""), a,
                settings_for(software, ip=measured, port=a.port, protocol=a.protocol)))
            continue
        if measured is None:
            continue
        if not any(a.address == measured for a in public):
            a = public[0]
            stale = a.address in observed.previous
            problems.append(AdvertisedProblem(
                "advertised-address-mismatch",
                f"{software} advertises {_where(a)}, but its public IPv{fam} address is {measured}"
                + (" (the advertised one is an earlier address of this line: stale since the provider changed it)"
                   if stale else ""), a,
                settings_for(software, ip=measured, port=a.port, protocol=a.protocol)))
            continue
        for a in public:
            if a.address != measured or a.port is None:
                continue
            problem = _port_problem(software, a, observed)
            if problem is not None:
                problems.append(problem)
    return problems


def _first_port(observed: Observed) -> int | None:
    return observed.listening[0].port if observed.listening else None


def _port_problem(software: str, a: Advertised, observed: Observed) -> AdvertisedProblem | None:
    assert a.port is not None
    spec = PortSpec(a.port, a.protocol)
    # The NAT's public endpoint for the node's own port, when measured: it is the port peers must dial.
    for node_port, ep in observed.endpoints.items():
        if node_port.transport == a.protocol and node_port.port == a.port and ep.port != a.port:
            return AdvertisedProblem(
                "advertised-port-mismatch",
                f"{software} advertises {_where(a)}, but the NAT maps that port to {ep}: peers dialling {a.port} "
                f"miss it; forward {a.port}/{a.protocol} on the router, or advertise {ep.port}", a,
                settings_for(software, ip=ep.address, port=ep.port, protocol=a.protocol))
    if any(node_port.transport == a.protocol and ep.port == a.port and node_port in observed.listening
           for node_port, ep in observed.endpoints.items()):
        return None  # the router's external port of a port the node listens on: what peers must dial
    same_transport = [p for p in observed.listening if p.transport == a.protocol]
    if same_transport and spec not in observed.listening:
        listen = same_transport[0]
        return AdvertisedProblem(
            "advertised-port-mismatch",
            f"{software} advertises {_where(a)}, but it listens on {listen}: advertise the port it listens on "
            "(or the router's external port that forwards to it)", a,
            settings_for(software, ip=a.address, port=listen.port, protocol=a.protocol))
    return None


def settings_for(software: str, *, ip: str | None, port: int | None, protocol: str | None = None) -> tuple[str, ...]:
    """The node's own settings that make it advertise `ip` (and `port`), filled in; most direct first.
    Unknown values stay as placeholders (`PUBLIC_IP`, `PORT`)."""
    ip_s = ip or "PUBLIC_IP"
    port_s = str(port) if port else "PORT"
    v6 = ip is not None and ":" in ip
    s = software.lower()
    if s in ("geth", "erigon", "reth"):
        return (f"--nat extip:{ip_s}",)
    if s == "nethermind":
        return (f"--Network.ExternalIp {ip_s}",)
    if s == "besu":
        return (f"--p2p-host={ip_s}",)
    if s == "lighthouse":
        out = [f"--enr-address {ip_s}"]
        if protocol == "tcp":
            out.append(f"--enr-tcp{'6' if v6 else ''}-port {port_s}")
        elif protocol == "udp":
            out += [f"--enr-udp{'6' if v6 else ''}-port {port_s}", f"--enr-quic{'6' if v6 else ''}-port QUIC_PORT"]
        return tuple(out)
    if s == "prysm":
        return (f"--p2p-host-ip={ip_s}",) + ((f"--p2p-{protocol}-port={port_s}",) if protocol else ())
    if s == "teku":
        return (f"--p2p-advertised-ip={ip_s}",) + ((f"--p2p-advertised-port={port_s}",) if port else ())
    if s == "nimbus":
        return (f"--nat:extip:{ip_s}",)
    if s == "lodestar":
        return (f"--enr.ip{'6' if v6 else ''} {ip_s}",) + ((f"--enr.{protocol}{'6' if v6 else ''} {port_s}",)
                                                          if protocol else ())
    if s == "kubo":
        fam = "ip6" if v6 else "ip4"
        return (f"ipfs config --json Addresses.AppendAnnounce '[\"/{fam}/{ip_s}/tcp/{port_s}\", "
                f"\"/{fam}/{ip_s}/udp/{port_s}/quic-v1\"]'",)
    if s == "lnd":
        host = f"[{ip_s}]" if v6 else ip_s
        return (f"externalip={host}:{port_s}  (lnd.conf)",)
    if s == "bitcoin core":
        return (f"externalip={ip_s}  (bitcoin.conf)", "discover=0  (bitcoin.conf: stop advertising other "
                "addresses it finds)")
    if s == "monerod":
        return (f"--p2p-external-port {port_s}",)
    if s == "syncthing":
        host = f"[{ip_s}]" if v6 else ip_s
        return (f"Listen Addresses: default, tcp://{host}:{port_s}",)
    if s == "transmission":
        return (f"peer-port {port_s}  (settings.json)",)
    return ()
