"""`--on-change CMD` and `--webhook URL`: each event handed on, bounded in time, retried, never in the way.

Each sink has its own small queue and one worker task: the watcher only puts the event in the queue (no
waiting). A full queue drops the oldest event (counted, `hook-dropped`). Each attempt has a time bound; a
failed attempt (non-zero exit, timeout, connection error, HTTP 5xx or 429) is retried with backoff
(1 s, 2 s, 4 s, ...) up to `attempts` times, then counted (`hook-failed`) and left. The event's `id` lets the
receiver drop a duplicate of an attempt it did get but could not acknowledge in time.

The command runs with the event as JSON on stdin and in NODEREACH_EVENT (and NODEREACH_EVENT_KIND), through
`/bin/sh -c`, as the watcher's user; it is killed when its time is up. The webhook gets an HTTP POST with
`Content-Type: application/json`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import Protocol

from nodereach.watch.model import ErrorKind

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_ATTEMPTS = 4
QUEUE_SIZE = 64
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0
MAX_RESPONSE_BYTES = 64 << 10


class HookFailed(Exception):
    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


class Deliver(Protocol):
    async def __call__(self, kind: str, body: bytes) -> None: ...


class HookSink:
    """One destination (a command or a URL): queue, worker, retries."""

    def __init__(self, name: str, deliver: Deliver, error: Callable[[ErrorKind], None], *,
                 timeout: float = DEFAULT_TIMEOUT_S, attempts: int = DEFAULT_ATTEMPTS,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, queue_size: int = QUEUE_SIZE) -> None:
        self.name = name
        self.deliver = deliver
        self.error = error
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.sleep = sleep
        self.queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(queue_size)
        self.delivered = 0
        self.failed = 0
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._work(), name=f"nodereach-hook-{self.name}")

    def put(self, kind: str, body: bytes) -> None:
        """Never blocks: a full queue loses its oldest event."""
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
                self.queue.task_done()
            self.error("hook-dropped")
        self.queue.put_nowait((kind, body))

    async def _work(self) -> None:
        while True:
            kind, body = await self.queue.get()
            try:
                await self._one(kind, body)
            finally:
                self.queue.task_done()

    async def _one(self, kind: str, body: bytes) -> None:
        wait = BACKOFF_FIRST_S
        for attempt in range(1, self.attempts + 1):
            try:
                async with asyncio.timeout(self.timeout):
                    await self.deliver(kind, body)
            except TimeoutError:
                self.last_error = f"no answer within {self.timeout:.0f} s"
                retry = True
            except HookFailed as exc:
                self.last_error = str(exc)
                retry = exc.retry
            except OSError as exc:
                self.last_error = str(exc)
                retry = True
            else:
                self.delivered += 1
                return
            if not retry or attempt == self.attempts:
                break
            await self.sleep(wait)
            wait = min(BACKOFF_MAX_S, wait * 2)
        self.failed += 1
        self.error("hook-failed")

    async def drain(self, within: float) -> None:
        """On stop: give queued events (the `stopped` one) a bounded chance to go out."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self.queue.join()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def command_deliver(command: str) -> Deliver:
    async def deliver(kind: str, body: bytes) -> None:
        env = dict(os.environ, NODEREACH_EVENT=body.decode(), NODEREACH_EVENT_KIND=kind)
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, env=env, start_new_session=True)
        try:
            await proc.communicate(body + b"\n")
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)  # the whole group: `sh -c` may have started children
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):  # not wait_for: it can drop a cancel on 3.11 (gh-86296)
                    await proc.wait()
            raise
        if proc.returncode != 0:
            raise HookFailed(f"`{command}` exited with {proc.returncode}")

    return deliver


def webhook_deliver(url: str) -> tuple[Deliver, Callable[[], Awaitable[None]]]:
    """An HTTP POST per event (aiohttp, imported only when a webhook is configured); and its close()."""
    import aiohttp

    session: aiohttp.ClientSession | None = None

    async def deliver(kind: str, body: bytes) -> None:
        nonlocal session
        if session is None:
            session = aiohttp.ClientSession(headers={"User-Agent": "nodereach-watch"})
        async with session.post(url, data=body, headers={"Content-Type": "application/json",
                                                         "X-Nodereach-Event": kind}, allow_redirects=False) as resp:
            await resp.content.read(MAX_RESPONSE_BYTES)
            if resp.status == 429 or resp.status >= 500:
                raise HookFailed(f"{url} answered {resp.status}")
            if resp.status >= 300:
                raise HookFailed(f"{url} answered {resp.status}", retry=False)

    async def close() -> None:
        if session is not None:
            await session.close()

    async def guarded(kind: str, body: bytes) -> None:
        try:
            await deliver(kind, body)
        except aiohttp.ClientError as exc:
            raise HookFailed(f"{url}: {exc.__class__.__name__}: {exc}") from exc

    return guarded, close
