"""The UPnP drivers' own protocol code without a network: the typed action table and its request bodies byte for
byte, the device description and action answers read as hostile bytes (hypothesis), "not offered" learnt from
fault 401 instead of an SCPD, and the whole request the drivers put on the wire (captured on loopback). That the
keeper's UPnP path loads no aiohttp / async-upnp-client is asserted here too. miniupnpd itself: the lab tests
(test_portmap_lab.py, test_portmap_lab6.py, test_watch_lab.py)."""

from __future__ import annotations

import asyncio
import ipaddress
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodereach import __version__
from nodereach.portmap import igd_actions
from nodereach.portmap.base import Slot
from nodereach.portmap.errors import MalformedMessage, PortmapError
from nodereach.portmap.gateway import Gateway
from nodereach.portmap.igd_description import MAX_SERVICES, MAX_UDNS, parse_description
from nodereach.portmap.soap import ActionNotOffered, SoapFault, check_url, local_name, parse_soap, parse_xml
from nodereach.portmap.ssdp_codec import Found
from nodereach.portmap.upnp_client import UpnpClient
from nodereach.portmap.upnp_pinhole import UpnpPinholeClient
from reach_helpers import tcp_server

GW = "192.168.1.1"
LOCATION = "http://192.168.1.1:5000/rootDesc.xml"
MINIUPNPD = (Path(__file__).parent / "upnp_docs" / "miniupnpd-2.3.1-rootDesc.xml").read_bytes()
IP2 = "urn:schemas-upnp-org:service:WANIPConnection:2"
IP1 = "urn:schemas-upnp-org:service:WANIPConnection:1"
FC = "urn:schemas-upnp-org:service:WANIPv6FirewallControl:1"
HEAD = (b'<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
        b's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>')
TAIL = b"</s:Body></s:Envelope>\r\n"


# --- requests, byte for byte ----------------------------------------------------------------------------------

MAPPING = {"NewRemoteHost": "", "NewExternalPort": 30303, "NewProtocol": "UDP", "NewInternalPort": 30303,
           "NewInternalClient": "192.168.1.10", "NewEnabled": True, "NewPortMappingDescription": "nodereach 30303/udp",
           "NewLeaseDuration": 604800}
MAPPING_BODY = (b"<NewRemoteHost></NewRemoteHost><NewExternalPort>30303</NewExternalPort><NewProtocol>UDP</NewProtocol>"
                b"<NewInternalPort>30303</NewInternalPort><NewInternalClient>192.168.1.10</NewInternalClient>"
                b"<NewEnabled>1</NewEnabled><NewPortMappingDescription>nodereach 30303/udp</NewPortMappingDescription>"
                b"<NewLeaseDuration>604800</NewLeaseDuration>")
KEY = {"NewRemoteHost": "", "NewExternalPort": 30303, "NewProtocol": "TCP"}
KEY_BODY = b"<NewRemoteHost></NewRemoteHost><NewExternalPort>30303</NewExternalPort><NewProtocol>TCP</NewProtocol>"
PINHOLE = {"RemoteHost": "", "RemotePort": 0, "InternalClient": "2001:db8:1::10", "InternalPort": 30303,
           "Protocol": 17, "LeaseTime": 86400}
PINHOLE_BODY = (b"<RemoteHost></RemoteHost><RemotePort>0</RemotePort><InternalClient>2001:db8:1::10</InternalClient>"
                b"<InternalPort>30303</InternalPort><Protocol>17</Protocol><LeaseTime>86400</LeaseTime>")


@pytest.mark.parametrize(("service", "action", "values", "inner"), [
    (IP2, "GetExternalIPAddress", {}, b""),
    (IP2, "AddPortMapping", MAPPING, MAPPING_BODY),
    (IP2, "AddAnyPortMapping", MAPPING, MAPPING_BODY),
    (IP1, "GetSpecificPortMappingEntry", KEY, KEY_BODY),
    (IP1, "DeletePortMapping", KEY, KEY_BODY),
    (IP1, "GetGenericPortMappingEntry", {"NewPortMappingIndex": 7},
     b"<NewPortMappingIndex>7</NewPortMappingIndex>"),
    (FC, "GetFirewallStatus", {}, b""),
    (FC, "AddPinhole", PINHOLE, PINHOLE_BODY),
    (FC, "GetOutboundPinholeTimeout", {k: v for k, v in PINHOLE.items() if k != "LeaseTime"},
     PINHOLE_BODY.split(b"<LeaseTime>")[0]),
    (FC, "UpdatePinhole", {"UniqueID": 65535, "NewLeaseTime": 1},
     b"<UniqueID>65535</UniqueID><NewLeaseTime>1</NewLeaseTime>"),
    (FC, "DeletePinhole", {"UniqueID": 3}, b"<UniqueID>3</UniqueID>"),
    (FC, "CheckPinholeWorking", {"UniqueID": 0}, b"<UniqueID>0</UniqueID>"),
])
def test_request_bytes(service: str, action: str, values: dict[str, Any], inner: bytes) -> None:
    body, headers = igd_actions.request(service, action, values)
    assert body == HEAD + f'<u:{action} xmlns:u="{service}">'.encode() + inner + f"</u:{action}>".encode() + TAIL
    assert headers == (("SOAPAction", f'"{service}#{action}"'),)


@pytest.mark.parametrize(("action", "values", "says"), [
    ("AddPortMapping", {**MAPPING, "NewExternalPort": 65536}, "not a ui2"),
    ("AddPortMapping", {**MAPPING, "NewExternalPort": -1}, "not a ui2"),
    ("AddPortMapping", {**MAPPING, "NewExternalPort": True}, "not a ui2"),  # a bool is an int to Python
    ("AddPortMapping", {**MAPPING, "NewExternalPort": "30303"}, "not a ui2"),
    ("AddPortMapping", {**MAPPING, "NewLeaseDuration": 2**32}, "not a ui4"),
    ("AddPortMapping", {**MAPPING, "NewEnabled": 1}, "not a boolean"),
    ("AddPortMapping", {**MAPPING, "NewInternalClient": 3}, "not a string"),
    ("AddPortMapping", {**MAPPING, "NewPortMappingDescription": "a\x00b"}, "not a string"),
    ("AddPortMapping", {**MAPPING, "NewPortMappingDescription": "a\rb"}, "not a string"),
    ("AddPortMapping", {**MAPPING, "NewPortMappingDescription": "x" * 257}, "not a string"),
    ("AddPortMapping", {k: v for k, v in MAPPING.items() if k != "NewEnabled"}, "instead of"),
    ("DeletePortMapping", {**KEY, "NewLeaseDuration": 1}, "instead of"),
    ("GetListOfPortMappings", {}, "not an action nodereach knows"),
])
def test_wrong_arguments_are_never_sent(action: str, values: dict[str, Any], says: str) -> None:
    with pytest.raises(PortmapError, match=f"cannot build {action}.*{says}"):
        igd_actions.request(IP2, action, values)


XML_TEXT = st.text(st.characters(min_codepoint=0x20, blacklist_categories=("Cs",)), max_size=60).filter(
    lambda t: "\ufffe" not in t and "\uffff" not in t)


@settings(deadline=None)
@given(st.integers(0, 65535), st.integers(0, 65535), st.integers(0, 2**32 - 1), st.booleans(), XML_TEXT,
       st.sampled_from(["TCP", "UDP"]))
def test_any_typed_request_reads_back_as_sent(external: int, internal: int, lease: int, enabled: bool,
                                             description: str, protocol: str) -> None:
    """What a router's XML parser reads from our body is exactly what we meant to send, in the spec's order."""
    values = {**MAPPING, "NewExternalPort": external, "NewInternalPort": internal, "NewLeaseDuration": lease,
              "NewEnabled": enabled, "NewPortMappingDescription": description, "NewProtocol": protocol}
    body, _headers = igd_actions.request(IP2, "AddPortMapping", values)
    action = next(el for el in parse_xml(body, "test").iter() if local_name(el.tag) == "AddPortMapping")
    read = [(local_name(child.tag), child.text or "") for child in action]
    assert read == [(name, igd_actions.encode_value(kind, values[name]))
                    for name, kind in igd_actions.ACTIONS["AddPortMapping"]]
    assert dict(read)["NewPortMappingDescription"] == description


@given(st.text(max_size=40))
def test_any_string_is_sent_as_is_or_refused(text: str) -> None:
    try:
        body, _ = igd_actions.request(FC, "AddPinhole", {**PINHOLE, "InternalClient": text})
    except PortmapError as exc:
        assert "cannot build AddPinhole" in exc.message
        return
    element = next(el for el in parse_xml(body, "test").iter() if local_name(el.tag) == "InternalClient")
    assert (element.text or "") == text


# --- the description -------------------------------------------------------------------------------------------


def test_miniupnpd_description() -> None:
    desc = parse_description(MINIUPNPD, LOCATION, GW)
    assert desc.udns == ("uuid:d8695eea-85ba-4a5e-90a7-4dfd3ab919fb", "uuid:d8695eea-85ba-4a5e-90a7-4dfd3ab919fc",
                         "uuid:d8695eea-85ba-4a5e-90a7-4dfd3ab919fd")
    control = desc.control(igd_actions.WAN_SERVICES)
    assert control is not None and (control.service_type, control.url) == (IP2, "http://192.168.1.1:5000/ctl/IPConn")
    fc = desc.control((FC,))
    assert fc is not None and fc.url == "http://192.168.1.1:5000/ctl/IP6FCtl"
    assert desc.control(("urn:schemas-upnp-org:service:WANPPPConnection:1",)) is None


def _description(services: str, udns: str = "") -> bytes:
    return (f'<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0"><device>{udns}'
            f"<serviceList>{services}</serviceList></device></root>").encode()


def test_description_bounds() -> None:
    many = "".join(f"<service><serviceType>urn:x:{i}</serviceType><controlURL>/c{i}</controlURL></service>"
                   for i in range(MAX_SERVICES + 50)) + (
        f"<service><serviceType>{IP1}</serviceType><controlURL>/ctl</controlURL></service>")
    desc = parse_description(_description(many, "<UDN>uuid:A</UDN>" * 3 + "<UDN>not-a-uuid</UDN>"), LOCATION, GW)
    assert len(desc.services) == MAX_SERVICES and desc.udns == ("uuid:a",)
    assert desc.control((IP1,)) is None  # past the bound: a description listing thousands gets no further
    udns = "".join(f"<UDN>uuid:{i}</UDN>" for i in range(100))
    assert len(parse_description(_description("", udns), LOCATION, GW).udns) == MAX_UDNS
    with pytest.raises(MalformedMessage, match="too large"):
        parse_description(b" " * (64 * 1024 + 1), LOCATION, GW)


SERVICE = st.tuples(st.sampled_from([IP1, IP2, FC, "urn:x", ""]),
                    st.sampled_from(["/ctl", "ctl", "http://192.168.1.1:5000/c", "http://10.9.9.9/c", "https://x/",
                                     "http://[::1/", "", "http://u:p@192.168.1.1/c", "/" + "a" * 600]),
                    st.sampled_from(["", "/scpd.xml", "http://203.0.113.9/s.xml", "http://192.168.1.1:99999/"]))


@settings(deadline=None)
@given(st.lists(SERVICE, max_size=6), st.lists(st.text(max_size=20), max_size=4),
       st.sampled_from(["", "<URLBase>http://192.168.1.1:49000/</URLBase>", "<URLBase>http://10.9.9.9/</URLBase>",
                        "<URLBase>:::</URLBase>"]))
def test_any_structured_description_gives_checked_controls_or_typed_errors(
        services: list[tuple[str, str, str]], udns: list[str], url_base: str) -> None:
    from xml.sax.saxutils import escape

    body = _description("".join(f"<service><serviceType>{t}</serviceType><controlURL>{escape(c)}</controlURL>"
                                f"<SCPDURL>{escape(s)}</SCPDURL></service>" for t, c, s in services),
                        "".join(f"<UDN>{escape(u)}</UDN>" for u in udns)).replace(b"<device>", url_base.encode()
                                                                                   + b"<device>", 1)
    try:
        desc = parse_description(body, LOCATION, GW)
    except MalformedMessage:
        return  # text that XML cannot carry
    assert all(u.startswith("uuid:") for u in desc.udns)
    for wanted in (igd_actions.WAN_SERVICES, (FC,)):
        try:
            control = desc.control(wanted)
        except PortmapError:
            continue
        if control is not None:
            check_url(control.url, GW)
            assert control.service_type in wanted


@settings(deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_are_a_description_or_malformed(body: bytes) -> None:
    try:
        desc = parse_description(body, LOCATION, GW)
    except MalformedMessage:
        return
    assert len(desc.services) <= MAX_SERVICES and len(desc.udns) <= MAX_UDNS


# --- the answers -----------------------------------------------------------------------------------------------


def _answer(action: str, inner: str) -> bytes:
    return (f'<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
            f'<u:{action}Response xmlns:u="{IP2}">{inner}</u:{action}Response></s:Body></s:Envelope>').encode()


def _fault(code: str) -> bytes:
    return ('<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><detail><UPnPError>'
            f"<errorCode>{code}</errorCode><errorDescription>x</errorDescription></UPnPError></detail></s:Fault>"
            "</s:Body></s:Envelope>").encode()


def test_not_offered_is_a_fault_of_its_own() -> None:
    for code in (401, 602):
        with pytest.raises(ActionNotOffered, match="does not offer AddAnyPortMapping") as exc:
            parse_soap("AddAnyPortMapping", 500, _fault(str(code)))
        assert exc.value.code == code and isinstance(exc.value, SoapFault)
    with pytest.raises(SoapFault) as other:
        parse_soap("AddAnyPortMapping", 500, _fault("728"))
    assert not isinstance(other.value, ActionNotOffered)


@settings(deadline=None)
@given(st.sampled_from(sorted(igd_actions.ACTIONS)), st.integers(100, 599), st.binary(max_size=500))
def test_any_answer_bytes_are_out_arguments_or_a_typed_error(action: str, status: int, body: bytes) -> None:
    try:
        out = parse_soap(action, status, body)
    except (SoapFault, MalformedMessage):
        return
    assert status == 200 and all(isinstance(v, str) for v in out.values())


NAME = st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,15}", fullmatch=True)


@settings(deadline=None)
@given(st.sampled_from(sorted(igd_actions.ACTIONS)), st.dictionaries(NAME, XML_TEXT, max_size=8))
def test_any_structured_answer_reads_back(action: str, args: dict[str, str]) -> None:
    from xml.sax.saxutils import escape

    body = _answer(action, "".join(f"<{k}>{escape(v)}</{k}>" for k, v in args.items()))
    assert parse_soap(action, 200, body) == {k: v.strip() for k, v in args.items()}


# --- the drivers' requests on the wire (loopback) ----------------------------------------------------------------

LO = Gateway("127.0.0.1", "127.0.0.1", 1, (ipaddress.ip_network("127.0.0.0/8"),))


class Recorder:
    """A device on loopback: serves `description`, records each control request whole and answers from
    `answers` (action -> (status, body))."""

    def __init__(self, description: bytes, answers: dict[str, tuple[int, bytes]]) -> None:
        self.description = description
        self.answers = answers
        self.requests: list[tuple[bytes, bytes]] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"GET"):
            status, body = 200, self.description
        else:
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            body_in = await reader.readexactly(length)
            self.requests.append((head, body_in))
            action = body_in.split(b"<u:", 1)[1].split(b" ", 1)[0].decode()
            status, body = self.answers.get(action, (500, _fault("401")))
        writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n" % (status, len(body)) + body)
        await writer.drain()
        writer.close()


def _entry(client: str) -> bytes:
    return _answer("GetSpecificPortMappingEntry", f"<NewInternalPort>30303</NewInternalPort><NewInternalClient>"
                   f"{client}</NewInternalClient><NewEnabled>1</NewEnabled><NewLeaseDuration>3600</NewLeaseDuration>")


async def test_add_port_mapping_on_the_wire() -> None:
    desc = _description(f"<service><serviceType>{IP1}</serviceType><controlURL>/ctl</controlURL></service>")
    device = Recorder(desc, {"AddPortMapping": (200, _answer("AddPortMapping", "")),
                             "GetSpecificPortMappingEntry": (200, _entry("127.0.0.1")),
                             "GetExternalIPAddress": (200, _answer("GetExternalIPAddress",
                                                                   "<NewExternalIPAddress>198.51.100.2"
                                                                   "</NewExternalIPAddress>"))})
    async with tcp_server(device) as port:
        client = await UpnpClient.from_location(LO, Found(f"http://127.0.0.1:{port}/d.xml", "127.0.0.1", "x"),
                                                wait=1.0)
        grant = await client.map(Slot("udp", 30303, b""), 30303, 3600)
    assert (grant.external_port, grant.lifetime, grant.external_address) == (30303, 3600, "198.51.100.2")
    head, body = device.requests[0]
    assert head == (b"POST /ctl HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: nodereach/%s\r\n"
                    b'Connection: close\r\nSOAPAction: "%s#AddPortMapping"\r\n'
                    b'Content-Type: text/xml; charset="utf-8"\r\nContent-Length: %d\r\n\r\n'
                    % (port, __version__.encode(), IP1.encode(), len(body)))
    assert body == (HEAD + f'<u:AddPortMapping xmlns:u="{IP1}">'.encode()
                    + MAPPING_BODY.replace(b"192.168.1.10", b"127.0.0.1").replace(b"604800", b"3600")
                    + b"</u:AddPortMapping>" + TAIL)


async def test_igd1_without_add_any_says_every_port_is_taken() -> None:
    """No SCPD is read: AddAnyPortMapping is asked, and 401 Invalid Action means the router lacks it."""
    desc = _description(f"<service><serviceType>{IP1}</serviceType><controlURL>/ctl</controlURL></service>")
    device = Recorder(desc, {"AddPortMapping": (500, _fault("718"))})
    async with tcp_server(device) as port:
        client = await UpnpClient.from_location(LO, Found(f"http://127.0.0.1:{port}/d.xml", "127.0.0.1", "x"),
                                                wait=1.0)
        with pytest.raises(PortmapError, match="every external port tried for 30303/udp is taken") as exc:
            await client.map(Slot("udp", 30303, b""), 30303, 3600)
    assert exc.value.hint and "free the port" in exc.value.hint
    assert [r[1].split(b"<u:")[1].split(b" ")[0] for r in device.requests][-1] == b"AddAnyPortMapping"


async def test_pinhole_check_falls_back_when_check_pinhole_working_is_not_offered() -> None:
    """No SCPD is read: CheckPinholeWorking is asked once, and after 401 the check is an UpdatePinhole."""
    desc = _description(f"<service><serviceType>{FC}</serviceType><controlURL>/fc</controlURL></service>")
    device = Recorder(desc, {"UpdatePinhole": (200, _answer("UpdatePinhole", ""))})
    async with tcp_server(device) as port:
        # built directly: from_location refuses an IPv4 URL for pinholes, and tcp_server listens on IPv4
        found = Found(f"http://127.0.0.1:{port}/d.xml", "127.0.0.1", "x")
        description = parse_description(desc, found.location, found.host)
        control = description.control((FC,))
        assert control is not None
        client = UpnpPinholeClient(LO, found, description, control, timeout=1.0)
        assert await client.alive(5, 600) is True
        assert client.check_offered is False
        assert await client.alive(5, 600) is True
    actions = [r[1].split(b"<u:")[1].split(b" ")[0] for r in device.requests]
    assert actions == [b"CheckPinholeWorking", b"UpdatePinhole", b"UpdatePinhole"]


def test_keeper_and_upnp_drivers_import_no_aiohttp() -> None:
    """A keeper on a UPnP-only router (watch --keep-mapped, open) loads the UPnP drivers: no aiohttp, no
    async-upnp-client (+11-12 MiB resident, docs/watch.md "Cost")."""
    code = ("import sys, nodereach.watch.mapping, nodereach.portmap.keeper, nodereach.portmap.probe, "
            "nodereach.portmap.upnp_client, nodereach.portmap.upnp_pinhole, nodereach.portmap.http, "
            "nodereach.portmap.mappings_command, nodereach.reach.http1, h11, defusedxml.ElementTree; "
            "sys.exit(sorted({'aiohttp', 'async_upnp_client', 'yarl', 'multidict'} "
            "& {m.split('.')[0] for m in sys.modules}) or 0)")
    done = subprocess.run([sys.executable, "-c", code], timeout=60, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
