"""Socket helpers shared by the reach/serve tests (real kernel behaviour on loopback, no mocks)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



@contextlib.contextmanager
def full_backlog_listener() -> Iterator[int]:
    """A TCP port whose accept queue is full: the kernel drops further SYNs, so a connect times out."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    port = lst.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):
            c = socket.socket()
            c.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                c.connect(("127.0.0.1", port))
            fillers.append(c)
        time.sleep(0.05)
        yield port
    finally:
        for c in fillers:
            c.close()
        lst.close()
