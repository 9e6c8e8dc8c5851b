"""The UPnP gateway's SSDP NOTIFYs: when they mean "restarted, look now", and hostile datagrams.

The NOTIFY bytes below are the shape miniupnpd 2.3.1 sends in the lab (captured; see upnp_notify.py).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nodereach.portmap.upnp_notify import BootTracker, _Proto, parse_boot_id, uuid_of

GW = "192.168.1.1"
UUID = "uuid:9c104479-7c37-4dd4-a398-e42f72ddccc7"


def notify(nts: str = "ssdp:alive", boot: str | None = "1796032558", uuid: str = UUID,
           nt: str = "urn:schemas-upnp-org:device:InternetGatewayDevice:2") -> bytes:
    lines = ["NOTIFY * HTTP/1.1", "HOST: 239.255.255.250:1900", "CACHE-CONTROL: max-age=120",
             f"LOCATION: http://{GW}:5000/rootDesc.xml", "SERVER: Debian/12 UPnP/1.1 MiniUPnPd/2.3.1",
             f"NT: {nt}", f"USN: {uuid}::{nt}", f"NTS: {nts}", 'OPT: "http://schemas.upnp.org/upnp/1/0/"; ns=01']
    if boot is not None:
        lines += [f"01-NLS: {boot}", f"BOOTID.UPNP.ORG: {boot}", "CONFIGID.UPNP.ORG: 1337"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_periodic_alive_with_the_same_boot_id_is_quiet() -> None:
    t = BootTracker(boot_id=7)
    assert [t.observe("ssdp:alive", 7, float(s)) for s in range(0, 600, 60)] == [False] * 10


def test_new_boot_id_is_a_restart_once_per_burst() -> None:
    t = BootTracker(boot_id=7)
    burst = [t.observe("ssdp:alive", 8, 100.0 + i / 100) for i in range(13)]
    assert burst == [True] + [False] * 12
    assert [t.observe("ssdp:alive", 8, 100.25 + i / 100) for i in range(13)] == [False] * 13  # the repeat


def test_byebye_then_alive_is_a_restart_even_with_the_same_boot_id() -> None:
    """miniupnpd's BOOTID is its start time in seconds: a restart within one second keeps it."""
    t = BootTracker(boot_id=7)
    assert not t.observe("ssdp:byebye", 7, 10.0)
    assert t.observe("ssdp:alive", 7, 10.1)
    assert not t.observe("ssdp:alive", 7, 10.2)


def test_first_boot_id_learned_from_notify_is_no_restart() -> None:
    t = BootTracker()
    assert not t.observe("ssdp:alive", 5, 0.0)
    assert t.boot_id == 5
    assert t.observe("ssdp:alive", 6, 1.0)


def test_uda10_device_without_boot_id_checks_once_per_quiet_period() -> None:
    t = BootTracker()
    seen = [t.observe("ssdp:alive", None, s / 10) for s in range(0, 1000)]  # 100 s of alives, 10 per second
    assert sum(seen) == 5  # t = 0, 20, 40, 60, 80 s


def test_update_and_unknown_nts() -> None:
    t = BootTracker(boot_id=1)
    assert t.observe("ssdp:update", 1, 0.0)
    assert not t.observe("ssdp:propchange", 2, 1.0)


def test_boot_id_and_uuid_parsing() -> None:
    assert parse_boot_id(" 1796032558 ") == 1796032558
    for bad in ("-1", "2147483648", "1e9", "", "12345678901", None, 5):
        assert parse_boot_id(bad) is None
    assert uuid_of(f"{UUID.upper()}::upnp:rootdevice") == UUID
    assert uuid_of("urn:x") is None and uuid_of(None) is None


def _proto(uuids: frozenset[str] = frozenset({UUID}), boot_id: int | None = 1796032557) -> tuple[_Proto, list[int]]:
    nudges: list[int] = []
    return _Proto(GW, uuids, BootTracker(boot_id=boot_id), lambda: nudges.append(1)), nudges


async def test_restart_burst_from_the_gateway_nudges_once() -> None:
    proto, nudges = _proto()
    for _ in range(13):
        proto.datagram_received(notify(), (GW, 54010))
    assert nudges == [1]


async def test_notify_from_elsewhere_or_for_another_device_is_ignored() -> None:
    proto, nudges = _proto()
    proto.datagram_received(notify(), ("192.168.1.66", 1900))  # another host on the LAN
    proto.datagram_received(notify(uuid="uuid:00000000-media-server"), (GW, 1900))  # another device on the router
    proto.datagram_received(notify().replace(b"NOTIFY", b"M-SEARCH", 1), (GW, 1900))
    assert nudges == []


async def test_byebye_then_alive_through_the_socket_handler() -> None:
    proto, nudges = _proto()
    proto.datagram_received(notify("ssdp:byebye", boot="1796032557"), (GW, 54010))
    proto.datagram_received(notify(boot="1796032557"), (GW, 57667))
    assert nudges == [1]


@given(st.binary(max_size=3000))
def test_hostile_datagrams_never_raise(data: bytes) -> None:
    proto, _ = _proto()
    proto.datagram_received(b"NOTIFY * HTTP/1.1\r\n" + data, (GW, 1900))
    proto.datagram_received(data, (GW, 1900))


@given(st.text(max_size=200), st.text(max_size=40), st.text(max_size=40))
def test_hostile_headers_never_raise(usn: str, nts: str, boot: str) -> None:
    proto, _ = _proto(frozenset())
    raw = f"NOTIFY * HTTP/1.1\r\nUSN: {usn}\r\nNTS: {nts}\r\nBOOTID.UPNP.ORG: {boot}\r\n\r\n"
    proto.datagram_received(raw.encode("utf-8", "surrogatepass"), (GW, 1900))
