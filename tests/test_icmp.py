"""The shared IP_RECVERR parser: examples byte for byte, hostile ancillary data never raises, a real kernel
error queue parses (loopback ICMP port unreachable)."""

from __future__ import annotations

import select
import socket
import struct

from hypothesis import given
from hypothesis import strategies as st

from nodereach.icmp import ERRQUEUE_ANCBUF, ICMP_DEST_UNREACH, IP_RECVERR, IPV6_RECVERR, IcmpError, parse_errqueue

_EE = struct.Struct("=IBBBBII")


def _v4(origin: int, icmp_type: int, offender: str | None, code: int = 0) -> list[tuple[int, int, bytes]]:
    ee = _EE.pack(113, origin, icmp_type, code, 0, 0, 0)
    addr = struct.pack("=HH4s8x", socket.AF_INET, 0, socket.inet_aton(offender)) if offender else b""
    return [(socket.IPPROTO_IP, IP_RECVERR, ee + addr)]


def test_v4_examples() -> None:
    assert parse_errqueue(_v4(2, 11, "192.168.1.1")) == (11, 0, "192.168.1.1")
    assert parse_errqueue(_v4(2, 3, None, code=3)) == IcmpError(3, 3, None)
    assert parse_errqueue(_v4(1, 11, "10.0.0.1")) is None  # SO_EE_ORIGIN_LOCAL: not an ICMP message
    assert parse_errqueue([]) is None
    # The first ICMP entry wins; foreign levels and short entries are skipped.
    anc = [(socket.SOL_SOCKET, 1, b"x" * 40), (socket.IPPROTO_IP, IP_RECVERR, b"\x00" * 15), *_v4(2, 11, "10.0.0.1")]
    assert parse_errqueue(anc) == (11, 0, "10.0.0.1")


def test_v4_offender_truncated_or_other_family() -> None:
    ee = _EE.pack(113, 2, 11, 0, 0, 0, 0)
    assert parse_errqueue([(socket.IPPROTO_IP, IP_RECVERR, ee + struct.pack("=HH", socket.AF_INET, 0))]) == \
        (11, 0, None)
    assert parse_errqueue([(socket.IPPROTO_IP, IP_RECVERR, ee + struct.pack("=H6x", 99))]) == (11, 0, None)


def test_v6_example() -> None:
    ee = _EE.pack(113, 3, 3, 0, 0, 0, 0)  # SO_EE_ORIGIN_ICMP6, ICMPv6 time exceeded
    sin6 = struct.pack("=HHI16sI", socket.AF_INET6, 0, 0, socket.inet_pton(socket.AF_INET6, "2001:db8::1"), 0)
    assert parse_errqueue([(socket.IPPROTO_IPV6, IPV6_RECVERR, ee + sin6)]) == (3, 0, "2001:db8::1")
    assert parse_errqueue([(socket.IPPROTO_IPV6, IPV6_RECVERR, _v4(2, 11, "10.0.0.1")[0][2])]) is None  # v4 origin


@given(st.lists(st.tuples(st.sampled_from([socket.IPPROTO_IP, socket.IPPROTO_IPV6, 0, 1, 300]),
                          st.sampled_from([IP_RECVERR, IPV6_RECVERR, 0, 1, 300]), st.binary(max_size=64)),
                max_size=4))
def test_hostile_ancillary_data_never_raises(anc: list[tuple[int, int, bytes]]) -> None:
    result = parse_errqueue(anc)
    assert result is None or (0 <= result.type <= 255 and 0 <= result.code <= 255
                              and (result.offender is None or isinstance(result.offender, str)))


@given(st.integers(0, 2**32 - 1), st.integers(0, 255), st.integers(0, 255), st.binary(min_size=4, max_size=4))
def test_any_icmp_v4_entry_round_trips(errno_: int, icmp_type: int, code: int, addr: bytes) -> None:
    ee = _EE.pack(errno_, 2, icmp_type, code, 0, 0, 0)
    data = ee + struct.pack("=HH4s8x", socket.AF_INET, 0, addr)
    assert parse_errqueue([(socket.IPPROTO_IP, IP_RECVERR, data)]) == (icmp_type, code, socket.inet_ntoa(addr))


def test_real_error_queue_on_loopback() -> None:
    """The kernel's own bytes: a datagram to a closed loopback port queues ICMP port unreachable from 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        sock.connect(("127.0.0.1", port))
        sock.send(b"nodereach icmp test")
        readable, _, errored = select.select([sock], [], [sock], 2.0)
        assert readable or errored
        _data, anc, _flags, _addr = sock.recvmsg(512, ERRQUEUE_ANCBUF, socket.MSG_ERRQUEUE)
    assert parse_errqueue(anc) == (ICMP_DEST_UNREACH, 3, "127.0.0.1")
