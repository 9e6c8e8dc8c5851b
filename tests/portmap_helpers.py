"""Helpers for the port-mapping lab tests: inbound traffic from the simulated internet, miniupnpd state."""

from __future__ import annotations

import contextlib
import os
import socket
import time

from nodereach.lab import Lab, registry
from nodereach.lab import addresses as A
from nodereach.lab.rules import MINIUPNPD_CHAIN6, TABLE6


def udp_inbound(lab: Lab, external: tuple[str, int], internal_port: int, wait: float = 1.5) -> bool:
    """Does a datagram from `peer` to external reach a socket bound to internal_port on `client`?"""
    token = os.urandom(12)
    rx = lab.socket("client", socket.AF_INET, socket.SOCK_DGRAM)
    tx = lab.socket("peer", socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        rx.bind(("0.0.0.0", internal_port))
        rx.settimeout(0.2)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            tx.sendto(token, external)
            with contextlib.suppress(TimeoutError):
                while True:
                    data, _ = rx.recvfrom(64)
                    if data == token:
                        return True
        return False
    finally:
        rx.close()
        tx.close()


def tcp_inbound(lab: Lab, external: tuple[str, int], internal_port: int, wait: float = 1.5) -> bool:
    """Does a TCP connection from `peer` to external arrive at a listener on client:internal_port?"""
    token = os.urandom(12)
    srv = lab.socket("client", socket.AF_INET, socket.SOCK_STREAM)
    cli = lab.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
    try:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("0.0.0.0", internal_port))
        srv.listen(4)
        srv.settimeout(wait)
        cli.settimeout(wait)
        try:
            cli.connect(external)
            cli.sendall(token)
            conn, _ = srv.accept()
        except OSError:
            return False
        with conn:
            conn.settimeout(wait)
            return conn.recv(64) == token
    finally:
        srv.close()
        cli.close()


def inbound(lab: Lab, protocol: str, external: tuple[str, int], internal_port: int, wait: float = 1.5) -> bool:
    fn = tcp_inbound if protocol == "tcp" else udp_inbound
    return fn(lab, external, internal_port, wait)


def wait_inbound(lab: Lab, protocol: str, external: tuple[str, int], internal_port: int, within: float) -> float | None:
    """Seconds until inbound traffic passes (polling, conntrack flushed each round), or None."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        lab.flush_conntrack()
        if inbound(lab, protocol, external, internal_port, wait=0.5):
            return time.monotonic() - start
    return None


EPOCH_VISIBLE_S = 6.0
"""How long a mapping must be held before a router restart is sure to be visible to the epoch rules (RFC 6886
§3.6: a restart is an epoch below prev + 7/8 of the client's elapsed time - 2 s; RFC 6887 §8.5 the same 2 s
slack) when the router itself had started just before (a pooled lab whose miniupnpd the previous test
restarted). miniupnpd's epoch is whole seconds of wall time, so a reply 0.2 s after its start can say 1: after
3 s a restart was invisible to the NAT-PMP rule (and to PCP's unless the old epoch was >= 2), and the keeper
renewed the lost mapping without telling it was lost (seen once in a reruns-off full run). From 6 s on, the
rules see any restart whose reply comes within ~18 s. A real router takes longer than that to reboot."""


def restart_miniupnpd_losing_state(lab: Lab) -> None:
    """Stop miniupnpd, drop its lease file (else it restores the mappings) and, in IPv6 scenarios, its pinhole
    rules (miniupnpd finds them in the firewall after a restart; a rebooted router has none), start it again."""
    lab.stop_miniupnpd()
    with contextlib.suppress(FileNotFoundError):
        (registry.REGISTRY_DIR / f"{lab.id}-miniupnpd.leases").unlink()
    if lab.truth.ipv6 is not None:
        lab.exec("router", ["nft", "flush", "chain", "inet", TABLE6, MINIUPNPD_CHAIN6], check=False)
    lab.start_miniupnpd()


WAN = A.ROUTER_WAN_IP
