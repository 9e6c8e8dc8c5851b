"""Raw-socket probes that prove a scenario's ground truth (no STUN): who sees which address, what gets in.

Used by the lab's tests and by the demo's quick verification. Every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from nodereach.icmp import IP_RECVERR, parse_errqueue

if TYPE_CHECKING:
    from nodereach.lab.core import Lab

ICMP_TIME_EXCEEDED = 11


@contextlib.contextmanager
def udp(lab: Lab, host: str, addr: str = "0.0.0.0", port: int = 0) -> Iterator[socket.socket]:
    """A bound UDP socket inside `host` (port 0: an ephemeral port, never a fixed one by default).

    No SO_REUSEADDR: in a shared lab, a port someone else holds (a running `serve`) fails loudly instead of
    silently splitting the traffic."""
    sock = lab.socket(host, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((addr, port))
        yield sock
    finally:
        sock.close()


def recv(sock: socket.socket, timeout: float) -> tuple[bytes, tuple[str, int]] | None:
    """One datagram within `timeout` seconds, or None."""
    ready, _, _ = select.select([sock], [], [], timeout)
    if not ready:
        return None
    data, peer = sock.recvfrom(65535)
    return data, peer


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
    dst = dst or receiver.getsockname()
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


def tcp_connects(lab: Lab, host: str, dst: tuple[str, int], timeout: float = 1.0) -> bool:
    with lab.socket(host, socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(dst)
            return True
        except OSError:
            return False


def tcp_listener(lab: Lab, host: str, addr: str = "0.0.0.0", port: int = 0) -> socket.socket:
    sock = lab.socket(host, socket.AF_INET, socket.SOCK_STREAM)
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
    return (str(peer[0]), int(peer[1]))


def ttl_hops(lab: Lab, host: str, dst: str, max_ttl: int = 6, timeout: float = 1.0,
             port: int = 33434) -> list[str | None]:
    """Traceroute with UDP + IP_RECVERR: the address answering time-exceeded at each TTL (None: silent).

    Stops at the first TTL that reaches `dst` (port unreachable or any error whose offender is `dst`).
    """
    hops: list[str | None] = []
    with udp(lab, host) as sock:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        for ttl in range(1, max_ttl + 1):
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            sock.sendto(b"nrl-ttl", (dst, port + ttl))
            offender, kind = _wait_error(sock, timeout)
            hops.append(offender)
            if offender == dst or (offender is not None and kind != ICMP_TIME_EXCEEDED):
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
