"""SSDP messages: the M-SEARCH byte for byte, search responses and NOTIFYs as routers send them, and any bytes
at all (a hostile LAN device) giving a message or None, never an exception."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nodereach.portmap.ssdp_codec import MAX_DATAGRAM, MAX_HEADERS, MAX_VALUE, build_msearch, parse

# miniupnpd 2.3.1's answer to an M-SEARCH for the IGD (the lab's router)
RESPONSE = (b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\n"
            b"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:2\r\n"
            b"USN: uuid:9c104479-7c37-4dd4-a398-e42f72ddccc7::urn:schemas-upnp-org:device:InternetGatewayDevice:2\r\n"
            b"EXT:\r\nSERVER: Debian/12 UPnP/1.1 MiniUPnPd/2.3.1\r\n"
            b"LOCATION: http://192.168.1.1:5000/rootDesc.xml\r\n"
            b"OPT: \"http://schemas.upnp.org/upnp/1/0/\"; ns=01\r\n01-NLS: 1796032558\r\n"
            b"BOOTID.UPNP.ORG: 1796032558\r\nCONFIGID.UPNP.ORG: 1337\r\n\r\n")


def test_msearch_bytes() -> None:
    assert build_msearch("urn:schemas-upnp-org:device:InternetGatewayDevice:2", mx=2) == (
        b'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\nMX: 2\r\n'
        b"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:2\r\n\r\n")
    assert build_msearch("ssdp:all", ipv6=True, mx=1).startswith(
        b"M-SEARCH * HTTP/1.1\r\nHOST: [FF02::C]:1900\r\n")


def test_search_response() -> None:
    m = parse(RESPONSE)
    assert m is not None and m.is_search_response and not m.is_notify
    assert m.get("LOCATION") == "http://192.168.1.1:5000/rootDesc.xml"
    assert m.get("bootid.upnp.org") == "1796032558" and m.get("ext") == ""
    assert m.get("st") == "urn:schemas-upnp-org:device:InternetGatewayDevice:2"


def test_lf_only_duplicates_and_junk_lines() -> None:
    m = parse(b"HTTP/1.1 200 OK\nLocation: http://a/1\nLOCATION: http://b/2\nno colon here\n: empty name\n"
              b"Bad Name: x\nST: st\n\nLOCATION: after the end\n")
    assert m is not None and dict(m.headers) == {"location": "http://a/1", "st": "st"}


def test_what_is_not_for_us() -> None:
    assert parse(b"M-SEARCH * HTTP/1.1\r\nST: ssdp:all\r\n\r\n") is None   # another host's search
    assert parse(b"HTTP/1.1 404 Not Found\r\n\r\n") is None
    assert parse(b"") is None and parse(b"\xff" * 10) is None
    assert parse(RESPONSE + b"X" * MAX_DATAGRAM) is None                    # oversize
    many = b"HTTP/1.1 200 OK\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(100))
    m = parse(many[:MAX_DATAGRAM])
    assert m is not None and len(m.headers) <= MAX_HEADERS
    long = parse(b"HTTP/1.1 200 OK\r\nLOCATION: " + b"a" * 1500 + b"\r\n\r\n")
    assert long is not None and len(long.get("location") or "") == MAX_VALUE


@given(st.binary(max_size=MAX_DATAGRAM + 10))
def test_any_bytes(data: bytes) -> None:
    m = parse(data)
    assert m is None or (len(m.headers) <= MAX_HEADERS and all(k == k.lower() for k in m.headers))


@given(st.lists(st.tuples(st.text(min_size=1, max_size=20), st.text(max_size=60)), max_size=40))
def test_any_header_block(headers: list[tuple[str, str]]) -> None:
    data = ("HTTP/1.1 200 OK\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode("utf-8")
    m = parse(data)
    assert m is None or all(isinstance(v, str) and len(v) <= MAX_VALUE for v in m.headers.values())
