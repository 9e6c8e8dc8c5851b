"""The check's lean UPnP IGD probe without a network: the M-SEARCH byte for byte, search responses and device
descriptions read as hostile bytes, the SOAP request and its answer (miniupnpd 2.3.1's own bytes, captured in
the lab), and the HTTP exchanges against hostile devices on loopback (bounded, typed errors, one deadline).
The search itself runs against real miniupnpd in tests/test_portmap_lab.py and tests/test_check_homerouter.py."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodereach.portmap import igd_probe, soap, ssdp_codec
from nodereach.portmap.errors import GatewayTimeout, MalformedMessage, NotOffered, PortmapError
from nodereach.portmap.soap import ForbiddenUrl, SoapFault
from nodereach.portmap.ssdp_codec import Found
from reach_helpers import Handler, tcp_server

GW = "192.168.1.1"
DESCRIPTION = (Path(__file__).parent / "upnp_docs" / "miniupnpd-2.3.1-rootDesc.xml").read_bytes()
LOCATION = "http://192.168.1.1:5000/rootDesc.xml"
# miniupnpd 2.3.1's answer to build_msearch(IGD:2, host=gateway), as captured in the lab (BOOTID is its start time)
MINIUPNPD_REPLY = (
    b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:2\r\n"
    b"USN: uuid:4a6bb3e4-1f46-40c3-a0dc-58a8001f88f0::urn:schemas-upnp-org:device:InternetGatewayDevice:2\r\n"
    b"EXT:\r\nSERVER: Debian/6.18.44-fc-v657 UPnP/1.1 MiniUPnPd/2.3.1\r\n"
    b"LOCATION: http://192.168.1.1:5000/rootDesc.xml\r\nOPT: \"http://schemas.upnp.org/upnp/1/0/\"; ns=01\r\n"
    b"01-NLS: 1796042229\r\nBOOTID.UPNP.ORG: 1796042229\r\nCONFIGID.UPNP.ORG: 1337\r\n\r\n")
MINIUPNPD_EXTERNAL = (
    b'<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
    b's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><u:GetExternalIPAddressResponse '
    b'xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:2"><NewExternalIPAddress>198.51.100.2'
    b"</NewExternalIPAddress></u:GetExternalIPAddressResponse></s:Body></s:Envelope>\r\n")
MINIUPNPD_FAULT = (
    b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
    b's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><s:Fault><faultcode>s:Client</faultcode>'
    b'<faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0">'
    b"<errorCode>714</errorCode><errorDescription>NoSuchEntryInArray</errorDescription></UPnPError></detail>"
    b"</s:Fault></s:Body></s:Envelope>")


def on_lan(address: str) -> bool:
    return address.startswith("192.168.1.")


# --- SSDP -------------------------------------------------------------------------------------------------


def test_search_request_bytes() -> None:
    assert ssdp_codec.build_msearch("urn:schemas-upnp-org:device:InternetGatewayDevice:2") == (
        b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\n"
        b"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:2\r\n\r\n")
    assert ssdp_codec.build_msearch("urn:x", host=GW).startswith(b"M-SEARCH * HTTP/1.1\r\nHOST: 192.168.1.1:1900\r\n")
    assert b"HOST: [fe80::1]:1900\r\n" in ssdp_codec.build_msearch("urn:x", host="fe80::1")


def test_miniupnpd_reply_is_found() -> None:
    found = ssdp_codec.parse_search_response(MINIUPNPD_REPLY, GW, on_lan)
    assert found == Found(LOCATION, GW, "urn:schemas-upnp-org:device:InternetGatewayDevice:2", 1796042229)


@pytest.mark.parametrize("data, source", [
    (MINIUPNPD_REPLY, "192.168.1.66"),  # LOCATION on another host than the one that answered
    (MINIUPNPD_REPLY, "10.0.0.1"),  # not on the LAN toward the gateway
    (MINIUPNPD_REPLY.replace(b"200 OK", b"404 Not Found"), GW),
    (MINIUPNPD_REPLY.replace(b"HTTP/1.1 200 OK", b"NOTIFY * HTTP/1.1"), GW),
    (MINIUPNPD_REPLY.replace(b"device:InternetGatewayDevice:2\r\nUSN", b"device:MediaRenderer:1\r\nUSN"), GW),
    (MINIUPNPD_REPLY.replace(b"http://192.168.1.1:5000/rootDesc.xml", b"http://192.168.1.1/" + b"a" * 600), GW),
    (MINIUPNPD_REPLY.replace(b"LOCATION: http://192.168.1.1:5000", b"LOCATION: http://[::1"), GW),
    (MINIUPNPD_REPLY.replace(b"LOCATION", b"X-LOCATION"), GW),
    (MINIUPNPD_REPLY + b"x" * 2048, GW),  # longer than any datagram we read
    (b"", GW), (b"\r\n\r\n", GW), (b"HTTP/1.1 200 OK", GW),
])
def test_replies_that_do_not_count(data: bytes, source: str) -> None:
    assert ssdp_codec.parse_search_response(data, source, on_lan) is None


def test_reply_variants_that_count() -> None:
    lower = b"http/1.1 200 ok\nst: urn:schemas-upnp-org:service:WANIPConnection:1\nlocation:  " \
            b"http://192.168.1.1:1780/igd.xml \nbootid.upnp.org: 99999999999\n\n"  # bare LF; BOOTID out of range
    found = ssdp_codec.parse_search_response(lower, GW, on_lan)
    assert found == Found("http://192.168.1.1:1780/igd.xml", GW, "urn:schemas-upnp-org:service:WANIPConnection:1")
    twice = MINIUPNPD_REPLY.replace(b"EXT:", b"LOCATION: http://10.9.9.9/evil.xml\r\nEXT:", 1)
    assert ssdp_codec.parse_search_response(twice, GW, on_lan) is None  # the first LOCATION wins: elsewhere


@settings(deadline=None)
@given(st.binary(max_size=600), st.sampled_from([GW, "192.168.1.66", "10.0.0.1"]))
def test_any_datagram_is_a_gateway_answer_or_nothing(data: bytes, source: str) -> None:
    found = ssdp_codec.parse_search_response(data, source, on_lan)
    assert found is None or (found.host == source and on_lan(source) and len(found.location) <= 512)


@settings(deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["ST", "LOCATION", "BOOTID.UPNP.ORG", "USN", "EXT", "X"]),
                          st.text(max_size=40)), max_size=8))
def test_any_headers_parse_without_raising(headers: list[tuple[str, str]]) -> None:
    data = ("HTTP/1.1 200 OK\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode("utf-8")
    found = ssdp_codec.parse_search_response(data, GW, on_lan)
    assert found is None or ssdp_codec.is_gateway_target(found.st)


# --- the description ------------------------------------------------------------------------------------


def test_miniupnpd_description_gives_its_control_url() -> None:
    assert igd_probe.control_of(DESCRIPTION, LOCATION, GW) == igd_probe.Control(
        "urn:schemas-upnp-org:service:WANIPConnection:2", "http://192.168.1.1:5000/ctl/IPConn")


def _description(services: str, url_base: str = "") -> bytes:
    return (f'<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0">{url_base}<device>'
            f"<deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType><deviceList><device>"
            f"<serviceList>{services}</serviceList></device></deviceList></device></root>").encode()


def _service(service_type: str, control: str) -> str:
    return f"<service><serviceType>{service_type}</serviceType><controlURL>{control}</controlURL></service>"


IP1 = "urn:schemas-upnp-org:service:WANIPConnection:1"
PPP1 = "urn:schemas-upnp-org:service:WANPPPConnection:1"


@pytest.mark.parametrize("description, expected", [
    # IGD v1 with URLBase and a relative URL: resolved against URLBase
    (_description(_service(IP1, "upnp/control/WANIPConn1"), "<URLBase>http://192.168.1.1:49000/</URLBase>"),
     igd_probe.Control(IP1, "http://192.168.1.1:49000/upnp/control/WANIPConn1")),
    # PPP only (DSL routers): taken; IP preferred when both are offered, whatever their order
    (_description(_service(PPP1, "/ppp")), igd_probe.Control(PPP1, "http://192.168.1.1:5000/ppp")),
    (_description(_service(PPP1, "/ppp") + _service(IP1, "/ip")), igd_probe.Control(IP1, "http://192.168.1.1:5000/ip")),
    (_description(_service(IP1, "http://192.168.1.1:80/abs")), igd_probe.Control(IP1, "http://192.168.1.1:80/abs")),
])
def test_description_variants(description: bytes, expected: igd_probe.Control) -> None:
    assert igd_probe.control_of(description, LOCATION, GW) == expected


@pytest.mark.parametrize("description, error", [
    (_description(_service(IP1, "http://10.9.9.9/ctl")), ForbiddenUrl),  # the action would go elsewhere
    (_description(_service(IP1, "/ctl"), "<URLBase>http://10.9.9.9/</URLBase>"), ForbiddenUrl),
    (_description(_service(IP1, "https://192.168.1.1/ctl")), ForbiddenUrl),
    (_description(_service(IP1, "http://user:pw@192.168.1.1/ctl")), ForbiddenUrl),
    (_description(_service("urn:schemas-upnp-org:service:Layer3Forwarding:1", "/l3f")), NotOffered),
    (b"<html>router login</html>", MalformedMessage),
    (b"not xml at all", MalformedMessage),
    (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><root>&b;</root>',
     MalformedMessage),  # entity expansion refused (defusedxml)
    (b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><root>&x;</root>', MalformedMessage),
    (b"<root>" + b"<a>" * 100_000, MalformedMessage),  # larger than any description we read
])
def test_hostile_descriptions(description: bytes, error: type[PortmapError]) -> None:
    with pytest.raises(error):
        igd_probe.control_of(description, LOCATION, GW)


@settings(deadline=None)
@given(st.binary(max_size=400) | st.text(max_size=300).map(lambda t: _description(t)))
def test_any_description_gives_a_control_on_the_host_or_a_typed_error(description: bytes) -> None:
    try:
        control = igd_probe.control_of(description, LOCATION, GW)
    except PortmapError:
        return
    soap.check_url(control.url, GW)


# --- the action ---------------------------------------------------------------------------------------------


def test_external_address_request_bytes() -> None:
    body, headers = igd_probe.external_address_request(igd_probe.Control(
        "urn:schemas-upnp-org:service:WANIPConnection:2", "http://192.168.1.1:5000/ctl/IPConn"))
    assert body == (b'<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
                    b's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
                    b'<u:GetExternalIPAddress xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:2">'
                    b"</u:GetExternalIPAddress></s:Body></s:Envelope>\r\n")
    assert headers == (("SOAPAction", '"urn:schemas-upnp-org:service:WANIPConnection:2#GetExternalIPAddress"'),)
    escaped = soap.envelope("urn:x", "AddPortMapping", [("NewPortMappingDescription", "a<b>&c")])
    assert b"<NewPortMappingDescription>a&lt;b&gt;&amp;c</NewPortMappingDescription>" in escaped


def test_miniupnpd_answers() -> None:
    assert igd_probe.external_address_of(200, MINIUPNPD_EXTERNAL) == "198.51.100.2"
    assert igd_probe.external_address_of(200, MINIUPNPD_EXTERNAL.replace(b"198.51.100.2", b"")) is None
    with pytest.raises(SoapFault) as fault:
        igd_probe.external_address_of(500, MINIUPNPD_FAULT)
    assert fault.value.code == 714
    with pytest.raises(MalformedMessage):
        igd_probe.external_address_of(200, MINIUPNPD_EXTERNAL.replace(b"198.51.100.2", b"not-an-address"))
    with pytest.raises(MalformedMessage):
        igd_probe.external_address_of(404, b"<html/>")


@settings(deadline=None)
@given(st.integers(min_value=100, max_value=599), st.binary(max_size=400))
def test_any_answer_is_an_address_or_a_typed_error(status: int, body: bytes) -> None:
    try:
        address = igd_probe.external_address_of(status, body)
    except PortmapError:
        return
    assert address is None or ":" in address or address.count(".") == 3


# --- the two exchanges against hostile devices on loopback ------------------------------------------------

def serving(description: bytes, answer: bytes = MINIUPNPD_EXTERNAL, status: bytes = b"200 OK") -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        body = answer if head.startswith(b"POST") else description
        if head.startswith(b"POST"):
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(
                b"content-length"))
            request = await reader.readexactly(length)
            assert b"GetExternalIPAddress" in request and b"SOAPAction" in head
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()

    return handler


async def test_description_and_action_from_a_device() -> None:
    desc = _description(_service("urn:schemas-upnp-org:service:WANIPConnection:2", "/ctl/IPConn"))
    async with tcp_server(serving(desc)) as port:
        found = Found(f"http://127.0.0.1:{port}/rootDesc.xml", "127.0.0.1", "urn:x")
        address, control = await igd_probe.external_address(found, asyncio.get_running_loop().time() + 2)
    assert address == "198.51.100.2" and control.url == f"http://127.0.0.1:{port}/ctl/IPConn"


async def _slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n<root>")
    await writer.drain()
    await asyncio.sleep(10)


async def _endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(200):
        writer.write(b"1000\r\n" + b"a" * 0x1000 + b"\r\n")
        await writer.drain()


async def _redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 302 Found\r\nLocation: http://10.9.9.9/desc.xml\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()


@pytest.mark.parametrize("handler, error", [
    (_slow, GatewayTimeout),
    (_endless, MalformedMessage),  # larger than MAX_DESCRIPTION: cut off, never read whole
    (_redirect, MalformedMessage),  # never followed
    (serving(b"<root/>", status=b"200 OK"), NotOffered),
    (serving(DESCRIPTION.replace(b"/ctl/IPConn", b"http://10.9.9.9/ctl")), ForbiddenUrl),
    (serving(_description(_service(IP1, "/ctl")), answer=MINIUPNPD_FAULT), SoapFault),
])
async def test_hostile_devices_end_in_a_typed_error_within_the_deadline(handler: Handler,
                                                                        error: type[PortmapError]) -> None:
    async with tcp_server(handler) as port:
        found = Found(f"http://127.0.0.1:{port}/rootDesc.xml", "127.0.0.1", "urn:x")
        start = time.monotonic()
        with pytest.raises(error):
            await igd_probe.external_address(found, asyncio.get_running_loop().time() + 0.5)
        assert time.monotonic() - start < 1.5


async def test_nothing_listening_is_an_error_not_a_crash() -> None:
    async with tcp_server(_slow) as port:
        pass
    found = Found(f"http://127.0.0.1:{port}/rootDesc.xml", "127.0.0.1", "urn:x")
    with pytest.raises(PortmapError, match="cannot reach"):
        await igd_probe.external_address(found, asyncio.get_running_loop().time() + 1)
    with pytest.raises(ForbiddenUrl):  # a LOCATION on another host than the one that answered
        await igd_probe.external_address(Found("http://10.9.9.9/d.xml", "127.0.0.1", "urn:x"),
                                         asyncio.get_running_loop().time() + 1)
