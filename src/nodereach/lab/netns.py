"""Low-level namespace plumbing: enter a network namespace from a thread, run commands, list and kill.

setns(2) moves only the calling thread, so every namespace-bound piece of work runs in its own short-lived
thread (sockets keep their namespace for life). Python 3.12+ has os.setns; on 3.11 libc's setns via ctypes.

Why not pyroute2 for this (evaluated for issue 9 item 7; `benchmarks/lab_netns.py` measures it, figures
from two runs on the shared 2-core machine): pyroute2 0.9's `netns.setns` is the same syscall (0.09-0.19 ms
vs 0.07-0.12 ms per call in a thread), but its default flags (O_CREAT) silently create a namespace that is
missing: a thread entering a lab that was just torn down would leave a new, empty, unregistered namespace
behind, where ours fails with FileNotFoundError; its `pushns`/`popns` keep one process-global stack (not per
thread). `netns.create_socket` forks a child per socket (13-28 ms vs 0.08-0.15 ms here), `netns.create` a
child per namespace (7 namespaces: 210-300 ms vs 58-84 ms for `ip netns add`), and `IPRoute(netns=...)`
took 46-96 ms for six link/address/route changes that one `ip -batch` does in 26-38 ms. Importing pyroute2
adds 0.4-0.76 s to every process that imports it (the impairment forwarder, `nodereach lab exec`). So the
lab keeps `ip`/`nft` batches and its own setns; pyroute2 stays where netlink queries are the job (route
lookups in the check and portmap).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from nodereach.errors import NodereachError

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
PREFIX = "nrl-"

T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)
_os_setns: Callable[[int, int], None] | None = getattr(os, "setns", None)  # Python 3.12+


class LabError(NodereachError):
    """A lab operation failed (a command inside the lab, a daemon that did not start)."""


def setns(name: str) -> None:
    """Move the calling thread into network namespace `name` (never call this on the main thread). A missing
    namespace is FileNotFoundError: nothing is ever created here."""
    fd = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _os_setns is not None:
            _os_setns(fd, CLONE_NEWNET)
        elif _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def call_in(name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run fn(*args) in a fresh thread inside namespace `name`; return its result or raise its exception."""
    results: list[T] = []
    errors: list[BaseException] = []

    def body() -> None:
        try:
            setns(name)
            results.append(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller
            errors.append(exc)

    thread = threading.Thread(target=body, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def write_sysctl(ns: str, values: dict[str, str]) -> None:
    """Write /proc/sys values as seen from inside `ns` (net.* entries are per namespace)."""

    def body() -> None:
        for key, value in values.items():
            path = Path("/proc/sys") / key.replace(".", "/")
            if path.exists():
                path.write_text(value)

    call_in(ns, body)


def run(argv: Sequence[str], *, input: str | None = None, timeout: float = 20.0,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a host command (ip, nft, conntrack), raising LabError with its stderr on failure."""
    try:
        proc = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"`{' '.join(argv)}` timed out after {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def ip_batch(ns: str, commands: Sequence[str]) -> None:
    """Run `ip` commands in namespace `ns` in one process (one line each)."""
    if commands:
        run(["ip", "-n", ns, "-batch", "-"], input="\n".join(commands) + "\n")


def nft(ns: str, ruleset: str) -> None:
    """Load an nftables ruleset into namespace `ns`."""
    run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=ruleset)


def list_namespaces(prefix: str = PREFIX) -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))
    except FileNotFoundError:
        return []


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def namespace_pids(name: str) -> list[int]:
    proc = run(["ip", "netns", "pids", name], check=False, timeout=10)
    return [int(tok) for tok in proc.stdout.split() if (tok.isascii() and tok.isdigit())]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pid_start_time(pid: int) -> int | None:
    """The process start time in clock ticks (field 22 of /proc/PID/stat): guards against pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def kill_pids(pids: Sequence[int], grace: float = 2.0) -> None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL whatever is left (never our own pid)."""
    mine = os.getpid()
    pids = [p for p in pids if p != mine and pid_alive(p)]
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        for pid in pids:
            _reap(pid)
        pids = [p for p in pids if pid_alive(p)]
        if pids:
            time.sleep(0.02)
    for pid in pids:
        _signal(pid, signal.SIGKILL)
        _reap(pid)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def delete_namespace(name: str) -> None:
    """Kill everything still running in `name`, then delete it (its veths and taps go with it)."""
    if not (NETNS_DIR / name).exists():
        return
    kill_pids(namespace_pids(name), grace=1.0)
    run(["ip", "netns", "del", name], check=False, timeout=10)
