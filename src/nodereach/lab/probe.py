"""Raw-socket probes that prove a scenario's ground truth (no STUN): who sees which address, what gets in.

Used by the lab's tests and by the demo's quick verification. Every wait has a deadline. Every probe speaks
IPv4 and IPv6: the family follows the address given (`"::"` or an IPv6 address: IPv6), and addresses come
back as plain (host, port) pairs in both families.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from nodereach.icmp import ICMP6_TIME_EXCEEDED, ICMP_TIME_EXCEEDED, IP_RECVERR, IPV6_RECVERR, parse_errqueue

if TYPE_CHECKING:
    from nodereach.lab.core import Lab


def family_of(addr: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _pair(addr: tuple[object, ...]) -> tuple[str, int]:
    return str(addr[0]), int(addr[1])  # type: ignore[call-overload]  # sockaddr tuples: (host, port[, ...])


def sockname(sock: socket.socket) -> tuple[str, int]:
    """(address, port) a socket is bound to, in both families."""
    return _pair(sock.getsockname())


@contextlib.contextmanager
def udp(lab: Lab, host: str, addr: str = "0.0.0.0", port: int = 0) -> Iterator[socket.socket]:
    """A bound UDP socket inside `host` (port 0: an ephemeral port, never a fixed one by default); an IPv6
    socket when `addr` is IPv6 ("::" for any), IPv6-only so it never sees IPv4.

    No SO_REUSEADDR: in a shared lab, a port someone else holds (a running `serve`) fails loudly instead of
    silently splitting the traffic."""
    family = family_of(addr)
    sock = lab.socket(host, family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((addr, port))
        yield sock
    finally:
        sock.close()


def recv(sock: socket.socket, timeout: float) -> tuple[bytes, tuple[str, int]] | None:
    """One datagram within `timeout` seconds, or None (the source as (address, port) in both families)."""
    ready, _, _ = select.select([sock], [], [], timeout)
    if not ready:
        return None
    data, peer = sock.recvfrom(65535)
    return data, _pair(peer)


def recv_matching(sock: socket.socket, payload: bytes, timeout: float) -> tuple[str, int] | None:
    """Wait for a datagram equal to `payload` (ignore others); return its source address."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        got = recv(sock, left)
        if got is None:
            return None
        if got[0] == payload:
            return got[1]
    return None


@contextlib.contextmanager
def trio(lab: Lab, host: str = "server", ip1: str = "203.0.113.10", ip2: str = "203.0.113.11",
         ) -> Iterator[tuple[socket.socket, socket.socket, socket.socket]]:
    """Three UDP sockets on `host` for filtering tests: ip1:p, ip1:q (other port), ip2:p (other address).

    Ephemeral ports, so they never clash with a server someone runs on the well-known ports."""
    for _ in range(20):
        with contextlib.ExitStack() as stack:
            first = stack.enter_context(udp(lab, host, ip1))
            try:
                other_ip = stack.enter_context(udp(lab, host, ip2, first.getsockname()[1]))
            except OSError:
                continue
            other_port = stack.enter_context(udp(lab, host, ip1))
            yield first, other_port, other_ip
            return
    raise OSError(f"no port free on both {ip1} and {ip2}")


def token() -> bytes:
    return b"nrl-probe-" + os.urandom(8).hex().encode()


def send_seen_as(sender: socket.socket, receiver: socket.socket, dst: tuple[str, int] | None = None,
                 timeout: float = 1.0, tries: int = 3) -> tuple[str, int] | None:
    """Send from `sender` to `dst` (default: `receiver`'s own address): the source address the receiver sees."""
    dst = dst or sockname(receiver)
    for _ in range(tries):
        payload = token()
        sender.sendto(payload, dst)
        seen = recv_matching(receiver, payload, timeout / tries)
        if seen is not None:
            return seen
    return None


def delivered(sender: socket.socket, receiver: socket.socket, dst: tuple[str, int] | None = None,
              timeout: float = 0.5, tries: int = 2) -> bool:
    """Does a datagram from `sender` to `dst` reach `receiver`? (retries absorb loss; False = filtered)."""
    return send_seen_as(sender, receiver, dst, timeout=timeout, tries=tries) is not None


def tcp_connects(lab: Lab, host: str, dst: tuple[str, int], timeout: float = 1.0, src: str | None = None) -> bool:
    """Does a TCP connection from `host` (optionally from address `src`) to `dst` complete in time?"""
    with lab.socket(host, family_of(dst[0]), socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            if src is not None:
                sock.bind((src, 0))
            sock.connect(dst)
            return True
        except OSError:
            return False


def tcp_listener(lab: Lab, host: str, addr: str = "0.0.0.0", port: int = 0) -> socket.socket:
    """A listening TCP socket inside `host` (IPv6-only when `addr` is IPv6)."""
    family = family_of(addr)
    sock = lab.socket(host, family, socket.SOCK_STREAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((addr, port))
    sock.listen(16)
    return sock


def tcp_accepts(listener: socket.socket, timeout: float) -> tuple[str, int] | None:
    """Accept one connection within `timeout`; return the peer address the listener sees."""
    ready, _, _ = select.select([listener], [], [], timeout)
    if not ready:
        return None
    conn, peer = listener.accept()
    conn.close()
    return _pair(peer)


def ttl_hops(lab: Lab, host: str, dst: str, max_ttl: int = 6, timeout: float = 1.0,
             port: int = 33434) -> list[str | None]:
    """Traceroute with UDP + IP_RECVERR (IPV6_RECVERR and hop limits for an IPv6 `dst`): the address
    answering time-exceeded at each TTL (None: silent).

    Stops at the first TTL that reaches `dst` (port unreachable or any error whose offender is `dst`).
    """
    hops: list[str | None] = []
    v6 = family_of(dst) == socket.AF_INET6
    exceeded = ICMP6_TIME_EXCEEDED if v6 else ICMP_TIME_EXCEEDED
    with udp(lab, host, "::" if v6 else "0.0.0.0") as sock:
        if v6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        for ttl in range(1, max_ttl + 1):
            if v6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
            else:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            sock.sendto(b"nrl-ttl", (dst, port + ttl))
            offender, kind = _wait_error(sock, timeout)
            hops.append(offender)
            if offender == dst or (offender is not None and kind != exceeded):
                break
    return hops


def _wait_error(sock: socket.socket, timeout: float) -> tuple[str | None, int | None]:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        select.select([sock], [], [], left)  # a queued error makes the socket readable
        try:
            _, ancdata, _, _ = sock.recvmsg(512, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except BlockingIOError:
            time.sleep(0.005)
            continue
        error = parse_errqueue(ancdata)
        if error is not None:
            return error.offender, error.type
    return None, None


def inbound_reaches(lab: Lab, dst_host: str, dst: tuple[str, int], proto: str = "udp", *, src_host: str = "peer",
                    src_addr: str | None = None, timeout: float = 0.5) -> bool:
    """Does an unsolicited `proto` packet (UDP datagram, TCP SYN) from `src_host` to `dst` reach a listener
    bound to `dst`'s port on `dst_host`? `dst` is the address the sender dials (the public one); the
    listener binds the wildcard of that family, so translated destinations (NAT, NPTv6) count too. The
    port must be free on `dst_host`. `src_addr`: the sender's address (default: its first of that family)."""
    family = family_of(dst[0])
    wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
    src = src_addr or lab.addresses(src_host, 6 if family == socket.AF_INET6 else 4)[0]
    if proto == "udp":
        with udp(lab, dst_host, wildcard, dst[1]) as listener, udp(lab, src_host, src) as sender:
            return delivered(sender, listener, dst, timeout=timeout, tries=2)
    listener = tcp_listener(lab, dst_host, wildcard, dst[1])
    try:
        if not tcp_connects(lab, src_host, dst, timeout=timeout, src=src):
            return False
        return tcp_accepts(listener, timeout) is not None
    finally:
        listener.close()
