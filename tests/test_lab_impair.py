"""Link impairment on the subscriber link (userspace TAP forwarder; this kernel has no tc netem)."""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Callable

import pytest

from nodereach.lab import Lab
from nodereach.lab import addresses as A
from nodereach.lab import probe as P

pytestmark = pytest.mark.lab
SO_RCVBUFFORCE = 33  # not exported by the socket module


def _echo(sock: object, stop: threading.Event) -> None:
    sock.settimeout(0.1)  # type: ignore[attr-defined]
    while not stop.is_set():
        try:
            data, addr = sock.recvfrom(2048)  # type: ignore[attr-defined]
            sock.sendto(data, addr)  # type: ignore[attr-defined]
        except OSError:
            continue


def _rtts(net: Lab, count: int, timeout: float = 1.0) -> list[float]:
    rtts = []
    stop = threading.Event()
    with P.udp(net, "client") as client, P.udp(net, "server", A.SERVER_IP, 7) as server:
        echo = threading.Thread(target=_echo, args=(server, stop))
        echo.start()
        try:
            for _ in range(count):
                tok = P.token()
                start = time.monotonic()
                client.sendto(tok, (A.SERVER_IP, 7))
                if P.recv_matching(client, tok, timeout) is not None:
                    rtts.append((time.monotonic() - start) * 1000)
        finally:
            stop.set()
            echo.join()
    return rtts


def test_delay_and_loss_as_configured(lab: Callable[..., Lab]) -> None:
    """50 ms one-way + 10 % loss per direction: RTT ~100 ms, one-way loss ~10 %."""
    net = lab("port-restricted", delay_ms=50, loss=10)
    rtts = _rtts(net, 30, timeout=0.6)
    assert len(rtts) >= 12  # ~81 % of round trips survive two 10 % drops
    assert 95 <= statistics.median(rtts) <= 130
    assert min(rtts) >= 99
    sent = 1000
    with P.udp(net, "client") as client, P.udp(net, "server", A.SERVER_IP) as sink:
        sink.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 << 20)  # the sink must not be what drops
        for i in range(sent):
            client.sendto(b"x%d" % i, sink.getsockname())
            if i % 100 == 99:
                time.sleep(0.01)
        got = 0
        while P.recv(sink, 0.3) is not None:
            got += 1
    loss = 100.0 * (sent - got) / sent
    assert 6.5 <= loss <= 13.5, loss  # binomial, n=1000: 3 sigma is +-2.8 points


def test_delay_only_open_client(lab: Callable[..., Lab]) -> None:
    """On `open` the impaired link is the client's own; no loss when loss=0."""
    net = lab("open", delay_ms=20)
    rtts = _rtts(net, 10)
    assert len(rtts) == 10
    assert 39 <= statistics.median(rtts) <= 65
    seen_hops = P.ttl_hops(net, "client", A.SERVER_IP)
    assert seen_hops == [A.INET_SUBSCRIBER_GW, A.SERVER_IP]


def test_unimpaired_lab_is_fast(lab: Callable[..., Lab]) -> None:
    rtts = _rtts(lab("port-restricted"), 10)
    assert len(rtts) == 10 and statistics.median(rtts) < 10
