"""The check's later imports, done in a thread while its first round trips are in flight.

Only what the first packets need is imported before they are sent (the probes, the STUN client, the tables);
the rest (the gateway probe's codecs, h11, the node stage, the conclusion and advice) costs ~0.1 s of CPU
that would hold the GIL in the main thread exactly while replies arrive, inflating the RTT samples every
deadline derives from. In a thread, with a short switch interval while it runs, a reply waits at most about
a millisecond for the GIL and the imports use the time the loop would spend waiting in select (and the
other core). Each group has a future in the loop: a stage awaits its group, then imports (a cache hit).
A failed import is not reported here: the stage's own import raises it where it is handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sys
import threading
from collections.abc import Sequence

WAIT_MAX_S = 2.0
"""A stage waits this long at most for its group (a thread starved on a loaded host), then imports itself."""
SWITCH_S = 0.001
"""The interpreter's switch interval while the thread imports (default 5 ms): how long a reply may wait for
the GIL before the importing thread is made to let go of it."""


class Warmer:
    """Import `groups` (name -> modules) in order in one daemon thread; `ready(name)` waits for a group.

    The thread starts with `start()` or with the first `ready()`, whichever comes first: the engine creates
    the stage that waits first (the gateway probe) after every probe that sends at once, so its first step,
    and the thread, come after their first packets."""

    def __init__(self, groups: Sequence[tuple[str, tuple[str, ...]]]) -> None:
        self.groups = tuple(groups)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: dict[str, asyncio.Future[None]] = {}
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start importing (from the running loop); a second call does nothing."""
        if self._thread is not None or not self.groups:
            return
        self._loop = asyncio.get_running_loop()
        for name, _ in self.groups:
            self._future(name)
        self._thread = threading.Thread(target=self._run, name="nodereach-warm", daemon=True)
        self._thread.start()

    async def ready(self, group: str, within: float = WAIT_MAX_S) -> None:
        """Until `group` is imported, at most `within` seconds (then the caller imports it itself); at once for a
        group that is not one of ours."""
        if group not in dict(self.groups):
            return
        done = self._future(group)
        self.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await asyncio.shield(done)

    def _future(self, name: str) -> asyncio.Future[None]:
        if name not in self._done:
            self._done[name] = asyncio.get_running_loop().create_future()
        return self._done[name]

    def _run(self) -> None:
        before = sys.getswitchinterval()
        sys.setswitchinterval(min(before, SWITCH_S))
        try:
            for name, modules in self.groups:
                for module in modules:
                    with contextlib.suppress(Exception):
                        importlib.import_module(module)
                self._signal(name)
        finally:
            sys.setswitchinterval(before)

    def _signal(self, name: str) -> None:
        loop, done = self._loop, self._done[name]
        assert loop is not None

        def finish() -> None:
            if not done.done():
                done.set_result(None)

        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(finish)
