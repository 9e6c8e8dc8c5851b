"""ICMP errors from a socket's error queue (IP_RECVERR / MSG_ERRQUEUE), parsed from recvmsg ancillary data.

Linux queues each ICMP error a UDP socket provokes as a `struct sock_extended_err` followed by the
offender's sockaddr (SO_EE_OFFENDER): the router that sent it. Reading it needs no root, which is why the
TTL probes (diagnose.ttlprobe) and the gateway-ownership probe (portmap.layers) use it. Pure: the bytes
come from the kernel, but are parsed as hostile anyway (any input gives a result or None, never an error).
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

IP_RECVERR = 11
IPV6_RECVERR = 25
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3
ICMP_DEST_UNREACH = 3
ICMP_TIME_EXCEEDED = 11
ICMP6_DEST_UNREACH = 1
ICMP6_TIME_EXCEEDED = 3
ERRQUEUE_ANCBUF = 512
"""Ancillary buffer for one recvmsg(MSG_ERRQUEUE): sock_extended_err (16) + sockaddr_in6 (28) fit easily."""

_EE = struct.Struct("=IBBBBII")  # ee_errno, ee_origin, ee_type, ee_code, ee_pad, ee_info, ee_data
_FAMILY = struct.Struct("=H")


class IcmpError(NamedTuple):
    """One queued ICMP error; compares equal to the plain (type, code, offender) tuple."""

    type: int
    code: int
    offender: str | None
    """The address that sent the ICMP message (None when the kernel gave none)."""


def _offender(rest: bytes) -> str | None:
    if len(rest) < _FAMILY.size:
        return None
    family = _FAMILY.unpack_from(rest)[0]
    if family == socket.AF_INET and len(rest) >= 8:
        return socket.inet_ntop(socket.AF_INET, rest[4:8])
    if family == socket.AF_INET6 and len(rest) >= 24:
        return socket.inet_ntop(socket.AF_INET6, rest[8:24])
    return None


def parse_errqueue(ancdata: list[tuple[int, int, bytes]]) -> IcmpError | None:
    """The first ICMP (or ICMPv6) error in recvmsg ancillary data; None for local errors or anything else."""
    for level, ctype, data in ancdata:
        if (level, ctype) == (socket.IPPROTO_IP, IP_RECVERR):
            want = SO_EE_ORIGIN_ICMP
        elif (level, ctype) == (socket.IPPROTO_IPV6, IPV6_RECVERR):
            want = SO_EE_ORIGIN_ICMP6
        else:
            continue
        if not isinstance(data, bytes | bytearray) or len(data) < _EE.size:
            continue
        _errno, origin, icmp_type, code, _pad, _info, _data = _EE.unpack_from(data)
        if origin != want:
            continue
        return IcmpError(icmp_type, code, _offender(bytes(data[_EE.size:])))
    return None


__all__ = ["ERRQUEUE_ANCBUF", "ICMP_DEST_UNREACH", "ICMP_TIME_EXCEEDED", "IPV6_RECVERR", "IP_RECVERR", "IcmpError",
           "parse_errqueue"]
