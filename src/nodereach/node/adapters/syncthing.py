"""Syncthing: its REST API (`/rest/system/status`, `/rest/system/connections`, `/rest/system/version`,
`/rest/config/options`), authenticated with the API key (`X-API-Key`).

Upstream doc: https://docs.syncthing.net/dev/rest.html. The key is read from the node's config.xml
(`<gui><apikey>`) when the operator does not pass one.
"""

from __future__ import annotations

import msgspec

from nodereach.net import Family, PortSpec
from nodereach.node.adapters.base import NodeStatus, PortMapping, decode
from nodereach.node.adapters.rpcio import Conn
from nodereach.p2p.addrs import split_host_port
from nodereach.p2p.advertised import Advertised, host_kind
from nodereach.p2p.errors import AddressError

DOC = "https://docs.syncthing.net/dev/rest.html"


class Service(msgspec.Struct, rename="camel"):
    error: str | None = None
    lan_addresses: list[str] | None = None
    wan_addresses: list[str] | None = None


class Status(msgspec.Struct, rename="camel"):
    my_id: str = msgspec.field(name="myID", default="")
    connection_service_status: dict[str, Service] = msgspec.field(default_factory=dict)


class Conn1(msgspec.Struct):
    connected: bool = False
    type: str = ""
    address: str = ""


class Connections(msgspec.Struct):
    connections: dict[str, Conn1] = msgspec.field(default_factory=dict)


class Version(msgspec.Struct):
    version: str = ""


class Options(msgspec.Struct, rename="camel"):
    nat_enabled: bool | None = None
    listen_addresses: list[str] | None = None


def _url_port(url: str) -> PortSpec | None:
    """`tcp://0.0.0.0:22000`, `quic://[::]:22000` -> the port and its transport (QUIC rides on UDP)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.rstrip("46") not in ("tcp", "quic"):
        return None
    try:
        _, port = split_host_port(rest.split("/", 1)[0])
    except AddressError:
        return None
    if port == 0:
        return None
    return PortSpec(port, "tcp" if scheme.startswith("tcp") else "udp")


def status_from(status: Status, conns: Connections | None, version: Version | None,
                options: Options | None) -> NodeStatus:
    listen = tuple(status.connection_service_status)
    ports = tuple(dict.fromkeys(p for url in listen if (p := _url_port(url)) is not None))
    advertised: list[Advertised] = []
    notes: list[str] = []
    for url, svc in status.connection_service_status.items():
        if svc.error:
            notes.append(f"{url}: {svc.error[:200]}")
        for wan in svc.wan_addresses or ():
            scheme, _, rest = wan.partition("://")
            try:
                host, port = split_host_port(rest.split("/", 1)[0])
            except AddressError:
                continue
            if host in ("0.0.0.0", "::"):
                continue  # "listen on all": not an address peers are told
            kind = host_kind(host)
            family: Family | None = (6 if ":" in host else 4) if kind == "ip" else None
            advertised.append(Advertised(host, port, "tcp" if scheme.startswith("tcp") else "udp", "syncthing",
                                         kind, family, scheme.startswith("quic"), wan))
    inbound = outbound = None
    if conns is not None:
        live = [c for c in conns.connections.values() if c.connected]
        inbound = sum(1 for c in live if c.type.endswith("-server"))  # tcp-server / quic-server: they dialled us
        outbound = len(live) - inbound
    mapping = None
    if options is not None and options.nat_enabled is not None:
        mapping = PortMapping(options.nat_enabled, "natEnabled", ports,
                              "Syncthing maps its port with UPnP/NAT-PMP" if options.nat_enabled else "")
    return NodeStatus(kind="syncthing", software="Syncthing", version=version.version if version else None,
                      inbound=inbound, outbound=outbound, listen=listen, advertised=tuple(advertised),
                      p2p_ports=ports, mapping=mapping, notes=tuple(notes),
                      peer_ids=(f"device:{status.my_id}",) if status.my_id else ())


async def read(conn: Conn) -> NodeStatus:
    status = decode(await conn.get_json("/rest/system/status"), Status, "/rest/system/status")
    assert isinstance(status, Status)
    conns = decode(await conn.get_json("/rest/system/connections"), Connections, "/rest/system/connections")
    version = decode(await conn.get_json("/rest/system/version"), Version, "/rest/system/version")
    options = decode(await conn.get_json("/rest/config/options"), Options, "/rest/config/options")
    assert isinstance(conns, Connections) and isinstance(version, Version) and isinstance(options, Options)
    return status_from(status, conns, version, options)
