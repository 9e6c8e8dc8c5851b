"""Who listens on the node's ports on this host, and what is wrong with how it listens. No root needed.

Sources, cheapest first, all readable by any user:
- `/proc/net/{tcp,tcp6,udp,udp6}`: every socket of this network namespace with its local address, state, uid
  and inode (the same facts netlink sock_diag gives; reading four small files costs ~1 ms, where importing
  pyroute2 for sock_diag costs 0.25-0.6 s of the check's start-up, which targets < 1 s);
- `/proc/PID/fd` -> `socket:[INODE]`: which process owns a socket. Only the user's own processes (or all, as
  root) are readable; the others stay unnamed (`pid=None, process=""`), never an error;
- whether a `[::]` socket also takes IPv4 (IPV6_V6ONLY off) is not in /proc: `accepts_ipv4()` asks the kernel
  by binding `0.0.0.0:PORT` for a moment without listening. A dual-stack `[::]` listener makes that bind fail
  with EADDRINUSE; a v6-only one leaves the port free. That is exactly the question (does IPv4 traffic to the
  port reach a listener), answered by the kernel that routes it.

The judgement (`judge`) is pure: typed `Listener` values in, at most one `ListenerProblem` out.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from nodereach.net import Family, PortSpec, Transport, address_kind, canonical, family_of

ListenerCode = Literal[
    "nothing-listening", "loopback-only", "wrong-interface", "ipv6-only", "ipv4-only",
    "container-port-not-published",
]

PORT_WIDE: frozenset[ListenerCode] = frozenset({"nothing-listening", "container-port-not-published", "loopback-only"})
"""Problems that hold for the port whatever the family: no usable listener at all."""

TCP_LISTEN = 0x0A
UDP_UNCONNECTED = 0x07  # TCP_CLOSE: a bound, unconnected UDP socket (what a node's UDP port is)
PROC_NET = Path("/proc/thread-self/net")
"""The calling thread's network namespace (`/proc/net` is the main thread's: a thread that entered a lab
namespace would read the host's sockets)."""
MAX_PROC_NET_BYTES = 8 << 20
"""Read at most this much of one /proc/net file (a host with ~60k sockets); the rest is ignored."""
MAX_FD_SCAN = 200_000
"""Stop naming processes after this many fd entries (a host with huge fd tables costs a bounded time)."""


@dataclass(frozen=True, slots=True)
class Listener:
    """A socket that takes new traffic on a port: TCP in LISTEN, UDP bound and unconnected."""

    transport: Transport
    address: str
    """Local address, canonical (`0.0.0.0`, `::`, `127.0.0.1`, `2001:db8::5`; IPv4-mapped unwrapped)."""
    port: int
    family: Family
    """The socket's own family: 6 for an AF_INET6 socket even when it is bound to `::` and takes IPv4 too."""
    accepts_ipv4: bool | None = None
    """For an AF_INET6 wildcard socket: True when IPV6_V6ONLY is off (it takes IPv4), False when on, None
    when unknown. Always True for IPv4 sockets, False for other IPv6 sockets."""
    uid: int | None = None
    inode: int | None = None
    pid: int | None = None
    process: str = ""
    """The process name (`/proc/PID/comm`), empty when this user may not see it."""

    @property
    def wildcard(self) -> bool:
        return self.address in ("0.0.0.0", "::")

    @property
    def loopback(self) -> bool:
        return address_kind(self.address) == "loopback"

    def takes(self, family: Family) -> bool:
        """Does traffic of `family` reach this socket at all (whatever its destination address)?"""
        if family == 4:
            return self.family == 4 or self.accepts_ipv4 is True
        return self.family == 6

    def serves(self, family: Family, arrival: str) -> bool:
        """Does traffic of `family` that arrives for `arrival` reach this socket?"""
        if not self.takes(family):
            return False
        return self.wildcard or self.address == arrival

    def describe(self) -> str:
        where = f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"
        who = f"{self.process} (pid {self.pid})" if self.process and self.pid else \
            (self.process or (f"pid {self.pid}" if self.pid else "an unknown process"))
        return f"{who} on {where}/{self.transport}"


@dataclass(frozen=True, slots=True)
class ListenerProblem:
    code: ListenerCode
    port: PortSpec
    family: Family
    detail: str


@dataclass(frozen=True, slots=True)
class ContainerView:
    """What this host shows of container runtimes without root (see `container_view`)."""

    published: frozenset[PortSpec] = frozenset()
    """Host ports a userland proxy (docker-proxy, rootlessport) forwards into a container (from its command
    line, readable by any user)."""
    programs_elsewhere: tuple[tuple[int, str, frozenset[PortSpec]], ...] = ()
    """(pid, name, its default P2P ports) of node programs running in another network namespace, where
    visible. Counted as a container only while a container runtime runs too (a lab's or a VPN's namespace
    is not a container)."""
    runtime: str = ""
    """A container runtime seen running (`containerd-shim`, `conmon`, `docker-proxy`, ...), else empty."""


def _hex_address(text: str, family: Family) -> str:
    """An address as /proc/net writes it: the raw bytes in 32-bit words of the kernel's byte order."""
    raw = bytes.fromhex(text)
    if len(raw) != (4 if family == 4 else 16):
        raise ValueError(f"bad address length in {text!r}")
    words = b"".join(raw[i:i + 4][::-1] if sys.byteorder == "little" else raw[i:i + 4] for i in range(0, len(raw), 4))
    return canonical(str(ipaddress.ip_address(words)))


def parse_proc_net(text: str, transport: Transport, family: Family) -> list[Listener]:
    """The listening sockets of one /proc/net/{tcp,udp}{,6} file. Lines that do not parse are skipped."""
    want = TCP_LISTEN if transport == "tcp" else UDP_UNCONNECTED
    out: list[Listener] = []
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 10:
            continue
        try:
            local, _, port_hex = cols[1].partition(":")
            remote = cols[2]
            state = int(cols[3], 16)
            if state != want or (transport == "udp" and remote.partition(":")[2] != "0000"):
                continue
            address = _hex_address(local, family)
            port = int(port_hex, 16)
            uid, inode = int(cols[7]), int(cols[9])
        except ValueError:
            continue
        if not 0 < port < 65536:
            continue
        sock_family: Family = family
        accepts4: bool | None = family == 4
        if family == 6 and family_of(address) == 4:
            accepts4 = True  # bound to ::ffff:a.b.c.d: an IPv4 address in an AF_INET6 socket
        elif family == 6 and address == "::":
            accepts4 = None  # IPV6_V6ONLY decides; /proc does not say (see accepts_ipv4)
        out.append(Listener(transport, address, port, sock_family, accepts4, uid, inode))
    return out


def read_proc_net(root: Path | None = None) -> list[Listener]:
    """Every listener of this thread's network namespace (unnamed). A file that cannot be read is skipped."""
    if root is None:
        root = PROC_NET if PROC_NET.exists() else Path("/proc/net")  # thread-self: Linux 3.17+
    out: list[Listener] = []
    for transport, family, name in (("tcp", 4, "tcp"), ("tcp", 6, "tcp6"), ("udp", 4, "udp"), ("udp", 6, "udp6")):
        try:
            with (root / name).open("rb") as f:
                text = f.read(MAX_PROC_NET_BYTES).decode("ascii", "replace")
        except OSError:
            continue  # no IPv6 in this kernel, or /proc/net hidden
        out.extend(parse_proc_net(text, transport, family))  # type: ignore[arg-type]
    return out


def accepts_ipv4(transport: Transport, port: int) -> bool | None:
    """Does a `[::]:port` socket of this host take IPv4 (IPV6_V6ONLY off)? Asks the kernel with a bind to
    `0.0.0.0:port` (no listen, closed at once): EADDRINUSE means IPv4 to the port reaches a socket.

    Call it only when no IPv4 socket holds the port (else that one answers EADDRINUSE). None when the kernel
    gave another answer (no IPv4, permission for a port < 1024 without privilege, ...).
    """
    kind = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
    try:
        s = socket.socket(socket.AF_INET, kind)
    except OSError:
        return None
    with s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError as exc:
            return True if exc.errno == errno.EADDRINUSE else None
    return False


def socket_owners(inodes: Iterable[int], proc: Path = Path("/proc")) -> dict[int, tuple[int, str]]:
    """inode -> (pid, process name) for the sockets this user may see; stops once all are found."""
    wanted = {f"socket:[{i}]": i for i in inodes}
    found: dict[int, tuple[int, str]] = {}
    if not wanted:
        return found
    budget = MAX_FD_SCAN
    with contextlib.suppress(OSError):
        pids = [int(p) for p in os.listdir(proc) if (p.isascii() and p.isdigit())]
        for pid in pids:
            fd_dir = proc / str(pid) / "fd"
            try:
                fds = os.listdir(fd_dir)
            except OSError:
                continue  # another user's process: not ours to see
            for fd in fds:
                budget -= 1
                if budget <= 0:
                    return found
                try:
                    target = os.readlink(fd_dir / fd)
                except OSError:
                    continue
                inode = wanted.get(target)
                if inode is not None and inode not in found:
                    found[inode] = (pid, process_name(pid, proc))
                    if len(found) == len(wanted):
                        return found
    return found


def process_name(pid: int, proc: Path = Path("/proc")) -> str:
    """`/proc/PID/comm` (15 characters at most), empty when unreadable."""
    try:
        return (proc / str(pid) / "comm").read_text(errors="replace").strip()[:64]
    except OSError:
        return ""


def scan(ports: Sequence[PortSpec] | None = None, *, name_processes: bool = True) -> list[Listener]:
    """Listeners of this host (its network namespace), only on `ports` when given, processes named where
    visible and `[::]` sockets' IPv4 acceptance asked of the kernel. Never raises."""
    wanted = {(p.transport, p.port) for p in ports} if ports is not None else None
    found = [lst for lst in read_proc_net() if wanted is None or (lst.transport, lst.port) in wanted]
    v4_held = {(lst.transport, lst.port) for lst in found if lst.family == 4}
    resolved: list[Listener] = []
    for lst in found:
        if lst.family == 6 and lst.address == "::" and lst.accepts_ipv4 is None:
            key = (lst.transport, lst.port)
            lst = replace(lst, accepts_ipv4=None if key in v4_held else accepts_ipv4(lst.transport, lst.port))
        resolved.append(lst)
    if name_processes:
        owners = socket_owners(lst.inode for lst in resolved if lst.inode)
        resolved = [replace(lst, pid=owners[lst.inode][0], process=owners[lst.inode][1])
                    if lst.inode in owners else lst for lst in resolved]
    return resolved


def judge(spec: PortSpec, family: Family, arrival: str | None, listeners: Sequence[Listener],
          containers: ContainerView = ContainerView()) -> ListenerProblem | None:
    """What stops traffic of `family` arriving for `arrival` (the host's address the router forwards to, or
    its public address) from reaching a listener on `spec`; None when one takes it.

    Order: nothing at all (or a container whose port is not published) > only loopback > wrong family > bound
    to another address. With `arrival` unknown, a listener of the right family counts as reached.
    """
    mine = [lst for lst in listeners if lst.port == spec.port and lst.transport == spec.transport]
    if not mine:
        if spec in containers.published:
            return None  # the runtime's proxy would show as a listener; published through DNAT we cannot read
        inside = [(p, n) for p, n, ports in containers.programs_elsewhere if spec in ports]
        if inside and containers.runtime:
            names = ", ".join(f"{n} (pid {p})" for p, n in inside)
            return ListenerProblem(
                "container-port-not-published", spec, family,
                f"nothing on this host listens on {spec}; {names} runs in another network namespace (a "
                f"container): publish the port, e.g. `docker run -p {spec.port}:{spec.port}/{spec.transport}`")
        return ListenerProblem("nothing-listening", spec, family, f"no program listens on {spec} on this host"
                               + (f" ({containers.runtime} runs here: if the node is in a container, publish "
                                  f"{spec})" if containers.runtime else ""))
    if all(lst.loopback for lst in mine):
        return ListenerProblem("loopback-only", spec, family,
                               f"{_names(mine)}: loopback only, so no peer can reach it; bind it to "
                               f"{'0.0.0.0' if family == 4 else '::'} or to this host's address")
    takers = [lst for lst in mine if lst.takes(family) and not lst.loopback]
    if not takers:
        other = [lst for lst in mine if not lst.loopback]
        if family == 4:
            unknown = [lst for lst in other if lst.accepts_ipv4 is None]
            detail = (f"{_names(other)}: IPv6 only (IPV6_V6ONLY), so IPv4 peers cannot reach it; listen on "
                      "0.0.0.0 too, or on [::] without v6-only")
            if unknown:
                detail = (f"{_names(other)}: an IPv6 socket; whether it takes IPv4 could not be told (another "
                          "socket holds the IPv4 port)")
            return ListenerProblem("ipv6-only", spec, family, detail)
        return ListenerProblem("ipv4-only", spec, family,
                               f"{_names(other)}: IPv4 only, so IPv6 peers cannot reach it; listen on [::] too")
    if arrival is None:
        return None
    arrival = canonical(arrival)
    if any(lst.serves(family, arrival) for lst in takers):
        return None
    return ListenerProblem("wrong-interface", spec, family,
                           f"{_names(takers)}: bound to {_addresses(takers)}, but peers' traffic arrives on "
                           f"{arrival}; bind to {arrival} or to {'0.0.0.0' if family == 4 else '::'}")


def _names(listeners: Sequence[Listener]) -> str:
    return "; ".join(dict.fromkeys(lst.describe() for lst in listeners))


def _addresses(listeners: Sequence[Listener]) -> str:
    return ", ".join(dict.fromkeys(lst.address for lst in listeners))


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    pid: int
    name: str
    argv: tuple[str, ...] = ()
    other_netns: bool | None = None
    """True when its network namespace differs from ours (None: not visible to this user)."""
    uid: int | None = None
    """The user it runs as (whose home holds its RPC credentials: Bitcoin Core's cookie, lnd's macaroon)."""


def list_processes(proc: Path = Path("/proc"), limit: int = 100_000) -> list[ProcessInfo]:
    """Every process's name and command line (readable by any user), and whether it runs in another network
    namespace (needs the same user or root). Bounded by `limit` entries."""
    mine = ""
    for me in ("thread-self", "self"):  # the calling thread's namespace (a lab thread is not the main one's)
        with contextlib.suppress(OSError):
            mine = os.readlink(proc / me / "ns" / "net")
            break
    out: list[ProcessInfo] = []
    with contextlib.suppress(OSError):
        for entry in os.listdir(proc)[:limit]:
            if not (entry.isascii() and entry.isdigit()):
                continue
            pid = int(entry)
            name = process_name(pid, proc)
            if not name:
                continue
            try:
                raw = (proc / entry / "cmdline").read_bytes()[:4096]
            except OSError:
                raw = b""
            argv = tuple(a.decode(errors="replace") for a in raw.split(b"\0") if a)
            try:
                netns: bool | None = os.readlink(proc / entry / "ns" / "net") != mine if mine else None
            except OSError:
                netns = None
            try:
                uid: int | None = os.stat(proc / entry).st_uid
            except OSError:
                uid = None
            out.append(ProcessInfo(pid, name, argv, netns, uid))
    return out


RUNTIME_PROCESSES = ("containerd-shim", "containerd-shim-runc-v2", "conmon", "docker-proxy", "rootlessport",
                     "slirp4netns", "pasta")


def container_view(processes: Sequence[ProcessInfo],
                   node_programs: Mapping[str, frozenset[PortSpec]] | None = None) -> ContainerView:
    """Published ports from userland proxies' command lines (docker-proxy `-proto tcp -host-port 30303`),
    node programs (process name -> default ports) in other network namespaces, and whether a container
    runtime runs at all. Pure."""
    published: set[PortSpec] = set()
    runtime = ""
    programs = node_programs or {}
    elsewhere: list[tuple[int, str, frozenset[PortSpec]]] = []
    for p in processes:
        if any(p.name.startswith(r[:15]) for r in RUNTIME_PROCESSES):
            runtime = runtime or p.name
        if p.name == "docker-proxy":
            published.update(_docker_proxy_port(p.argv))
        if p.other_netns and p.name in programs:
            elsewhere.append((p.pid, p.name, programs[p.name]))
    return ContainerView(frozenset(published), tuple(elsewhere), runtime)


def _docker_proxy_port(argv: Sequence[str]) -> list[PortSpec]:
    """docker-proxy's `-proto tcp -host-ip 0.0.0.0 -host-port 30303 -container-ip ... -container-port ...`
    (moby/libnetwork cmd/proxy); flags may be written `-flag value` or `-flag=value`."""
    flags: dict[str, str] = {}
    it = iter(argv[1:])
    for arg in it:
        name, eq, value = arg.lstrip("-").partition("=")
        flags[name] = value if eq else next(it, "")
    proto, port = flags.get("proto", ""), flags.get("host-port", "")
    if proto in ("tcp", "udp") and (port.isascii() and port.isdigit()) and 0 < int(port) < 65536:
        return [PortSpec(int(port), proto)]  # type: ignore[arg-type]
    return []


@dataclass(frozen=True, slots=True)
class PortListening:
    """Everything the report says about one tested port on this host."""

    spec: PortSpec
    listeners: tuple[Listener, ...]
    problems: tuple[ListenerProblem, ...] = field(default=())

    @property
    def listening(self) -> bool:
        return bool(self.listeners) and not any(p.code in PORT_WIDE for p in self.problems)


def assess(specs: Sequence[PortSpec], families: Sequence[Family], arrival: Mapping[Family, str | None],
           listeners: Sequence[Listener], containers: ContainerView = ContainerView()) -> list[PortListening]:
    """`judge` for every tested port and family (pure)."""
    out: list[PortListening] = []
    for spec in specs:
        mine = tuple(lst for lst in listeners if lst.port == spec.port and lst.transport == spec.transport)
        problems: list[ListenerProblem] = []
        for fam in families:
            problem = judge(spec, fam, arrival.get(fam), listeners, containers)
            # A port with nothing (usable) on it is said once, not once per family.
            if problem is not None and not (problem.code in PORT_WIDE and any(q.code == problem.code
                                                                               for q in problems)):
                problems.append(problem)
        out.append(PortListening(spec, mine, tuple(problems)))
    return out

