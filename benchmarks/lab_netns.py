"""Namespace switching for the lab: its own setns-in-a-thread and `ip` batches vs pyroute2 (issue 9 item 7).

    sudo .venv/bin/python benchmarks/lab_netns.py

Prints, side by side: import time, entering a namespace from a thread, creating a socket inside one,
creating 7 namespaces, six link/address/route changes, and whether a missing namespace gets created by
entering it. Creates only `nrlbench-*` namespaces (no links to the root namespace) and removes them.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable

NAMES = [f"nrlbench-{i}" for i in range(7)]


def _median_ms(fn: Callable[[], object], n: int) -> float:
    runs = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs) * 1e3


def _in_thread(fn: Callable[[], object]) -> None:
    thread = threading.Thread(target=fn)
    thread.start()
    thread.join()


def main() -> int:
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    from nodereach.lab import netns as N
    t1 = time.perf_counter()
    import pyroute2.netns as PN
    from pyroute2 import IPRoute
    t2 = time.perf_counter()
    print(f"import                     nodereach.lab.netns {t1 - t0:7.3f} s   pyroute2 (+IPRoute) {t2 - t1:7.3f} s")
    try:
        start = time.perf_counter()
        for name in NAMES:
            N.run(["ip", "netns", "add", name])
        ours_add = time.perf_counter() - start
        for name in NAMES:
            N.run(["ip", "netns", "del", name])
        start = time.perf_counter()
        for name in NAMES:
            PN.create(name)
        theirs_add = time.perf_counter() - start
        print(f"create 7 namespaces        ip netns add     {ours_add * 1e3:8.1f} ms   pyroute2.netns.create "
              f"{theirs_add * 1e3:8.1f} ms")
        ns = NAMES[0]
        ours = _median_ms(lambda: N.call_in(ns, lambda: None), 50)
        theirs = _median_ms(lambda: _in_thread(lambda: PN.setns(ns, flags=0)), 50)
        print(f"enter a namespace (thread) ctypes/os setns   {ours:8.3f} ms   pyroute2 setns(flags=0) {theirs:8.3f} ms")
        ours = _median_ms(lambda: N.call_in(ns, socket.socket, socket.AF_INET, socket.SOCK_DGRAM).close(), 50)
        theirs = _median_ms(lambda: PN.create_socket(ns, socket.AF_INET, socket.SOCK_DGRAM, flags=0).close(), 20)
        print(f"socket inside a namespace  thread + setns    {ours:8.3f} ms   pyroute2 create_socket  {theirs:8.3f} ms")

        def ip_batch() -> None:
            N.ip_batch(ns, ["link add d0 type veth peer name d1", "addr add 10.9.0.1/24 dev d0", "link set d0 up",
                            "addr add 2001:db8:9::1/64 dev d0 nodad", "route add 10.10.0.0/24 via 10.9.0.2",
                            "link del d0"])

        def iproute() -> None:
            with IPRoute(netns=ns) as ipr:
                ipr.link("add", ifname="d0", kind="veth", peer="d1")
                idx = ipr.link_lookup(ifname="d0")[0]
                ipr.addr("add", index=idx, address="10.9.0.1", prefixlen=24)
                ipr.link("set", index=idx, state="up")
                ipr.addr("add", index=idx, address="2001:db8:9::1", prefixlen=64, flags=0x02)  # IFA_F_NODAD
                ipr.route("add", dst="10.10.0.0/24", gateway="10.9.0.2")
                ipr.link("del", index=idx)

        print(f"6 link/addr/route changes  ip -batch        {_median_ms(ip_batch, 20):8.2f} ms   IPRoute(netns=) "
              f"{_median_ms(iproute, 20):8.2f} ms")
        N.run(["ip", "netns", "del", NAMES[-1]])
        _in_thread(lambda: PN.setns(NAMES[-1]))  # pyroute2's default flags include O_CREAT
        recreated = os.path.exists(N.NETNS_DIR / NAMES[-1])
        print(f"entering a deleted namespace recreates it (pyroute2 defaults): {recreated}")
    finally:
        for name in NAMES:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
