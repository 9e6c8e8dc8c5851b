"""IPv6 pinholes without root: the UPnP WANIPv6FirewallControl driver against a fake router on ::1 that
behaves as miniupnpd 2.3.1 was measured to (InternalClient compared as text with the caller's address, 402
for an unknown UniqueID, the same UniqueID for a repeated AddPinhole), plus the keeper, record and CLI
pieces around it. The real router is tested in test_portmap_lab6.py.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from nodereach.errors import UsageError
from nodereach.portmap import state
from nodereach.portmap.base import Slot
from nodereach.portmap.command import parse_family
from nodereach.portmap.errors import MalformedMessage, NotOffered, PortmapError
from nodereach.portmap.gateway import Gateway
from nodereach.portmap.keeper import PortMapper
from nodereach.portmap.multicast import from_gateway, interface_of
from nodereach.portmap.ssdp_codec import Found
from nodereach.portmap.upnp_pinhole import SERVICE_TYPE, UpnpPinholeClient

SCPD = """<?xml version="1.0"?><scpd xmlns="urn:schemas-upnp-org:service-1-0"><specVersion><major>1</major>
<minor>0</minor></specVersion><actionList>{actions}</actionList><serviceStateTable>{vars}</serviceStateTable></scpd>"""
ACTIONS = {
    "GetFirewallStatus": [("FirewallEnabled", "out", "FirewallEnabled"),
                          ("InboundPinholeAllowed", "out", "InboundPinholeAllowed")],
    "GetOutboundPinholeTimeout": [("RemoteHost", "in", "A_ARG_TYPE_IPv6Address"),
                                  ("RemotePort", "in", "A_ARG_TYPE_Port"),
                                  ("InternalClient", "in", "A_ARG_TYPE_IPv6Address"),
                                  ("InternalPort", "in", "A_ARG_TYPE_Port"), ("Protocol", "in", "A_ARG_TYPE_Protocol"),
                                  ("OutboundPinholeTimeout", "out", "A_ARG_TYPE_OutboundPinholeTimeout")],
    "AddPinhole": [("RemoteHost", "in", "A_ARG_TYPE_IPv6Address"), ("RemotePort", "in", "A_ARG_TYPE_Port"),
                   ("InternalClient", "in", "A_ARG_TYPE_IPv6Address"), ("InternalPort", "in", "A_ARG_TYPE_Port"),
                   ("Protocol", "in", "A_ARG_TYPE_Protocol"), ("LeaseTime", "in", "A_ARG_TYPE_LeaseTime"),
                   ("UniqueID", "out", "A_ARG_TYPE_UniqueID")],
    "UpdatePinhole": [("UniqueID", "in", "A_ARG_TYPE_UniqueID"), ("NewLeaseTime", "in", "A_ARG_TYPE_LeaseTime")],
    "DeletePinhole": [("UniqueID", "in", "A_ARG_TYPE_UniqueID")],
    "CheckPinholeWorking": [("UniqueID", "in", "A_ARG_TYPE_UniqueID"), ("IsWorking", "out", "A_ARG_TYPE_Boolean")],
}
VARS = {"FirewallEnabled": "boolean", "InboundPinholeAllowed": "boolean", "A_ARG_TYPE_IPv6Address": "string",
        "A_ARG_TYPE_Port": "ui2", "A_ARG_TYPE_Protocol": "ui2", "A_ARG_TYPE_LeaseTime": "ui4",
        "A_ARG_TYPE_UniqueID": "ui2", "A_ARG_TYPE_Boolean": "boolean", "A_ARG_TYPE_OutboundPinholeTimeout": "ui4"}


def scpd() -> str:
    actions = "".join(
        f"<action><name>{name}</name><argumentList>" + "".join(
            f"<argument><name>{a}</name><direction>{d}</direction><relatedStateVariable>{v}</relatedStateVariable>"
            "</argument>" for a, d, v in args) + "</argumentList></action>" for name, args in ACTIONS.items())
    svars = "".join(f'<stateVariable sendEvents="no"><name>{n}</name><dataType>{t}</dataType></stateVariable>'
                    for n, t in VARS.items())
    return SCPD.format(actions=actions, vars=svars)


def description(service: str = SERVICE_TYPE) -> str:
    return f"""<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0"><specVersion><major>1</major>
<minor>1</minor></specVersion><device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:2</deviceType>
<friendlyName>fake</friendlyName><manufacturer>x</manufacturer><modelName>x</modelName><UDN>uuid:fake-igd</UDN>
<serviceList><service><serviceType>{service}</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPv6Firewall1</serviceId><SCPDURL>/scpd.xml</SCPDURL><controlURL>/ctl</controlURL>
<eventSubURL>/evt</eventSubURL></service></serviceList></device></root>"""


class FakeFirewall:
    """WANIPv6FirewallControl:1 as miniupnpd 2.3.1 answers it (measured in the lab)."""

    def __init__(self, *, refuse: int | None = None, unique_id: str | None = None) -> None:
        self.refuse = refuse
        self.unique_id = unique_id
        self.pinholes: dict[int, dict[str, str]] = {}
        self.calls: list[tuple[str, dict[str, str], str]] = []
        self.next_id = 1

    @staticmethod
    def _arg(body: str, name: str) -> str:
        return body.split(f"<{name}>", 1)[1].split(f"</{name}>", 1)[0] if f"<{name}>" in body else ""

    @staticmethod
    def fault(code: int, desc: str) -> web.Response:
        return web.Response(status=500, content_type="text/xml", text=(
            '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><detail><UPnPError>'
            f"<errorCode>{code}</errorCode><errorDescription>{desc}</errorDescription></UPnPError></detail>"
            "</s:Fault></s:Body></s:Envelope>"))

    @staticmethod
    def ok(action: str, args: dict[str, str]) -> web.Response:
        inner = "".join(f"<{k}>{v}</{k}>" for k, v in args.items())
        return web.Response(content_type="text/xml", text=(
            '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
            f'<u:{action}Response xmlns:u="{SERVICE_TYPE}">{inner}</u:{action}Response></s:Body></s:Envelope>'))

    async def ctl(self, req: web.Request) -> web.Response:
        body = await req.text()
        action = req.headers["SOAPAction"].strip('"').split("#")[1]
        names = [a for a, d, _v in ACTIONS[action] if d == "in"]
        args = {n: self._arg(body, n) for n in names}
        self.calls.append((action, args, str(req.remote)))
        if action == "GetFirewallStatus":
            return self.ok(action, {"FirewallEnabled": "1", "InboundPinholeAllowed": "1"})
        if action == "GetOutboundPinholeTimeout":
            return self.fault(501, "ActionFailed")  # miniupnpd 2.3.1 never implements it
        uid = int(args["UniqueID"]) if args.get("UniqueID", "").isdigit() else -1
        if action == "AddPinhole":
            if self.refuse:
                return self.fault(self.refuse, "Refused")
            if args["InternalClient"] != str(req.remote):  # miniupnpd: text comparison with the caller
                return self.fault(606, "Action not authorized")
            if self.unique_id is not None:
                return self.ok(action, {"UniqueID": self.unique_id})
            key = {k: v for k, v in args.items() if k != "LeaseTime"}
            same = next((i for i, p in self.pinholes.items() if {k: v for k, v in p.items() if k != "LeaseTime"}
                         == key), None)
            if same is None:
                same, self.next_id = self.next_id, self.next_id + 1
            self.pinholes[same] = args
            return self.ok(action, {"UniqueID": str(same)})
        if uid not in self.pinholes:
            return self.fault(402, "Invalid Args")  # miniupnpd 2.3.1 for an unknown UniqueID
        if action == "UpdatePinhole":
            self.pinholes[uid]["LeaseTime"] = args["NewLeaseTime"]
            return self.ok(action, {})
        if action == "CheckPinholeWorking":
            return self.fault(709, "NoPacketSent")
        if action == "DeletePinhole":
            del self.pinholes[uid]
            return self.ok(action, {})
        return self.fault(401, "Invalid Action")


def _text(body: str) -> Any:
    async def handler(_req: web.Request) -> web.Response:
        return web.Response(text=body, content_type="text/xml")

    return handler


@pytest.fixture
async def fake_router() -> AsyncIterator[tuple[FakeFirewall, int]]:
    fw = FakeFirewall()
    app = web.Application()
    app.router.add_route("*", "/desc.xml", _text(description()))
    app.router.add_route("*", "/scpd.xml", _text(scpd()))
    app.router.add_route("*", "/ctl", fw.ctl)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "::1", 0)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        pytest.skip("no IPv6 loopback here")
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield fw, port
    finally:
        await runner.cleanup()


def _gateway(local: str = "::1") -> Gateway:
    return Gateway("::1", local, 1, (ipaddress.ip_network("::1/128"),))


async def _client(port: int, local: str = "::1") -> UpnpPinholeClient:
    found = Found(f"http://[::1]:{port}/desc.xml", "::1", "urn:x", boot_id=5)
    return await UpnpPinholeClient.from_location(_gateway(local), found, wait=1.0)


async def test_open_renew_check_close(fake_router: tuple[FakeFirewall, int]) -> None:
    fw, port = fake_router
    client = await _client(port)
    assert await client.firewall_status() == (True, True)
    assert await client.outbound_timeout("udp", 30303) is None  # 501: the router does not say
    slot = Slot("udp", 30303, b"")
    slot.grant = await client.map(slot, 30303, 10**6)
    assert (slot.grant.external_address, slot.grant.external_port, slot.grant.pinhole_id) == ("::1", 30303, 1)
    assert slot.grant.lifetime == 86400  # LeaseTime is 1..86400
    assert fw.calls[-1][1] == {"RemoteHost": "", "RemotePort": "0", "InternalClient": "::1", "InternalPort": "30303",
                               "Protocol": "17", "LeaseTime": "86400"}
    slot.grant = await client.map(slot, 30303, 600)  # renewal: UpdatePinhole on the id we hold
    assert fw.calls[-1][0] == "UpdatePinhole" and fw.pinholes[1]["LeaseTime"] == "600"
    assert (await client.poll([slot])).missing == []  # 709 "no traffic yet" means it is there
    await client.unmap(slot)
    assert fw.pinholes == {}
    await client.unmap(slot)  # already gone: not an error


async def test_lost_pinhole_is_seen_and_opened_again(fake_router: tuple[FakeFirewall, int]) -> None:
    fw, port = fake_router
    client = await _client(port)
    slots = [Slot("udp", 30303, b""), Slot("tcp", 30304, b"")]
    for s in slots:
        s.grant = await client.map(s, s.internal_port, 600)
    fw.pinholes.clear()  # the router rebooted
    poll = await client.poll(slots)
    assert poll.restarted and sorted(poll.missing) == [("tcp", 30304), ("udp", 30303)]
    fw.next_id = 40
    slots[0].grant = await client.map(slots[0], 30303, 600)  # UpdatePinhole -> 402 -> AddPinhole again
    assert [c[0] for c in fw.calls[-2:]] == ["UpdatePinhole", "AddPinhole"]
    assert slots[0].grant.pinhole_id == 40


async def test_internal_client_is_sent_in_canonical_form(fake_router: tuple[FakeFirewall, int]) -> None:
    """miniupnpd compares InternalClient with the caller's address as text: an expanded form gets 606."""
    fw, port = fake_router
    client = await _client(port, local="0:0:0:0:0:0:0:1")
    slot = Slot("tcp", 30303, b"")
    slot.grant = await client.map(slot, 30303, 600)
    assert fw.calls[-1][1]["InternalClient"] == "::1" and fw.calls[-1][1]["Protocol"] == "6"


@pytest.mark.parametrize(("code", "says", "hint"), [
    (606, "not authorized", "port >= 1024"),
    (701, "no room for more pinholes", "remove unused pinholes"),
    (702, "IPv6 firewall is off", "nodereach check"),
    (703, "does not allow inbound pinholes", "router's settings"),
    (705, "does not support UDP pinholes", "by hand"),
    (501, "error 501", "retry later"),
])
async def test_refusals_say_what_and_what_next(fake_router: tuple[FakeFirewall, int], code: int, says: str,
                                              hint: str) -> None:
    fw, port = fake_router
    fw.refuse = code
    client = await _client(port)
    with pytest.raises(PortmapError) as exc:
        await client.map(Slot("udp", 30303, b""), 30303, 600)
    assert says in exc.value.message and "30303/udp" in exc.value.message
    assert exc.value.hint and hint in exc.value.hint


@pytest.mark.parametrize("garbage", ["", "x", "70000", "-1", "1e3", "²"])
async def test_garbage_unique_id_is_an_error(fake_router: tuple[FakeFirewall, int], garbage: str) -> None:
    fw, port = fake_router
    fw.unique_id = garbage
    client = await _client(port)
    with pytest.raises(MalformedMessage, match="UniqueID"):
        await client.map(Slot("udp", 30303, b""), 30303, 600)


async def test_description_over_ipv4_or_without_the_service_is_refused(
        fake_router: tuple[FakeFirewall, int]) -> None:
    _fw, port = fake_router
    v4 = Gateway("127.0.0.1", "127.0.0.1", 1, (ipaddress.ip_network("127.0.0.0/8"),))
    with pytest.raises(NotOffered, match="IPv4 URL"):
        await UpnpPinholeClient.from_location(v4, Found(f"http://127.0.0.1:{port}/desc.xml", "127.0.0.1", "x"),
                                              wait=1.0)


async def test_router_without_ipv6_firewall_control() -> None:
    app = web.Application()
    app.router.add_route("*", "/desc.xml", _text(description("urn:schemas-upnp-org:service:WANIPConnection:2")))
    app.router.add_route("*", "/scpd.xml", _text(scpd()))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "::1", 0)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        pytest.skip("no IPv6 loopback here")
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        with pytest.raises(NotOffered, match="no IPv6 firewall control") as exc:
            await _client(port)
        assert exc.value.hint and "by hand" in exc.value.hint
    finally:
        await runner.cleanup()


async def test_keeper_reports_pinholes_as_ipv6(fake_router: tuple[FakeFirewall, int]) -> None:
    _fw, port = fake_router
    client = await _client(port)
    m = PortMapper([(30303, "udp")], family=6, poll_interval=60)
    eps = await m.start(driver=client)
    assert [(str(e), e.family, e.method) for e in eps] == [("[::1]:30303/udp", 6, "upnp")]
    # ::1 is no global address: said as such (not as "another NAT in front", the IPv4 reason)
    said = [e.message for e in m.log if e.kind == "unreachable"]
    assert m.nat_in_front and said and "not a global IPv6 address" in said[0]
    await m.close()
    assert [e.kind for e in m.log][-1] == "deleted"


async def test_natpmp_cannot_open_pinholes() -> None:
    with pytest.raises(PortmapError, match="NAT-PMP cannot open IPv6 pinholes") as exc:
        await PortMapper([(30303, "udp")], family=6, method="natpmp").start()
    assert exc.value.hint and "--family 4" in exc.value.hint


def test_family_option() -> None:
    assert parse_family(None) is None
    assert parse_family("4") == (4,) and parse_family("IPv6") == (6,) and parse_family("both") == (4, 6)
    with pytest.raises(UsageError, match="4, 6 or both"):
        parse_family("5")


def test_state_records_pinholes_and_reads_old_files(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODEREACH_STATE_DIR", str(tmp_path))
    rec = state.Record("upnp", "2001:db8:1:1::1", "udp", 30303, 30303, "2001:db8:1:1::10", "", time.time() + 60,
                       family=6, pinhole_id=7)
    state.upsert([rec])
    assert [(r.family, r.pinhole_id) for r in state.load()] == [(6, 7)]
    old = [{"method": "pcp", "gateway": "192.168.1.1", "protocol": "tcp", "internal_port": 1, "external_port": 1,
            "external_address": None, "nonce": "00", "expires": time.time() + 60, "written_by": "a newer nodereach"}]
    state.state_path().write_text(json.dumps(old))
    assert [(r.family, r.pinhole_id) for r in state.load()] == [(4, None)]  # older file: IPv4; unknown keys ignored


def test_multicast_sources_and_interfaces() -> None:
    assert from_gateway("2001:db8:1:1::1", "2001:db8:1:1::1")
    assert from_gateway("fe80::1%eth0", "2001:db8:1:1::1")  # link-scope multicast comes from link-local
    assert not from_gateway("fe80::1", "192.168.1.1")
    assert not from_gateway("2001:db8:1:1::66", "2001:db8:1:1::1")
    assert not from_gateway("garbage", "2001:db8:1:1::1")
    index = interface_of("::1")
    assert index is None or index >= 1
    assert interface_of("2001:db8::dead:beef") is None and interface_of("not an address") is None
