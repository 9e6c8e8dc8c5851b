"""Link impairment without tc netem: two TAP devices joined by this userspace forwarder.

`python -m nodereach.lab.impair --ns-a NS --tap-a NAME --ns-b NS --tap-b NAME --delay-ms 50 --loss 10`
creates one TAP device in each namespace (a thread enters the namespace and opens /dev/net/tun), prints
`ready`, then forwards Ethernet frames both ways, holding each for the one-way delay and dropping `loss`
percent of IP frames per direction (ARP is never dropped, so neighbour discovery stays deterministic).
The queue per direction is bounded; the process exits when a device disappears (its namespace was
deleted), on SIGTERM, or when the owner process dies.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import queue
import random
import signal
import struct
import sys
import threading
import time

from nodereach.lab.netns import call_in, pid_alive

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
MAX_QUEUE = 4096
ETH_P_ARP = b"\x08\x06"


def open_tap(ns: str, name: str) -> int:
    """Create TAP device `name` inside namespace `ns` (it lives as long as the returned fd)."""

    def create() -> int:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
        return fd

    return call_in(ns, create)


class Direction:
    """One direction of the link: a reader that timestamps/drops frames and a writer that releases them."""

    def __init__(self, src: int, dst: int, delay_s: float, loss: float, rng: random.Random,
                 stop: threading.Event) -> None:
        self.src, self.dst, self.delay_s, self.loss, self.rng, self.stop = src, dst, delay_s, loss, rng, stop
        self.q: queue.Queue[tuple[float, bytes]] = queue.Queue(MAX_QUEUE)
        self.forwarded = self.dropped = 0

    def reader(self) -> None:
        while not self.stop.is_set():
            try:
                frame = os.read(self.src, 65536)
            except OSError:
                break
            if not frame:
                break
            if self.loss and frame[12:14] != ETH_P_ARP and self.rng.random() * 100.0 < self.loss:
                self.dropped += 1
                continue
            try:
                self.q.put_nowait((time.monotonic() + self.delay_s, frame))
            except queue.Full:
                self.dropped += 1
        self.stop.set()

    def writer(self) -> None:
        while not self.stop.is_set():
            try:
                due, frame = self.q.get(timeout=0.2)
            except queue.Empty:
                continue
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                os.write(self.dst, frame)
                self.forwarded += 1
            except OSError:
                continue


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ns-a", required=True)
    parser.add_argument("--tap-a", required=True)
    parser.add_argument("--ns-b", required=True)
    parser.add_argument("--tap-b", required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--owner-pid", type=int, default=0, help="exit when this process is gone (0: never)")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the owner decides when the link goes
    fd_a = open_tap(args.ns_a, args.tap_a)
    fd_b = open_tap(args.ns_b, args.tap_b)
    rng = random.Random(args.seed)
    delay = max(0.0, args.delay_ms) / 1000.0
    loss = min(100.0, max(0.0, args.loss))
    dirs = (Direction(fd_a, fd_b, delay, loss, rng, stop), Direction(fd_b, fd_a, delay, loss, rng, stop))
    for d in dirs:
        for target in (d.reader, d.writer):
            threading.Thread(target=target, daemon=True).start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while not stop.wait(0.5):
        if args.owner_pid and not pid_alive(args.owner_pid):
            break
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
