"""Known node software: program -> default P2P ports, RPC endpoint, adapter kind. And, with no `--port`,
which of the node's ports to test, found from the programs listening on this host.

Defaults are each project's main-network defaults, from its docs (linked per row). A program is recognised by
its process name (`/proc/PID/comm`, cut to 15 characters by the kernel) or, for programs that run inside a
runtime (Java, Node.js), by a word of its command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nodereach.net import PortSpec
from nodereach.node.choice import ADAPTER_KINDS as ADAPTER_KINDS
from nodereach.node.choice import AdapterKind as AdapterKind
from nodereach.node.listeners import Listener, ProcessInfo


def _both(port: int) -> tuple[PortSpec, PortSpec]:
    return PortSpec(port, "tcp"), PortSpec(port, "udp")


@dataclass(frozen=True, slots=True)
class Program:
    name: str
    """What operators call it (`geth`, `Lighthouse`, `Bitcoin Core`)."""
    kind: AdapterKind
    processes: tuple[str, ...]
    """Process names (`comm`, at most 15 characters)."""
    ports: tuple[PortSpec, ...]
    """Default P2P ports."""
    rpc: str
    """Default RPC endpoint on this host (what `--node KIND` without a URL uses)."""
    other_ports: tuple[int, ...] = ()
    """Its non-P2P ports (RPC, metrics, engine API): never picked as P2P ports."""
    argv_words: tuple[str, ...] = ()
    """Command-line words that identify it when the process is a runtime (`java`, `node`)."""
    doc: str = ""


PROGRAMS: tuple[Program, ...] = (
    Program("Bitcoin Core", "bitcoin", ("bitcoind", "bitcoin-qt"), (PortSpec(8333, "tcp"),), "http://127.0.0.1:8332/",
            (8332, 28332, 28333), doc="https://github.com/bitcoin/bitcoin/blob/master/doc/p2p-bad-ports.md"),
    Program("geth", "ethereum", ("geth",), _both(30303), "http://127.0.0.1:8545/", (8545, 8546, 8551, 6060),
            doc="https://geth.ethereum.org/docs/fundamentals/command-line-options"),
    Program("Nethermind", "ethereum", ("Nethermind.Runn", "nethermind"), _both(30303), "http://127.0.0.1:8545/",
            (8545, 8551, 6060), doc="https://docs.nethermind.io/fundamentals/configuration"),
    Program("Besu", "ethereum", ("besu",), _both(30303), "http://127.0.0.1:8545/", (8545, 8546, 8551, 9545),
            argv_words=("org.hyperledger.besu", "besu"), doc="https://besu.hyperledger.org/public-networks/reference/cli/options"),
    Program("Erigon", "ethereum", ("erigon",), _both(30303), "http://127.0.0.1:8545/", (8545, 8551, 9090, 6060),
            doc="https://docs.erigon.tech/fundamentals/default-ports"),
    Program("Reth", "ethereum", ("reth",), _both(30303), "http://127.0.0.1:8545/", (8545, 8546, 8551, 9001),
            doc="https://reth.rs/run/ports"),
    # Lighthouse's QUIC transport has its own UDP port, 9001 by default (`--quic-port`).
    Program("Lighthouse", "beacon", ("lighthouse",), (*_both(9000), PortSpec(9001, "udp")), "http://127.0.0.1:5052/",
            (5052, 5054, 5062, 5064), doc="https://lighthouse-book.sigmaprime.io/advanced_networking.html"),
    # Prysm's defaults differ from the other consensus clients: TCP 13000, UDP (discv5) 12000.
    Program("Prysm", "beacon", ("beacon-chain", "prysm"), (PortSpec(13000, "tcp"), PortSpec(12000, "udp")),
            "http://127.0.0.1:3500/", (3500, 4000, 8080), doc="https://docs.prylabs.network/docs/prysm-usage/p2p-host-ip"),
    Program("Teku", "beacon", ("teku",), _both(9000), "http://127.0.0.1:5051/", (5051, 8008),
            argv_words=("tech.pegasys.teku", "teku"), doc="https://docs.teku.consensys.io/reference/cli"),
    Program("Nimbus", "beacon", ("nimbus_beacon_n", "nimbus_beacon_node"), _both(9000), "http://127.0.0.1:5052/",
            (5052, 8008), doc="https://nimbus.guide/networking.html"),
    Program("Lodestar", "beacon", ("lodestar",), _both(9000), "http://127.0.0.1:9596/", (9596, 8008),
            argv_words=("lodestar",), doc="https://chainsafe.github.io/lodestar/run/beacon-management/networking/"),
    Program("kubo", "kubo", ("ipfs", "kubo"), _both(4001), "http://127.0.0.1:5001/", (5001, 8080),
            doc="https://docs.ipfs.tech/how-to/nat-configuration/"),
    Program("monerod", "monero", ("monerod",), (PortSpec(18080, "tcp"),), "http://127.0.0.1:18081/",
            (18081, 18082, 18089), doc="https://docs.getmonero.org/interacting/monerod-reference/"),
    Program("lnd", "lnd", ("lnd",), (PortSpec(9735, "tcp"),), "https://127.0.0.1:8080/", (8080, 10009),
            doc="https://docs.lightning.engineering/lightning-network-tools/lnd/lnd.conf"),
    Program("Transmission", "transmission", ("transmission-da", "transmission-daemon"), _both(51413),
            "http://127.0.0.1:9091/", (9091,),
            doc="https://github.com/transmission/transmission/blob/main/docs/Editing-Configuration-Files.md"),
    Program("Syncthing", "syncthing", ("syncthing",), _both(22000), "http://127.0.0.1:8384/", (8384, 21027),
            doc="https://docs.syncthing.net/users/firewall.html"),
)

RUNTIMES = ("java", "node", "nodejs", "bun", "deno")


def identify(name: str, argv: Sequence[str] = ()) -> Program | None:
    """The program a process is, from its name (or command line when it runs in a runtime)."""
    for prog in PROGRAMS:
        if name in prog.processes:
            return prog
    if name in RUNTIMES or not name:
        words = " ".join(argv[:64]).lower()
        for prog in PROGRAMS:
            if any(w in words for w in prog.argv_words):
                return prog
    return None


def by_kind(kind: AdapterKind) -> tuple[Program, ...]:
    return tuple(p for p in PROGRAMS if p.kind == kind)


@dataclass(frozen=True, slots=True)
class FoundProgram:
    program: Program
    pid: int
    listening: tuple[PortSpec, ...]
    """Its P2P ports as seen listening (not loopback, not its RPC ports); empty when its sockets are not
    visible to this user."""


@dataclass(frozen=True, slots=True)
class PortPick:
    ports: tuple[PortSpec, ...]
    found: tuple[FoundProgram, ...]
    reason: str
    """What was picked and why, in a sentence for the report."""


def find_programs(processes: Sequence[ProcessInfo], listeners: Sequence[Listener]) -> list[FoundProgram]:
    """Node programs running on this host (in this network namespace where that is visible) and the P2P
    ports each is seen listening on. Pure."""
    out: list[FoundProgram] = []
    for proc in processes:
        prog = identify(proc.name, proc.argv)
        if prog is None or proc.other_netns:
            continue
        ports = sorted({PortSpec(lst.port, lst.transport) for lst in listeners
                        if lst.pid == proc.pid and not lst.loopback and lst.port not in prog.other_ports})
        out.append(FoundProgram(prog, proc.pid, tuple(ports)))
    return out


def pick_ports(processes: Sequence[ProcessInfo], listeners: Sequence[Listener]) -> PortPick:
    """With no `--port`: the P2P ports of the node programs on this host. A program seen listening gives the
    ports it listens on (its configured ones, not only the defaults); a program whose sockets this user cannot
    see gives its defaults; with no known program, default P2P ports that something listens on are picked."""
    found = find_programs(processes, listeners)
    picked: list[PortSpec] = []
    why: list[str] = []
    for f in found:
        prog = f.program
        if f.listening:
            ports = list(f.listening)
            same = set(ports) >= set(prog.ports)
            why.append(f"{prog.name} (pid {f.pid}) listens on {_ports(ports)}"
                       + ("" if same else f" (its defaults: {_ports(prog.ports)})"))
            # Where its defaults pair TCP and UDP on one port, the pair is tested even when one half is not
            # listening (a consensus client needs both; the missing half is then a `nothing-listening` problem).
            paired = {p.port for p in prog.ports if PortSpec(p.port, "tcp") in prog.ports
                      and PortSpec(p.port, "udp") in prog.ports}
            if paired:
                ports += [PortSpec(q.port, t) for q in list(ports) for t in ("tcp", "udp")
                          if PortSpec(q.port, t) not in ports and (q.port in paired or q not in prog.ports)]
        else:
            ports = list(prog.ports)
            why.append(f"{prog.name} runs (pid {f.pid}); its sockets are not visible to this user, so its default "
                       f"ports {_ports(ports)} are tested")
        picked += [p for p in ports if p not in picked]
    if not found:
        seen = {PortSpec(lst.port, lst.transport) for lst in listeners if not lst.loopback}
        for prog in PROGRAMS:
            hits = [p for p in prog.ports if p in seen]
            if hits:
                names = ", ".join(q.name for q in PROGRAMS if set(q.ports) & set(hits))
                new = [p for p in prog.ports if p not in picked]
                if new:
                    why.append(f"something listens on {_ports(hits)}, the default P2P port of {names}")
                    picked += new
    if not picked:
        return PortPick((), tuple(found), "no known node program runs or listens on this host; name the node's "
                                          "ports with --port (e.g. --port 30303/tcp --port 30303/udp)")
    return PortPick(tuple(picked), tuple(found), "; ".join(dict.fromkeys(why)))


def _ports(ports: Sequence[PortSpec]) -> str:
    by_port: dict[int, list[str]] = {}
    for p in ports:
        by_port.setdefault(p.port, []).append(p.transport)
    return ", ".join(f"{port}/{'+'.join(ts)}" for port, ts in by_port.items())
